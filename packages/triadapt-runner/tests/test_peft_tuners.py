"""`approach: peft`: any peft tuner as a grid row (LoRA with DoRA, LoHa, LoKr, VeRA, IA³ on MiniLM), its saved
adapter loading back with peft, bad `peft:` sections refused in one line before any MLflow run, and the
`peft-lora` / `peft-adalora` presets keeping their cell ids."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import TINY, assert_bad_input, run_main, store_snapshot, write_yaml
from triadapt_runner.config import RunConfig
from triadapt_runner.errors import RunnerError

ROWS = {  # label -> peft section; the ranks each should report (None: IA³ has none)
    "peft LoRA (DoRA)": ({"peft_type": "lora", "r": 2, "use_dora": True}, 2),
    "peft LoHa": ({"peft_type": "LOHA", "r": 2}, 2),
    "peft LoKr": ({"peft_type": "LoKr", "r": 2}, 2),
    "peft VeRA": ({"peft_type": "vera", "r": 8}, 8),
    "peft IA³": ({"peft_type": "ia3"}, None),
}
BASE = {"task": "rotten_tomatoes", **TINY, "approach": "peft"}
FFN = [f"bert.encoder.layer.{i}.output.dense" for i in range(6)]  # MiniLM's feed-forward down projections


@pytest.fixture(scope="module")
def tuners_grid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tuners")
    uri = f"sqlite:///{folder / 'm.db'}"
    grid = write_yaml(folder / "g.yaml", {"name": "tuners", "experiment": "tuners", "base": BASE,
                                          "axes": [{"product": {"peft": [s for s, _ in ROWS.values()]}}],
                                          "seeds": [0]})
    assert run_main(["ablate", grid, "--tracking-uri", uri, "--no-progress"]) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tuners").experiment_id
    runs = {r.data.tags["triadapt.method"]: r for r in client.search_runs([experiment],
                                                                        "tags.`triadapt.role` = 'cell'")}
    return client, runs, folder, uri


def test_every_tuner_trains_and_reports_like_a_peer(tuners_grid):
    client, runs, folder, _ = tuners_grid
    assert set(runs) == set(ROWS) and all(r.info.status == "FINISHED" for r in runs.values())
    counts = set()
    for label, run in runs.items():
        metrics, rank = run.data.metrics, ROWS[label][1]
        assert {"result_accuracy", "loss", "trained_parameters", "median_step_s"} <= set(metrics), label
        assert run.data.tags["triadapt.approach"] == "peft"
        assert run.data.params["peft.peft_type"] == ROWS[label][0]["peft_type"].upper()
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert ("final_ranks.json" in artifacts) == (rank is not None) and ("rank_use" in metrics) == (rank is not None)
        if rank is not None:
            ranks = json.loads(Path(client.download_artifacts(run.info.run_id, "final_ranks.json", str(folder)))
                               .read_text())
            assert len(ranks) == 36 and set(ranks.values()) == {rank}
            assert metrics["rank_use"] == rank / 2  # R0 = adapter.ref_rank (2) × 36
        counts.add(metrics["trained_parameters"])
    assert len(counts) == len(ROWS)  # every tuner trains a different number of parameters


def test_saved_adapter_loads_back_with_peft_and_gives_the_same_logits(tuners_grid):
    """Each run's adapter artifact, loaded with `PeftModel.from_pretrained` onto a fresh base, trains exactly the
    parameters the run reported and reproduces the run's final validation logits (one batch of 32)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from triadapt_runner.models import model_path
    from triadapt_runner.tasks.data.loading import load_task
    from triadapt_runner.tasks.registry import kind_for

    client, runs, folder, _ = tuners_grid
    cfg = RunConfig.from_dict({**BASE, "peft": {"peft_type": "LORA"}})
    task, splits = load_task(cfg.data)
    kind = kind_for(task)
    loaders = kind.build_loaders(cfg, task, splits, AutoTokenizer.from_pretrained(model_path(cfg.model)))
    batch = next(iter(loaders.evaluation))
    assert len(batch["labels"]) == 32
    for label, run in runs.items():
        where = Path(client.download_artifacts(run.info.run_id, "adapter", str(folder / label)))
        adapter = next(where.rglob("adapter_config.json")).parent
        saved = json.loads((adapter / "adapter_config.json").read_text())
        assert saved["task_type"] == "SEQ_CLS" and "classifier" in saved["modules_to_save"], label
        if label == "peft IA³":  # filled in: the feed-forward down projections among the targets
            assert sorted(saved["feedforward_modules"]) == FFN
        expected = json.loads(Path(client.download_artifacts(run.info.run_id, "eval_logits.json",
                                                             str(folder / label))).read_text())
        model = PeftModel.from_pretrained(kind.build_model(model_path(cfg.model), task), str(adapter),
                                          is_trainable=True)
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trained == run.data.metrics["trained_parameters"], label
        model.eval()
        with torch.no_grad():
            logits = model(**batch).logits
        assert torch.allclose(logits, torch.tensor(expected[:len(logits)]), atol=1e-5), label


