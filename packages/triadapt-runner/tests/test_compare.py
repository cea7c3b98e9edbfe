"""compare on runs written to a real MLflow store: statistics, average column, refusals."""

import pytest

from triadapt_runner.tracking.compare import build_table, collect_runs
from triadapt_runner.errors import RunnerError
from triadapt_runner.tracking.runs import Tracker


def add_run(tracker, parent, method, task, seed, value, config_hash="c1", metric="result_accuracy", selection=None,
            device=None, params=None):
    tags = {"triadapt.role": "cell", "triadapt.method": method, "triadapt.task": task, "triadapt.seed": str(seed),
            "triadapt.config_hash": config_hash, **({"triadapt.selection": selection} if selection else {}),
            **({"triadapt.device": device} if device else {})}
    run_id = tracker.start_run(f"{method}-{task}-{seed}", tags, parent)
    if params:
        tracker.log_params(run_id, params)
    tracker.log_metrics(run_id, {metric: value}, 1)
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
    assert table.average("tri") == pytest.approx((82 + 62) / 2)  # in per cent, as shown
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


def test_a_row_whose_selection_is_still_under_way_is_left_out_with_a_note(tracker):
    """A grid with ``select`` stopped part-way: row "b" has run one of its values, and nothing is chosen yet."""
    parent = tracker.start_run("grid:sel", {"triadapt.role": "parent", "triadapt.grid": "sel"})
    add_run(tracker, parent, "a", "drug_reviews", 0, 0.70, config_hash="lr1", selection="chosen")
    add_run(tracker, parent, "a", "drug_reviews", 0, 0.60, config_hash="lr2", selection="rejected")
    add_run(tracker, parent, "a", "drug_reviews", 1, 0.72, config_hash="lr1", selection="chosen")
    add_run(tracker, parent, "b", "drug_reviews", 0, 0.65, config_hash="lr1")
    notes = []
    table = build_table(collect_runs(tracker, grid="sel", notes=notes))
    assert list(table.cells) == [("a", "drug_reviews")] and table.cells[("a", "drug_reviews")].n == 2
    assert notes == ["left out until the grid has chosen their value: b (drug_reviews) (1 finished selection run)"]
    table.notes = tuple(notes)  # as `triadapt compare` does: the note goes with the table wherever it is written
    assert table.markdown().endswith(f"\nNote: {notes[0]}\n") and table.terminal().endswith(f"note: {notes[0]}\n")


def test_runs_from_more_than_one_device_are_named_in_a_note(tracker):
    """Row "a" trained seeds 0-1 on a GPU and seed 2 on the CPU: the note counts each device and names the row."""
    gpu, cpu = "cuda: NVIDIA H200, torch 2.11.0+cu130", "cpu, torch 2.13.0+cpu"
    parent = tracker.start_run("grid:dev", {"triadapt.role": "parent", "triadapt.grid": "dev"})
    for seed, device in enumerate([gpu, gpu, cpu]):
        add_run(tracker, parent, "a", "drug_reviews", seed, 0.7, device=device)
        add_run(tracker, parent, "b", "drug_reviews", seed, 0.7, device=gpu)
    notes = []
    collect_runs(tracker, grid="dev", notes=notes)
    assert notes == [f"runs from 2 devices: {gpu} (5); {cpu} (1); rows that mix them: a (drug_reviews)"]
    one = tracker.start_run("grid:one", {"triadapt.role": "parent", "triadapt.grid": "one"})
    add_run(tracker, one, "a", "drug_reviews", 0, 0.7, device=cpu)
    add_run(tracker, one, "b", "drug_reviews", 0, 0.7, device=cpu)
    notes = []
    collect_runs(tracker, grid="one", notes=notes)
    assert notes == []  # one device: nothing to say


