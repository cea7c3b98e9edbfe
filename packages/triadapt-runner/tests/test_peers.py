"""The paper's peers as grid rows: same data, seeds and MLflow layout; AdaLoRA allocates once per optimizer step."""

import json

import matplotlib.image
import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, run_main, write_yaml
from triadapt.config import regime_interval
from triadapt_runner.config import RunConfig

APPROACHES = ["triadapt", "increlora-style", "peft-lora", "peft-adalora", "full-finetune"]
SMALL_BATCHES = {**TINY["train"], "batch_size": 8}  # T = 6: AdaLoRA needs steps to score before it fixes its ranks


@pytest.fixture(scope="module")
def peers_grid(tmp_path_factory):
    from triadapt.plugins.registry import Registry, use_registry

    folder = tmp_path_factory.mktemp("peers")
    uri = f"sqlite:///{folder / 'm.db'}"
    old = use_registry(Registry(entry_points=True))  # the IncreLoRA-style row needs the sensitivity plugin
    grid = write_yaml(folder / "g.yaml", {"name": "peers", "experiment": "peers",
                                          "base": {"task": "rotten_tomatoes", **TINY, "train": SMALL_BATCHES},
                                          "axes": [{"zip": {"approach": APPROACHES}}], "seeds": [0]})
    try:
        assert run_main(["ablate", grid, "--tracking-uri", uri, "--no-progress"]) == 0
    finally:
        use_registry(old)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("peers").experiment_id
    runs = {r.data.tags["triadapt.approach"]: r for r in client.search_runs([experiment],
                                                                         "tags.`triadapt.role` = 'cell'")}
    parent = client.search_runs([experiment], "tags.`triadapt.role` = 'parent'")[0]
    return client, runs, parent, folder


def test_every_row_has_the_same_layout(peers_grid):
    _, runs, _, _ = peers_grid
    assert set(runs) == set(APPROACHES) and all(r.info.status == "FINISHED" for r in runs.values())
    labels = {a: r.data.tags["triadapt.method"] for a, r in runs.items()}
    assert labels == {"triadapt": "triangular/fnorm/linear", "increlora-style": "IncreLoRA-style",
                      "peft-lora": "peft LoRA", "peft-adalora": "peft AdaLoRA", "full-finetune": "full fine-tuning"}
    for approach, run in runs.items():
        metrics = run.data.metrics
        assert {"result_accuracy", "loss", "lr", "trained_parameters", "median_step_s"} <= set(metrics), approach
        assert run.data.params["data.max_train_samples"] == "48" and run.data.tags["triadapt.seed"] == "0"
        has_ranks = approach != "full-finetune"
        assert ("rank_use" in metrics) == has_ranks and ("total_rank" in metrics) == (approach != "peft-lora"
                                                                                         and has_ranks)
    assert runs["peft-lora"].data.metrics["rank_use"] == 1.0
    assert runs["full-finetune"].data.metrics["trained_parameters"] > 100 * runs["peft-lora"].data.metrics[
        "trained_parameters"]


def test_adalora_ends_at_the_matched_budget(peers_grid):
    client, runs, _, folder = peers_grid
    run = runs["peft-adalora"]
    ranks = json.loads(open(client.download_artifacts(run.info.run_id, "final_ranks.json", str(folder))).read())
    assert len(ranks) == 36 and sum(ranks.values()) == 2 * 36  # target_r = r_ref = 2 on every matrix on average
    assert run.data.params["approach"] == "peft-adalora"


def test_increlora_style_spends_the_budget_with_a_fixed_k(peers_grid):
    client, runs, _, folder = peers_grid
    run = runs["increlora-style"]
    events = json.loads(open(client.download_artifacts(run.info.run_id, "growth_events.json", str(folder))).read())
    # T = 6, t0 = ΔT = 1: events after steps 2..6; k = ⌈(2·36 − 36) / 5⌉ = 8 matrices each (the last gets 4)
    assert [(e["step"], e["k"], len(e["grown"])) for e in events] == [(2, 8, 8), (3, 8, 8), (4, 8, 8), (5, 8, 8),
                                                                      (6, 8, 4)]
    tags = run.data.tags
    assert (tags["triadapt.structure"], tags["triadapt.scorer"], tags["triadapt.threshold"]) == ("lora", "sensitivity",
                                                                                               "fixed")


def test_figure_two_side_by_side_on_the_parent(peers_grid):
    client, _, parent, folder = peers_grid
    assert "rank_heatmaps.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    image = matplotlib.image.imread(client.download_artifacts(parent.info.run_id, "rank_heatmaps.png", str(folder)))
    assert image.shape[1] > 2.5 * image.shape[0]  # three panels: TriAdaptLoRA, IncreLoRA-style, AdaLoRA


