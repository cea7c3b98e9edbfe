"""compare on runs written to a real MLflow store: statistics, average column, refusals."""

import pytest

from triadapt_runner.compare import build_table, collect_runs
from triadapt_runner.errors import RunnerError
from triadapt_runner.tracking import Tracker


def add_run(tracker, parent, method, task, seed, value, config_hash="c1"):
    tags = {"triadapt.role": "cell", "triadapt.method": method, "triadapt.task": task, "triadapt.seed": str(seed),
            "triadapt.config_hash": config_hash}
    run_id = tracker.start_run(f"{method}-{task}-{seed}", tags, parent)
    tracker.log_metrics(run_id, {"result_accuracy": value}, 1)
    tracker.end_run(run_id)


@pytest.fixture
def tracker(tmp_path):
    return Tracker(f"sqlite:///{tmp_path / 'm.db'}", "cmp")


def test_table_statistics_and_average(tracker):
    parent = tracker.start_run("grid:x", {"triadapt.role": "parent", "triadapt.grid": "x"})
    for seed, (a, b) in enumerate([(0.80, 0.60), (0.84, 0.62), (0.82, 0.64)]):
        add_run(tracker, parent, "tri", "rotten_tomatoes", seed, a)
        add_run(tracker, parent, "tri", "drug_reviews", seed, b)
    table = build_table(collect_runs(tracker, grid="x"))
    stat = table.cells[("tri", "rotten_tomatoes")]
    assert (stat.n, stat.mean, stat.median) == (3, pytest.approx(0.82), pytest.approx(0.82))
    assert stat.std == pytest.approx(0.02)
    assert table.average("tri") == pytest.approx((0.82 + 0.62) / 2)
    assert "82.00 ± 2.00 (n=3)" in table.terminal() and "72.00" in table.markdown()


def test_mixed_configs_are_refused(tracker):
    add_run(tracker, None, "tri", "rotten_tomatoes", 0, 0.8, config_hash="aaa")
    add_run(tracker, None, "tri", "rotten_tomatoes", 1, 0.7, config_hash="bbb")
    with pytest.raises(RunnerError, match="method 'tri' on task 'rotten_tomatoes' mixes configs aaa, bbb"):
        build_table(collect_runs(tracker))


def test_unfinished_runs_are_ignored(tracker):
    add_run(tracker, None, "tri", "rotten_tomatoes", 0, 0.8)
    failed = tracker.start_run("x", {"triadapt.role": "cell", "triadapt.method": "tri", "triadapt.task":
                                     "rotten_tomatoes", "triadapt.seed": "0", "triadapt.config_hash": "c1"})
    tracker.end_run(failed, "FAILED")
    assert build_table(collect_runs(tracker)).cells[("tri", "rotten_tomatoes")].n == 1