def test_baseline_column_pairs_shared_seeds_and_is_logged_on_the_parent(tracker, tmp_path):
    parent = tracker.start_run("grid:sig", {"triadapt.role": "parent", "triadapt.grid": "sig"})
    for seed, (lora, tri) in enumerate([(0.70, 0.72), (0.72, 0.75), (0.71, 0.72)]):
        add_run(tracker, parent, "LoRA", "rotten_tomatoes", seed, lora)
        add_run(tracker, parent, "TriAdaptLoRA", "rotten_tomatoes", seed, tri)
    add_run(tracker, parent, "one seed", "rotten_tomatoes", 0, 0.74)
    table = build_table(collect_runs(tracker, grid="sig"), baselines=["LoRA"])
    diff = table.difference("TriAdaptLoRA", "rotten_tomatoes")
    assert diff.test == "paired" and diff.diff == pytest.approx(0.02)
    text = table.terminal()
    assert "Δ vs LoRA [95% CI] p" in text and "+2.00 [" in text and "(paired, n=3)" in text
    assert "74.00 (n=1)" in text and "±" not in text.split("one seed")[1].split("\n")[0]
    row = next(line for line in table.csv().splitlines() if line.startswith("TriAdaptLoRA"))
    assert row.split(",")[7:9] == ["LoRA", "0.020000"] and row.endswith(",paired,3")
    from triadapt_runner.tracking.compare import log_table

    assert log_table(tracker, parent, table) == ["compare-main-vs-LoRA.md", "compare-main-vs-LoRA.csv"]
    logged = {a.path for a in tracker.client.list_artifacts(parent)}
    assert {"compare-main-vs-LoRA.md", "compare-main-vs-LoRA.csv"} <= logged


def test_unknown_baseline_names_the_rows(tracker):
    add_run(tracker, None, "tri", "rotten_tomatoes", 0, 0.8)
    with pytest.raises(RunnerError, match="baseline='LoRA' is invalid: the rows are 'tri'"):
        build_table(collect_runs(tracker), baselines=["LoRA"])


def test_run_metrics_are_compared_raw_and_rows_without_them_left_out(tracker):
    for seed, use in enumerate([0.80, 0.84]):
        run = tracker.start_run("t", {"triadapt.role": "cell", "triadapt.method": "tri", "triadapt.task": "rotten_tomatoes",
                                      "triadapt.seed": str(seed), "triadapt.config_hash": "c1"})
        tracker.log_metrics(run, {"result_accuracy": 0.7, "rank_use": use}, 1)
        tracker.end_run(run)
    add_run(tracker, None, "full", "rotten_tomatoes", 0, 0.8)  # no ranks: no rank_use
    table = build_table(collect_runs(tracker), metric="rank_use")
    assert table.methods == ["tri"] and "0.82 ± 0.03 (n=2)" in table.terminal()


def test_causal_lm_perplexity_is_shown_to_four_decimals(tracker):
    # perplexities near 1 whose difference lies in the third decimal: two decimals would show 1.21 for both rows
    for seed, (lora, tri) in enumerate([(1.2015, 1.2106), (1.2227, 1.2159), (1.2131, 1.2089)]):
        add_run(tracker, None, "LoRA", "rotten_tomatoes_sft", seed, lora, metric="result_perplexity")
        add_run(tracker, None, "tri", "rotten_tomatoes_sft", seed, tri, metric="result_perplexity")
    text = build_table(collect_runs(tracker), baselines=["LoRA"]).terminal()
    # LoRA: mean 1.21243, std 0.010616; tri: mean 1.2118, std 0.003651; paired Δ = -0.000633
    assert "1.2124 ± 0.0106 (n=3)" in text and "1.2118 ± 0.0037 (n=3)" in text and "-0.0006 [" in text
    assert "rotten_tomatoes_sft (perplexity)" in text


