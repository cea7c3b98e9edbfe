"""Causal language modelling: supervised fine-tuning on prompt/response records, or plain text.

* ``sft``: each record becomes ``prompt text + response + EOS``; the prompt text is the
  tokenizer's chat template for one user turn (with the generation prompt) when it has one,
  else the plain template ``### Instruction:\\n{prompt}\\n\\n### Response:\\n``. The loss is
  on the response tokens only (the prompt's labels are -100).
* ``lm``: each text (plus EOS) is a training item; with ``data.packing`` the texts are
  concatenated and cut into blocks of ``data.max_length`` tokens.

Evaluation: the mean loss per predicted token on the validation split and its perplexity
(exp of the loss), gathered over processes; and greedy generations from the first
validation prompts, written as ``generations-epoch<N>.json`` for every evaluation.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from triadapt_runner.tasks.specs import TaskSpec
from triadapt_runner.errors import RunnerError
from triadapt_runner.tasks.base import Evaluation, Loaders, TaskKind

PLAIN_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"
GENERATIONS = 3  # validation prompts generated from at every evaluation
NEW_TOKENS = 24
IGNORE = -100


class CausalLM(TaskKind):
    """What both causal LM kinds share: the model, the loss and perplexity, the context check.

    torch is imported where it is used, so that the registry (read by the config and the CLI) stays light.
    """

    name = "causal_lm"
    auto_model = "AutoModelForCausalLM"
    metrics = ("loss", "perplexity")
    main_metric = "perplexity"
    minimised = ("loss", "perplexity")
    raw_scores = True  # a loss and a perplexity are not fractions
    decimals = 4  # values near 1 whose differences lie in the third decimal

    def custom_task(self, data: Any, rows: dict[str, list[dict]]) -> TaskSpec:
        return TaskSpec("custom", self.key, 0, self.metrics, self.main_metric)

    def features(self, rows: list[dict], tokenizer: Any, max_length: int, packing: bool) -> list[dict]:
        """Training items (input ids and labels) of ``rows``."""
        raise NotImplementedError

    def generation_prompt(self, tokenizer: Any, row: dict) -> str:
        """The text a validation row's generation continues."""
        raise NotImplementedError

    def check(self, cfg: Any, task: TaskSpec, model: Any) -> None:
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if context and cfg.data.max_length > context:
            raise RunnerError(f"data.max_length={cfg.data.max_length} is invalid: longer than the model's context "
                              f"of {context} tokens")

    def build_loaders(self, cfg: Any, task: TaskSpec, splits: Any, tokenizer: Any) -> Loaders:
        import torch

        tokenizer = prepare_tokenizer(tokenizer, announce=True)
        loaders = []
        for name, shuffle, batch_size in (("train", True, cfg.train.batch_size),
                                          ("validation", False, cfg.train.eval_batch_size)):
            features = self.features(list(splits[name]), tokenizer, cfg.data.max_length, cfg.data.packing)
            generator = torch.Generator().manual_seed(cfg.train.seed)
            loaders.append(torch.utils.data.DataLoader(features, batch_size=batch_size, shuffle=shuffle,
                                                       collate_fn=Collator(tokenizer.pad_token_id),
                                                       generator=generator))
        prompts = [self.generation_prompt(tokenizer, row) for row in list(splits["validation"])[:GENERATIONS]]
        return Loaders(loaders[0], loaders[1], reference={"prompts": prompts, "tokenizer": tokenizer})

    def evaluate(self, model: Any, loaders: Loaders, cfg: Any, task: TaskSpec, accelerator: Any) -> Evaluation:
        import torch

        with torch.no_grad():
            return self._evaluate(model, loaders, accelerator)

    def _evaluate(self, model: Any, loaders: Loaders, accelerator: Any) -> Evaluation:
        import torch

        model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # (sum of token losses, tokens)
        for batch in loaders.evaluation:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"][:, 1:]  # token t predicts token t + 1
            losses = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels,
                                                       ignore_index=IGNORE, reduction="sum")
            total += torch.stack([losses.double(), (labels != IGNORE).sum().double()])
        total = accelerator.reduce(total, reduction="sum")
        loss = float(total[0] / total[1]) if total[1] > 0 else float("nan")
        scores = {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
        generations = _generate(accelerator.unwrap_model(model), loaders.reference, accelerator)
        return Evaluation(scores, per_epoch={"generations.json": generations})


class SupervisedFineTuning(CausalLM):
    """``sft``: prompt/response records, the loss on the response."""

    key = "sft"

    def file_columns(self, data: Any) -> dict[str, str]:
        return {"prompt": data.prompt_column, "response": data.response_column}

    def from_labelled(self, rows: list[dict]) -> list[dict]:
        return as_instructions(rows)

    def features(self, rows: list[dict], tokenizer: Any, max_length: int, packing: bool) -> list[dict]:
        return _sft_features(rows, tokenizer, max_length, packing)

    def generation_prompt(self, tokenizer: Any, row: dict) -> str:
        return _prompt_text(tokenizer, row["prompt"])


class LanguageModelling(CausalLM):
    """``lm``: plain texts, the loss on every token; with ``data.packing``, concatenated into full blocks."""

    key = "lm"
    packing = True

    def file_columns(self, data: Any) -> dict[str, str]:
        return {"text": data.text_column}

    def from_labelled(self, rows: list[dict]) -> list[dict]:
        return [{"text": row["text"]} for row in rows]

    def count_train_items(self, cfg: Any, task: TaskSpec, rows: dict[str, list[dict]],
                          tokenizer: Callable[[], Any]) -> int:
        if cfg.data.packing:
            return len(_blocks([_with_eos(prepare_tokenizer(tokenizer()), row["text"]) for row in rows["train"]],
                               cfg.data.max_length))
        return len(rows["train"])

    def features(self, rows: list[dict], tokenizer: Any, max_length: int, packing: bool) -> list[dict]:
        return _lm_features(rows, tokenizer, max_length, packing)

    def generation_prompt(self, tokenizer: Any, row: dict) -> str:
        return row["text"][:200]


SFT = SupervisedFineTuning()
LM = LanguageModelling()

SENTIMENT = {0: "negative", 1: "positive"}


def as_instructions(rows: list[dict]) -> list[dict]:
    """Labelled reviews as prompt / response records: the review and the question, then the answer word."""
    return [{"prompt": f"Is this movie review positive or negative?\n\n{row['text']}",
             "response": SENTIMENT[row["label"]]} for row in rows]


def prepare_tokenizer(tokenizer: Any, announce: bool = False) -> Any:
    """The tokenizer with a pad token: its EOS token when it has none (said once)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise RunnerError("the tokenizer has neither a pad token nor an EOS token; causal LM runs need an EOS "
                              "token to end the responses (and to pad with)")
        tokenizer.pad_token = tokenizer.eos_token
        if announce:
            print(f"the tokenizer has no pad token: padding with its EOS token {tokenizer.eos_token!r}", flush=True)
    if tokenizer.eos_token is None:
        raise RunnerError("the tokenizer has no EOS token; causal LM runs need one to end the responses")
    return tokenizer


def _prompt_text(tokenizer: Any, prompt: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return PLAIN_TEMPLATE.format(prompt=prompt)


def _sft_features(rows: list[dict], tokenizer: Any, max_length: int, packing: bool) -> list[dict]:
    out = []
    for row in rows:
        prompt = tokenizer(_prompt_text(tokenizer, row["prompt"]), add_special_tokens=False)["input_ids"]
        response = tokenizer(row["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + response)[:max_length]
        labels = ([IGNORE] * len(prompt) + response)[:max_length]
        out.append({"input_ids": ids, "labels": labels})
    return out


def _with_eos(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def _blocks(texts: list[list[int]], size: int) -> list[list[int]]:
    stream = [token for text in texts for token in text]
    return [stream[i:i + size] for i in range(0, len(stream) - size + 1, size)] or [stream[:size]]


def _lm_features(rows: list[dict], tokenizer: Any, max_length: int, packing: bool) -> list[dict]:
    texts = [_with_eos(tokenizer, row["text"]) for row in rows]
    chunks = _blocks(texts, max_length) if packing else [text[:max_length] for text in texts]
    return [{"input_ids": ids, "labels": list(ids)} for ids in chunks]


class Collator:
    """Right-pads ``input_ids`` with the pad token, ``labels`` with -100; builds the attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)  # (B, L)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(f["input_ids"]), torch.tensor(f["labels"]), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _generate(model: Any, reference: dict[str, Any], accelerator: Any) -> list[dict[str, str]]:
    """Greedy continuations of the fixed validation prompts (every process, so that sharded models stay in step)."""
    tokenizer, out = reference["tokenizer"], []
    for prompt in reference["prompts"]:
        encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(accelerator.device)
        encoded = {key: encoded[key] for key in ("input_ids", "attention_mask")}  # no token_type_ids (BERT-like)
        generated = model.generate(**encoded, max_new_tokens=NEW_TOKENS, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id,
                                   synced_gpus=accelerator.num_processes > 1)
        text = tokenizer.decode(generated[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
        out.append({"prompt": prompt, "generated": text})
    return out
