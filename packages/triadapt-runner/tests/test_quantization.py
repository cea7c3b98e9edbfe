"""model.quantization: a causal LM trained on a 4-bit and an 8-bit base (bitsandbytes on the CPU), and each
refusal as one line before any MLflow run exists."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_bad_input, run_main, write_yaml
from test_causal_lm import TINY_LM, tiny_llama

pytest.importorskip("bitsandbytes", reason="the runner env installs triadapt-runner[bitsandbytes]")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    # 64 features: on CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights in blocks of 64 input features
    # (a 32-feature layer fails there with "shape '[32, 0]' is invalid")
    return tiny_llama(tmp_path_factory.mktemp("llama-q"), hidden=64)


def one_epoch(llama, **extra):
    return {"model": {"name": llama, **extra}, "task": "rotten_tomatoes_sft", **TINY_LM,
            "train": {**TINY_LM["train"], "epochs": 1}}


def test_peft_lora_peer_trains_on_a_4bit_base(llama, tmp_path):
    """The peers train on a quantised base too (peft's own bitsandbytes LoRA layers)."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    config = write_yaml(tmp_path / "run.yaml", {**one_epoch(llama, quantization="4bit"), "approach": "peft-lora"})
    assert run_main(["train", "--config", config, "--tracking-uri", uri, "--no-progress"]) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.params["model.quantization"] == "4bit"
    assert run.data.tags["triadapt.approach"] == "peft-lora"


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_sft_on_a_quantised_base_trains_grows_and_saves_the_adapter(llama, bits, tmp_path):
    from transformers import AutoModelForCausalLM

    from triadapt import load
    from triadapt_runner.config import RunConfig
    from triadapt_runner.quantization import load_kwargs

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    config = write_yaml(tmp_path / "run.yaml", one_epoch(llama, quantization=bits))
    assert run_main(["train", "--config", config, "--tracking-uri", uri, "--no-progress"]) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["model.quantization"] == bits and run.data.params["model.name"] == llama
    assert run.data.metrics["total_rank"] > 14  # 14 matrices started at rank 1: it grew on the quantised base
    base = AutoModelForCausalLM.from_pretrained(llama, **load_kwargs(RunConfig.from_dict(one_epoch(llama,
                                                                                            quantization=bits))))
    adapter = Path(client.download_artifacts(run.info.run_id, "adapter", str(tmp_path)))
    weights = sum(f.stat().st_size for f in Path(llama).glob("*.safetensors"))
    assert sum(f.stat().st_size for f in adapter.iterdir()) < 0.2 * weights  # the adapter, not the base
    pattern = json.loads((adapter / "triadapt_adapter.json").read_text())["rank_pattern"]
    loaded = load(base, adapter)  # onto the base quantised as the run loaded it
    assert loaded.ranks == pattern and sum(pattern.values()) == run.data.metrics["total_rank"]


def test_quantisation_refusals_are_one_line_before_any_run(llama, tmp_path, populated_store, capsys):
    cases = [
        (one_epoch(llama, quantization="3bit"), r"model.quantization='3bit' is invalid: use 4bit or 8bit"),
        ({**one_epoch(llama, quantization="4bit"), "approach": "full-finetune"},
         r"model.quantization='4bit' is invalid: approach 'full-finetune' trains the base weights"),
        ({**one_epoch(llama, quantization="4bit"), "train": {**TINY_LM["train"], "zero_stage": 3}},
         r"model.quantization='4bit' is invalid: cannot be combined with DeepSpeed ZeRO-3"),
        ({**one_epoch(llama), "quantization": "4bit"}, r"quantization='4bit' is invalid: is written "
                                                       r"model.quantization"),
        ({**one_epoch(llama, quantization="4bit", bits=4)}, r"model.bits=4 is invalid: unknown key"),
    ]
    for data, pattern in cases:
        config = write_yaml(tmp_path / "run.yaml", data)
        assert_bad_input(["train", "--config", config, "--tracking-uri", populated_store], pattern, populated_store,
                         capsys)
    squad = tmp_path / "squad.json"
    paragraph = {"context": "The film opens in Paris.", "qas": [
        {"id": "q1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 18}], "is_impossible": False}]}
    squad.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [paragraph]}]}))
    assert_bad_input(["train", "--task", "squad_v2", "--set", f"data.train_file={squad}", "--set",
                      f"data.validation_file={squad}", "--set", "model.quantization=8bit", "--tracking-uri",
                      populated_store], r"model.quantization='8bit' is invalid: task kind 'extractive_qa'",
                     populated_store, capsys)


def test_model_quantization_override_keeps_the_name_and_ids_without_it(llama):
    from triadapt_runner.config import RunConfig, apply_overrides

    plain = RunConfig.from_dict(apply_overrides({"model": llama}, {}))
    quantised = RunConfig.from_dict(apply_overrides({"model": llama}, {"model.quantization": "4bit"}))
    assert (quantised.model, quantised.quantization) == (llama, "4bit")
    assert plain.config_hash() == RunConfig.from_dict({"model": llama}).config_hash() != quantised.config_hash()
    assert RunConfig.from_dict(quantised.to_dict()) == quantised  # the resolved config reads back
    renamed = RunConfig.from_dict(apply_overrides(quantised.to_dict(), {"model": "minilm"}))
    assert (renamed.model, renamed.quantization) == ("minilm", "4bit")


def test_classification_on_a_4bit_encoder_trains_its_float_head(tmp_path):
    from conftest import TINY

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    config = write_yaml(tmp_path / "run.yaml", {**TINY, "model": {"name": "minilm", "quantization": "4bit"},
                                                "train": {**TINY["train"], "epochs": 1}})
    assert run_main(["train", "--config", config, "--tracking-uri", uri, "--no-progress"]) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["model.quantization"] == "4bit" and run.info.status == "FINISHED"
    assert 0 <= run.data.metrics["result_accuracy"] <= 1