def test_each_repeated_baseline_gets_its_own_columns_csv_lines_and_artifact_name(tracker, tmp_path, capsys):
    # a sensitivity grid: each method's variant against its own default, both in one table
    from triadapt_runner.cli import main

    parent = tracker.start_run("grid:sens", {"triadapt.role": "parent", "triadapt.grid": "sens"})
    rows = {"tri t0=4": [0.70, 0.72, 0.71], "tri t0=38": [0.69, 0.70, 0.71],
            "inc t0=4": [0.66, 0.74, 0.70], "inc t0=38": [0.65, 0.70, 0.69]}
    for method, values in rows.items():
        for seed, value in enumerate(values):
            add_run(tracker, parent, method, "rotten_tomatoes", seed, value)
    csv_path = tmp_path / "t.csv"
    assert main(["compare", "--grid", "sens", "--tracking-uri", tracker.uri, "--experiment", "cmp",
                 "--baseline", "tri t0=4", "--baseline", "inc t0=4", "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert "rotten_tomatoes: Δ vs tri t0=4 [95% CI] p" in header
    assert "rotten_tomatoes: Δ vs inc t0=4 [95% CI] p" in header
    line = next(x for x in out.splitlines() if x.startswith("inc t0=38"))
    # paired differences: vs tri t0=4 (-0.05, -0.02, -0.02) → mean -3.00; vs inc t0=4 (-0.01, -0.04, -0.01) → -2.00
    assert line.index("-3.00 [") < line.index("-2.00 [")
    assert out.count("baseline") >= 2
    lines = [x.split(",") for x in csv_path.read_text().splitlines()[1:]]
    assert len(lines) == 4 * 2  # one line per row and baseline
    pairs = {(x[0], x[7]): float(x[8] or "nan") for x in lines}
    assert pairs[("inc t0=38", "tri t0=4")] == pytest.approx(-0.03)
    assert pairs[("inc t0=38", "inc t0=4")] == pytest.approx(-0.02)
    logged = {a.path for a in tracker.client.list_artifacts(parent)}
    assert "compare-main-vs-tri_t0_4-vs-inc_t0_4.csv" in logged


def test_custom_data_is_shown_by_its_kind(tracker):
    """A custom regression task's main metric is pearson (in per cent); a custom lm task's is perplexity (raw, four
    decimals): the run's data.kind decides, not an accuracy default."""
    for seed, (r, ppl) in enumerate([(0.52, 1.2015), (0.56, 1.2227)]):
        add_run(tracker, None, "reg", "custom", seed, r, metric="result_pearson",
                params={"data": {"kind": "regression"}})
        add_run(tracker, None, "lm", "custom", seed, ppl, metric="result_perplexity", params={"data": {"kind": "lm"}})
    regression = build_table([r for r in collect_runs(tracker) if r.data.tags["triadapt.method"] == "reg"])
    assert "custom (pearson)" in regression.terminal() and "54.00 ± 2.83 (n=2)" in regression.terminal()
    lm = build_table([r for r in collect_runs(tracker) if r.data.tags["triadapt.method"] == "lm"])
    assert "custom (perplexity)" in lm.terminal() and "1.2121 ± 0.0150 (n=2)" in lm.terminal()
    assert lm.csv().splitlines()[1].startswith("lm,custom,perplexity,1.212100")


def test_an_explicit_perplexity_is_shown_like_main(tracker):
    for seed, value in enumerate([1.2015, 1.2227]):
        add_run(tracker, None, "tri", "rotten_tomatoes_sft", seed, value, metric="result_perplexity")
    text = build_table(collect_runs(tracker), metric="perplexity").terminal()
    assert "rotten_tomatoes_sft (perplexity)" in text and "1.2121 ± 0.0150 (n=2)" in text


def test_a_metric_no_run_reports_is_refused_with_the_valid_ones(tracker):
    add_run(tracker, None, "tri", "rotten_tomatoes", 0, 0.8)
    add_run(tracker, None, "tri", "stsb", 0, 0.8, metric="result_pearson")
    with pytest.raises(RunnerError, match=r"^metric='accuray' is invalid: use main, a metric of the runs' tasks "
                                          r"\(accuracy, f1, pearson, spearman\) or a run metric \(rank_use, "):
        build_table(collect_runs(tracker), metric="accuray")
