"""benchmarks/quality/store_archive.py: a results store packed on one machine resumes and compares on another."""

import importlib.util
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from triadapt_runner.tracking.runs import Tracker

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "quality" / "store_archive.py"


@pytest.fixture(scope="module")
def store_archive():
    spec = importlib.util.spec_from_file_location("store_archive", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pack_then_unpack_elsewhere_keeps_runs_and_the_artifacts_that_matter(store_archive, tmp_path):
    first = tmp_path / "ran-here"
    tracker = Tracker(f"sqlite:///{first / 'mlflow.db'}", "exp")
    run = tracker.start_run("cell", {"triadapt.role": "cell", "triadapt.selection": "chosen"})
    tracker.log_metrics(run, {"result_accuracy": 0.72}, 380)
    tracker.log_json(run, "final_ranks.json", {"layer.0.query": 9})
    tracker.log_json(run, "eval_logits.json", [[0.1, 0.2]])
    tracker.end_run(run)
    archive = tmp_path / "store.tar.xz"
    assert store_archive.pack(first, archive) == 1  # final_ranks.json; eval_logits.json is left out
    elsewhere = tmp_path / "another" / "machine"
    assert store_archive.unpack(archive, elsewhere) == 2  # the experiment's location and the run's artifact uri
    (first / "mlflow.db").unlink()  # nothing may still point at the folder it was packed from
    for path in sorted(first.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    client = MlflowClient(f"sqlite:///{elsewhere / 'mlflow.db'}")
    moved = client.get_run(run)
    assert moved.data.metrics["result_accuracy"] == 0.72 and moved.data.tags["triadapt.selection"] == "chosen"
    local = client.download_artifacts(run, "final_ranks.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == {"layer.0.query": 9}
    with pytest.raises(SystemExit, match="is not empty: unpack into a new or empty folder"):
        store_archive.unpack(archive, elsewhere)


def test_a_file_that_is_no_archive_is_one_line_and_leaves_no_folder(store_archive, tmp_path):
    bogus = tmp_path / "notes.tar.xz"
    bogus.write_text("not an archive")
    with pytest.raises(SystemExit, match=r"notes.tar.xz is not a store archive made by `pack`"):
        store_archive.unpack(bogus, tmp_path / "store")
    assert not (tmp_path / "store").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["notes.tar.xz"]


def test_the_committed_drug_reviews_grid_resumes_without_rerunning_a_cell(store_archive, tmp_path, triadapt_registry):
    """The store of a grid that ran with an earlier release (its cell ids, its spec hash), resumed by this one: the
    schedule, with the selection made again from the stored runs, finds every cell it would run finished."""
    from triadapt_runner.grid.ablate import _open_grid
    from triadapt_runner.grid.executors import CellExecutor
    from triadapt_runner.grid.schedule import run_scheduled
    from triadapt_runner.grid.spec import load_grid

    class NothingMayStart(CellExecutor):
        def can_start(self, cell):
            raise AssertionError(f"cell {cell.id} ({cell.method}, seed {cell.seed}) would train again")

        def start(self, cell, extra_tags):
            raise AssertionError("unreachable")

        def wait(self):
            return []

        @property
        def running(self):
            return 0

    root = SCRIPT.parents[2]
    store_archive.unpack(root / "benchmarks/quality/drug-reviews-long.tar.xz", tmp_path / "store")
    spec = load_grid(root / "benchmarks/ablations/offline-sensitivity-drug-reviews-long.yaml")
    tracker = Tracker(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", spec.experiment)
    parent_id, done = _open_grid(spec, tracker, force=False)  # the spec hash matches: the same parent run
    outcomes = run_scheduled(spec, NothingMayStart(), tracker=tracker, parent_id=parent_id, done=done,
                             fail_fast=False, progress=False)
    assert len(outcomes) == 60 and {o.status for o in outcomes} == {"skipped"}


def test_a_finished_grid_is_rerun_without_the_training_stack(store_archive, tmp_path):
    """`triadapt demo` on the committed demo store (every cell finished) skips every cell without importing the
    training module, accelerate or peft (they load only when a cell trains)."""
    import subprocess
    import sys

    store_archive.unpack(SCRIPT.parent / "demo.tar.xz", tmp_path / "demo")
    probe = ("import sys\nfrom triadapt_runner.cli import main\ncode = main(['demo', '--tracking-uri', sys.argv[1], "
             "'--no-progress'])\nprint('loaded:', sorted(m for m in ('accelerate', 'peft', 'triadapt_runner.training') "
             "if m in sys.modules))\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", probe, f"sqlite:///{tmp_path / 'demo' / 'mlflow.db'}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped" in done.stdout and "loaded: []" in done.stdout, done.stdout[-2000:]