def test_the_tuners_compare_as_rows(tuners_grid, capsys):
    import re

    _, runs, _, uri = tuners_grid
    capsys.readouterr()
    assert run_main(["compare", "--grid", "tuners", "--tracking-uri", uri, "--experiment", "tuners"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for label, run in runs.items():
        row = next(line for line in lines if line.startswith(label + " "))
        shown = re.match(rf"{re.escape(label)}\s+(\d+\.\d\d) \(n=1\)", row)
        assert shown and float(shown.group(1)) == pytest.approx(100 * run.data.metrics["result_accuracy"], abs=0.01)


def test_the_preflight_prints_each_tuner_and_fills_what_is_left_out(tmp_path, capsys):
    grid = write_yaml(tmp_path / "g.yaml", {"name": "dry", "base": BASE, "axes": [{"product": {"peft": [
        {"peft_type": "loha", "r": 4}, {"peft_type": "IA3"}, {"peft_type": "lora", "use_dora": True}]}}]})
    assert run_main(["ablate", grid, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "36 matrices, peft LoHa r=4 on every matrix, no growth" in out
    assert "36 matrices, peft IA³ on every matrix, no ranks" in out
    assert "36 matrices, peft LoRA (DoRA) r=8 on every matrix, no growth" in out  # peft's default r


def test_written_fields_win_and_are_matched_like_targets():
    from triadapt_runner.methods.peft_tuners import PeftTuners
    from triadapt_runner.models import model_path
    from triadapt_runner.structures_cache import meta_model
    from triadapt_runner.tasks.registry import KINDS
    from triadapt_runner.tasks.specs import TASKS

    model = meta_model(KINDS["single"], model_path("minilm"), TASKS["rotten_tomatoes"])
    method = PeftTuners()
    ia3 = RunConfig.from_dict({**BASE, "peft": {"peft_type": "ia3", "target_modules": ["intermediate.dense",
                                                                                      "output.dense"],
                                                "feedforward_modules": ["layer.0.output.dense"]}})
    names, heads = method.targets(model, ia3)
    config = method.config(model, ia3, 3, names, heads)
    assert len(names) == 18 and heads == ["classifier"]  # output.dense: the attention's and the block's, by suffix
    assert config.feedforward_modules == {"bert.encoder.layer.0.output.dense"}
    assert config.task_type == "SEQ_CLS" and config.modules_to_save == ["classifier"]
    lora = RunConfig.from_dict({**BASE, "peft": {"peft_type": "LORA", "task_type": "FEATURE_EXTRACTION",
                                                 "modules_to_save": ["pooler"]}})
    config = method.config(model, lora, 3, *method.targets(model, lora))
    assert config.task_type == "FEATURE_EXTRACTION" and config.modules_to_save == ["pooler"] and config.r == 8


def test_adalora_through_approach_peft_allocates_like_the_preset():
    """peft_type ADALORA gets T as total_step and the preset's handle, which allocates after every optimizer step."""
    from triadapt_runner.methods.peers import AdaLoraAdapted
    from triadapt_runner.methods.peft_tuners import PeftTuners
    from triadapt_runner.models import model_path
    from triadapt_runner.tasks.registry import KINDS
    from triadapt_runner.tasks.specs import TASKS

    cfg = RunConfig.from_dict({**BASE, "peft": {"peft_type": "AdaLoRA", "init_r": 4, "target_r": 2, "tinit": 1,
                                                "tfinal": 2}})
    model = KINDS["single"].build_model(model_path("minilm"), TASKS["rotten_tomatoes"])
    adapted = PeftTuners().attach(model, cfg, 6)
    assert cfg.label == "peft AdaLoRA" and isinstance(adapted, AdaLoraAdapted)
    assert adapted.model.peft_config["default"].total_step == 6 and set(adapted.ranks().values()) == {4}
    optimizer = torch.optim.AdamW([p for p in adapted.model.parameters() if p.requires_grad])
    batch = {"input_ids": torch.randint(1000, 2000, (4, 8)), "labels": torch.tensor([0, 1, 0, 1])}
    for step in range(1, 4):
        (adapted.model(**batch).loss + adapted.extra_loss()).backward()
        optimizer.step()
        adapted.after_optimizer_step(step, optimizer)
        optimizer.zero_grad()
    assert 0 < adapted.step_metrics()["total_rank"] < 4 * 36  # pruning towards target_r = 2 has begun


# -- the presets: same cell ids, same checked path ---------------------------------------------------------------
def test_a_config_without_a_peft_section_keeps_its_dict_and_cell_id():
    from triadapt_runner.grid.spec import parse_grid

    cfg = RunConfig.from_dict({"task": "rotten_tomatoes", "approach": "peft-lora", "adapter": {"ref_rank": 2}})
    data = cfg.to_dict()
    assert set(data) == {"model", "method", "approach", "approach_options", "data", "train", "adapter"}
    assert {k: data[k] for k in ("model", "method", "approach", "approach_options", "adapter")} == {
        "model": "minilm", "method": None, "approach": "peft-lora", "approach_options": {}, "adapter": {"ref_rank": 2}}
    assert cfg.config_hash() == _hash({"approach": "peft-lora", "adapter": {"ref_rank": 2}})
    cell = parse_grid({"name": "g", "base": {"approach": "peft-lora"}}).cells()[0]
    assert cell.id == _hash({"approach": "peft-lora", "train": {"seed": 0}})


def test_the_peft_type_is_spelt_one_way_so_equal_sections_are_one_cell():
    loha = RunConfig.from_dict({**BASE, "peft": {"peft_type": "loha", "r": 4}})
    assert loha.to_dict()["peft"] == {"peft_type": "LOHA", "r": 4}
    assert loha.config_hash() == RunConfig.from_dict({**BASE, "peft": {"peft_type": "LoHa", "r": 4}}).config_hash()
    assert loha.config_hash() != RunConfig.from_dict({**BASE, "peft": {"peft_type": "LOHA", "r": 2}}).config_hash()


def test_the_adalora_preset_builds_its_config_through_the_same_checks():
    from triadapt_runner.methods.peers import PeftAdaLora
    from triadapt_runner.models import model_path
    from triadapt_runner.structures_cache import meta_model
    from triadapt_runner.tasks.registry import KINDS
    from triadapt_runner.tasks.specs import TASKS

    model = meta_model(KINDS["single"], model_path("minilm"), TASKS["rotten_tomatoes"])
    with pytest.raises(RunnerError, match=r"^approach_options.beta1='high' is invalid: must be a number in \(0, 1\)$"):
        RunConfig.from_dict({**BASE, "approach": "peft-adalora", "approach_options": {"beta1": "high"}})
    cfg = RunConfig.from_dict({**BASE, "approach": "peft-adalora"})
    cfg.approach_options = {"beta1": "high"}  # past the config's own check: peft's field check still refuses it
    with pytest.raises(RunnerError, match=r"^approach_options.beta1='high' is invalid: must be float$"):
        PeftAdaLora().attach(model, cfg, 50)


def _hash(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


# -- bad peft sections: exit 2, one line naming the field, no MLflow run ---------------------------------------------
CASES = [
    ("unknown-peft-type", {"approach": "peft", "peft.peft_type": "lorax"},
     r"peft.peft_type='LORAX' is invalid: use one of peft's types \(any case\): ADALORA, .*LOHA, LOKR, LORA"),
    ("unknown-field", {"approach": "peft", "peft.peft_type": "LOHA", "peft.rank": 4},
     r"peft.rank=4 is invalid: not a field of peft's LoHaConfig, whose fields are alpha, "),
    ("ill-typed-field", {"approach": "peft", "peft.peft_type": "lora", "peft.r": "eight"},
     r"peft.r='eight' is invalid: must be int$"),
    ("post-init-check", {"approach": "peft", "peft.peft_type": "lora", "peft.use_dora": True, "peft.lora_bias": True},
     r"peft.lora_bias=True is invalid: peft's LoraConfig: The argument lora_bias=True is not supported for DoRA"),
    ("reserved-field", {"approach": "peft", "peft.peft_type": "lora", "peft.inference_mode": True},
     r"peft.inference_mode=True is invalid: set by peft or the runner, not by a run config"),
    ("section-with-triadapt", {"peft.peft_type": "LORA"},
     r"peft=\{'peft_type': 'LORA'\} is invalid: only approach 'peft' reads a peft: section \(approach is 'triadapt'\)"),
    ("peft-without-section", {"approach": "peft"}, r"peft=None is invalid: approach 'peft' needs a peft: section"),
    ("no-peft-type", {"approach": "peft", "peft.r": 4}, r"peft.peft_type=None is invalid: name the tuner"),
    ("ia3-feedforward-not-a-target", {"approach": "peft", "peft.peft_type": "IA3",
                                      "peft.feedforward_modules": ["pooler.dense"]},
     r"peft.feedforward_modules=\['pooler.dense'\] is invalid: 'pooler.dense' matches none of the adapted layers"),
    ("targets-match-nothing", {"approach": "peft", "peft.peft_type": "LOKR", "peft.target_modules": ["q_proj"]},
     r"peft.target_modules=\['q_proj'\] matches no linear layer of this model"),
    ("bad-task-type", {"approach": "peft", "peft.peft_type": "LORA", "peft.task_type": "CLS"},
     r"peft.task_type='CLS' is invalid: use one of SEQ_CLS, "),
    ("quantized-loha", {"approach": "peft", "peft.peft_type": "LOHA", "model.quantization": "4bit"},
     r"model.quantization='4bit' is invalid: peft's LoHa has no 4/8-bit layers; on a quantised base use peft_type "
     r".*IA3.*LORA"),
    ("under-deepspeed", {"approach": "peft", "peft.peft_type": "LOHA", "train.zero_stage": 2},
     r"approach='peft' is invalid in a multi-process or DeepSpeed run"),
]


@pytest.mark.parametrize("overrides,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_peft_section(overrides, pattern, tmp_path, populated_store, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_yaml(tmp_path / "run.yaml", {"task": "rotten_tomatoes", **TINY})
    sets = [a for key, value in overrides.items() for a in ("--set", f"{key}={_yaml(value)}")]
    assert_bad_input(["train", "--config", config, *sets, "--tracking-uri", populated_store, "--no-progress"],
                     pattern, populated_store, capsys)


def test_a_good_peft_section_passes_the_same_checks(tmp_path, populated_store, capsys):
    """The control: the same checks let a valid section through (`ablate --dry-run`, nothing logged)."""
    grid = write_yaml(tmp_path / "g.yaml", {"name": "ok", "base": {**BASE, "peft": {"peft_type": "lokr", "r": 2}}})
    before = store_snapshot(populated_store)
    assert run_main(["ablate", grid, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "peft LoKr r=2 on every matrix" in out and "INVALID" not in out
    assert store_snapshot(populated_store) == before


def _yaml(value) -> str:
    return json.dumps(value) if isinstance(value, (list, str)) else str(value)
