"""MLflow tracking through `MlflowClient` (explicit run ids: no global active-run state).

Layout: one parent run per ablation grid, one child run per cell and seed, linked by the
``mlflow.parentRunId`` tag. Params are short and flattened; the full resolved config is
an artifact. Only the main process logs (the caller checks ``is_main_process``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from triadapt_runner.errors import RunnerError

PARAM_LIMIT = 500  # MLflow caps param values; longer values are cut (the config artifact has all)
TAG_PREFIX = "triadapt."


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a sqlite file in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def artifact_root(uri: str) -> Path | None:
    """Where the artifacts of a sqlite store go: ``mlartifacts/`` beside the database file (None for other stores).

    MLflow would put them in ``./mlruns`` of whatever folder the command runs in.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    database = Path(unquote(uri[len("sqlite:///"):]))  # sqlite:///relative.db or sqlite:////absolute.db
    return database.resolve().parent / "mlartifacts"


def client(uri: str) -> MlflowClient:
    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as exc:
        raise RunnerError(f"tracking_uri={uri!r} is unusable: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]}") from None


def experiments_with_grid(uri: str | None, grid: str) -> list[str]:
    """Names of the experiments of the store that hold a parent run of grid ``grid``."""
    store = client(uri or default_tracking_uri())
    experiments = {e.experiment_id: e.name for e in store.search_experiments()}
    found: set[str] = set()
    if experiments:
        runs = store.search_runs(list(experiments), f"tags.`{TAG_PREFIX}grid` = '{grid}' and "
                                                    f"tags.`{TAG_PREFIX}role` = 'parent'", max_results=1000)
        found = {experiments[r.info.experiment_id] for r in runs}
    return sorted(found)


class Tracker:
    def __init__(self, uri: str | None = None, experiment: str = "triadapt", create: bool = True):
        """The experiment's tracker; ``create=False`` (reading commands) refuses an experiment the store lacks."""
        self.uri = uri or default_tracking_uri()
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None and not create:
                names = sorted(e.name for e in self.client.search_experiments())
                raise RunnerError(f"experiment={experiment!r} is invalid: the tracking store has no such experiment "
                                  f"(it has {', '.join(names) or 'none'})")
            self.experiment_id = found.experiment_id if found else self._create(experiment)
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError(f"tracking_uri={self.uri!r} is unusable: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}") from None
        self.experiment = experiment

    def _create(self, experiment: str) -> str:
        root = artifact_root(self.uri)
        location = (root / re.sub(r"[^A-Za-z0-9._-]", "_", experiment)).as_uri() if root else None
        return self.client.create_experiment(experiment, artifact_location=location)

    # -- runs -------------------------------------------------------------------------------------
    def start_run(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
        tags = dict(tags)
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        flat = {k: _short(v) for k, v in flatten(params).items()}
        items = list(flat.items())
        for start in range(0, len(items), 90):  # MLflow accepts at most 100 params per batch
            batch = [mlflow.entities.Param(k, v) for k, v in items[start:start + 90]]
            self.client.log_batch(run_id, params=batch)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        batch = [mlflow.entities.Metric(k, float(v), _now_ms(), step) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=batch)

    def log_json(self, run_id: str, name: str, data: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
            self.client.log_artifact(run_id, str(path))

    def log_text(self, run_id: str, name: str, text: str) -> None:
        self.client.log_text(run_id, text, name)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path=artifact_path or path.name)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    # -- queries ----------------------------------------------------------------------------------
    def runs(self, filter_string: str = "") -> list[Any]:
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=1000,
                                           page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def children(self, parent_id: str) -> list[Any]:
        return self.runs(f"tags.mlflow.parentRunId = '{parent_id}'")

    def find_parents(self, grid_name: str) -> list[Any]:
        runs = self.runs(f"tags.`{TAG_PREFIX}grid` = '{grid_name}' and tags.`{TAG_PREFIX}role` = 'parent'")
        return sorted(runs, key=lambda r: r.info.start_time)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= PARAM_LIMIT else text[: PARAM_LIMIT - 3] + "..."


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


FINISHED = RunStatus.to_string(RunStatus.FINISHED)
FAILED = RunStatus.to_string(RunStatus.FAILED)
RUNNING = RunStatus.to_string(RunStatus.RUNNING)
KILLED = RunStatus.to_string(RunStatus.KILLED)