def test_adalora_allocates_after_every_optimizer_step_never_per_micro_batch(tmp_path, monkeypatch):
    from triadapt_runner.methods.peers import AdaLoraAdapted
    from triadapt_runner.training import train_run

    seen = []
    original = AdaLoraAdapted.after_optimizer_step

    def spy(self, step, optimizer):
        seen.append((step, self.model.base_model.rankallocator.peft_config.total_step))
        return original(self, step, optimizer)

    monkeypatch.setattr(AdaLoraAdapted, "after_optimizer_step", spy)
    cfg = RunConfig.from_dict({"task": "rotten_tomatoes", **TINY, "approach": "peft-adalora",
                               "train": {**TINY["train"], "batch_size": 4, "gradient_accumulation_steps": 2}})
    result = train_run(cfg, tmp_path, progress=False)
    # 48 rows, batch 4: 12 micro-batches, 6 optimizer steps; total_step = T = 6
    assert result.total_steps == 6 and seen == [(step, 6) for step in range(1, 7)]


def test_regime_default_is_fifty_intervals():
    assert [regime_interval(t) for t in (3, 49, 126, 188, 1000, 50_000)] == [1, 1, 3, 4, 20, 1000]
    config = RunConfig.from_dict({"task": "rotten_tomatoes"}).adapter_config(188)
    assert (config.warmup_steps, config.growth_interval) == (4, 4)
    explicit = RunConfig.from_dict({"adapter": {"growth_interval": 7}}).adapter_config(188)
    assert (explicit.warmup_steps, explicit.growth_interval) == (4, 7)  # explicit values win


def test_adalora_resumes_exactly_from_a_checkpoint(tmp_path):
    """Stopped after the checkpoint at step 4, mid-allocation (T = 12: AdaLoRA allocates from step 2 and fixes its
    ranks at step 6), the rerun equals the uninterrupted run: its sensitivity statistics were saved."""
    from triadapt_runner.training import train_run

    cfg = RunConfig.from_dict({"task": "rotten_tomatoes", "data": {**TINY["data"], "max_train_samples": 24},
                               "adapter": TINY["adapter"], "approach": "peft-adalora",
                               "train": {**TINY["train"], "batch_size": 2, "checkpoint_every": 2}})
    full = train_run(cfg, tmp_path / "full", progress=False)

    def crash(metrics, step):
        if step == 5:
            raise KeyboardInterrupt("stopped after the checkpoint at step 4")

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "crashed", log=crash, progress=False, checkpoint_dir=tmp_path / "ckpt")
    resumed = train_run(cfg, tmp_path / "crashed", progress=False, checkpoint_dir=tmp_path / "ckpt")
    assert resumed.ranks == full.ranks and resumed.metrics == full.metrics
    assert resumed.run_metrics["rank_use"] == full.run_metrics["rank_use"]
    logits = [json.loads((tmp_path / name / "eval_logits.json").read_text()) for name in ("full", "crashed")]
    assert logits[0] == logits[1]


def test_increlora_style_takes_its_preset_where_a_grid_row_leaves_the_strategy_null():
    """A zip row writes null for the fields that do not apply (as benchmarks/ablations/offline-tables.yaml does for
    the IncreLoRA-style row): the run's tags and the rank figure come from the preset, and the preflight passes."""
    from triadapt.plugins.registry import Registry, use_registry
    from triadapt_runner.grid.spec import parse_grid
    from triadapt_runner.methods.registry import method_for
    from triadapt_runner.preflight import Preflight

    old = use_registry(Registry(entry_points=True))  # the sensitivity scorer's plugin
    try:
        spec = parse_grid({"name": "nulls", "base": {"task": "rotten_tomatoes", **TINY},
                           "axes": [{"zip": {"approach": ["increlora-style", "triadapt"],
                                             "adapter.scorer": [None, "fnorm"], "adapter.threshold": [None, "none"],
                                             "adapter.fixed_k": [None, None]}}], "seeds": [0]})
        increlora, fixed_ranks = (cell.config for cell in spec.cells())
        method = method_for(increlora)
        assert method.strategy_tags(increlora) == {"structure": "lora", "scorer": "sensitivity", "threshold": "fixed"}
        assert method.allocates_ranks(increlora)
        assert not method_for(fixed_ranks).allocates_ranks(fixed_ranks)  # threshold none: ranks never change
        assert [check.error for check in map(Preflight().check, spec.cells())] == [None, None]
    finally:
        use_registry(old)
