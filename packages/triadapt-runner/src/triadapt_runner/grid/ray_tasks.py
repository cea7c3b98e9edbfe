"""`triadapt ablate --backend ray`: a grid's cells as Ray tasks, on a Ray cluster or a local Ray instance.

`connect` attaches to the cluster at ``--ray-address`` or ``$RAY_ADDRESS`` and otherwise starts a local
Ray instance on this machine's cores (so the backend also works on a laptop). `RayTasks` is the grid's
executor there: each cell is one Ray task that reserves ``train.threads`` CPUs (default 1) per process
and, where the cluster has GPUs, ``train.num_processes`` GPUs (or a share of one with ``--gpus-per-cell``
below 1). The grid's schedule (`triadapt_runner.grid.schedule`) decides which cell starts when, as for
``--jobs``: a cell is handed to Ray only when the cluster has room for it, so the selection protocol's
order holds. Each task opens its own tracker on the grid's store and tags its run with the Ray node it
trained on. Cells on other machines cannot write this machine's sqlite file: on a cluster of several
nodes the tracking URI must be a server (`check_tracking`). Ray is imported only here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from triadapt_runner.errors import RunnerError
from triadapt_runner.grid.cells import CellOutcome
from triadapt_runner.grid.executors import (CellExecutor, restore_terminate, run_cell_with_own_tracker,
                                             terminate_as_interrupt)
from triadapt_runner.grid.placement import SHARE_STEPS, gpu_need
from triadapt_runner.grid.spec import Cell

SERVER_HINT = ("start an MLflow tracking server that every node can reach, e.g. `mlflow server --backend-store-uri "
               "sqlite:///mlflow.db --artifacts-destination ./mlartifacts --host 0.0.0.0 --port 5000`, and pass "
               "--tracking-uri http://<its host>:5000")
LOCAL_OBJECT_STORE = 256 * 1024 ** 2  # a local instance's object store: the grid passes only configs and outcomes


def require_ray() -> None:
    """Refuse ``--backend ray`` at once where Ray is not installed (without importing it)."""
    if importlib.util.find_spec("ray") is None:
        raise RunnerError("--backend ray needs Ray, which is not installed: pip install 'triadapt-runner[ray]'")


@dataclass
class RayCluster:
    """The cluster this process is connected to: its alive nodes' resources."""

    address: str | None  # None: a local instance started by this process
    nodes: list[dict[str, float]]

    def need(self, cell: Cell, gpus_per_cell: float) -> tuple[float, int]:
        """(CPUs, thousandths of a GPU) one cell reserves; GPUs only where the cluster has any."""
        train = cell.config.train
        cpus = float(train.num_processes * (train.threads or 1))
        if not any(node.get("GPU", 0) for node in self.nodes):
            return cpus, 0
        count, share = gpu_need(train.num_processes, gpus_per_cell)
        return cpus, count * share

    def check(self, cells: list[Cell], gpus_per_cell: float) -> None:
        """Refuse a cell that no node of the cluster can ever hold (a cell's processes share one node)."""
        for cell in cells:
            cpus, gpus = self.need(cell, gpus_per_cell)
            if not any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) * SHARE_STEPS >= gpus
                       for node in self.nodes):
                most = max(self.nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)))
                train = cell.config.train
                raise RunnerError(
                    f"train.num_processes={train.num_processes} (train.threads={train.threads}) of cell {cell.id} is "
                    f"invalid on this Ray cluster: the cell needs {cpus:g} CPUs and {gpus / SHARE_STEPS:g} GPUs on "
                    f"one node, its largest node has {most.get('CPU', 0):g} CPUs and {most.get('GPU', 0):g} GPUs")

    def check_tracking(self, uri: str) -> None:
        """On several nodes, a sqlite or file store is refused: the other nodes cannot write it."""
        scheme = urlparse(uri).scheme
        if len(self.nodes) > 1 and scheme in ("", "file", "sqlite"):
            raise RunnerError(f"--tracking-uri={uri} is invalid for a Ray cluster of {len(self.nodes)} nodes: its "
                              f"cells cannot write this machine's files; {SERVER_HINT}")

    @property
    def totals(self) -> tuple[float, int]:
        """(CPUs, thousandths of GPUs) of the whole cluster."""
        return (sum(n.get("CPU", 0) for n in self.nodes),
                round(sum(n.get("GPU", 0) for n in self.nodes) * SHARE_STEPS))


def connect(address: str | None) -> RayCluster:
    """Attach to the cluster at ``address`` (else ``$RAY_ADDRESS``), or start a local Ray instance."""
    require_ray()
    source = "--ray-address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address, source)
    import ray

    try:
        if address:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            ray.init(num_cpus=cores, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                     object_store_memory=LOCAL_OBJECT_STORE)
    except Exception as exc:  # noqa: BLE001 - Ray's own errors vary by version; the user gets one line
        where = f"{source}={address}" if address else "a local Ray instance"
        raise RunnerError(f"{where}: Ray did not start: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    nodes = [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
    return RayCluster(address, nodes)


def disconnect() -> None:
    import ray

    ray.shutdown()  # a local instance ends with it; a cluster keeps running


def _check_reachable(address: str, source: str) -> None:
    """A cluster address that does not answer fails at once (Ray itself retries for a minute or more)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RunnerError(f"{source}={address} is invalid: give the head node as HOST:PORT (e.g. 10.0.0.5:6379), "
                          f"ray://HOST:PORT, or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise RunnerError(f"{source}={address} is unreachable ({exc.strerror or exc}): start the cluster with "
                          f"`ray start --head`, or unset it to use a local Ray instance")


class RayTasks(CellExecutor):
    """Cells as Ray tasks; a cell is submitted only when the cluster has room for it (``max_cells`` at most)."""

    def __init__(self, cluster: RayCluster, *, tracker: Any, parent_id: str, grid: str, checkpoint_root: Any,
                 gpus_per_cell: float = 1.0, max_cells: int | None = None):
        import ray

        self.cluster, self.gpus_per_cell, self.max_cells = cluster, gpus_per_cell, max_cells
        self.free_cpus, self.free_gpus = cluster.totals
        self.worker = dict(uri=_absolute(tracker.uri), experiment=tracker.experiment, parent_id=parent_id, grid=grid,
                           checkpoint_root=str(Path(checkpoint_root).resolve()) if checkpoint_root else None)
        self.task = ray.remote(max_retries=0)(_train_cell)  # a crashed cell fails; a rerun of the grid retries it
        self.refs: dict[Any, tuple[Cell, float, int]] = {}
        self.previous = terminate_as_interrupt()

    def can_start(self, cell: Cell) -> bool:
        if self.max_cells is not None and len(self.refs) >= self.max_cells:
            return False
        cpus, gpus = self.cluster.need(cell, self.gpus_per_cell)
        return cpus <= self.free_cpus and gpus <= self.free_gpus

    def start(self, cell: Cell, extra_tags: dict[str, str] | None) -> None:
        cpus, gpus = self.cluster.need(cell, self.gpus_per_cell)
        self.free_cpus -= cpus
        self.free_gpus -= gpus
        train = cell.config.train
        ref = self.task.options(num_cpus=cpus, num_gpus=gpus / SHARE_STEPS, name=f"triadapt cell {cell.id}").remote(
            cell, threads=train.num_processes * (train.threads or 1), extra_tags=extra_tags, **self.worker)
        self.refs[ref] = (cell, cpus, gpus)

    def wait(self) -> list[CellOutcome]:
        import ray

        ready, _ = ray.wait(list(self.refs), num_returns=1)
        outcomes = []
        for ref in ready:
            cell, cpus, gpus = self.refs.pop(ref)
            self.free_cpus += cpus
            self.free_gpus += gpus
            try:
                outcomes.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - the task's process died (killed, out of memory, node lost)
                cause = getattr(exc, "cause", None) or exc
                line = (str(cause).strip().splitlines() or [""])[0]
                outcomes.append(CellOutcome(cell, "failed", error=f"{type(cause).__name__}: {line}"[:300]))
        return outcomes

    @property
    def running(self) -> int:
        return len(self.refs)

    def cancel(self) -> None:
        import ray

        for ref in list(self.refs):  # force: the task's process is killed; its open run is marked KILLED on resume
            ray.cancel(ref, force=True)
        self.refs.clear()
        self.close()

    def close(self) -> None:
        self.previous = restore_terminate(self.previous)
        disconnect()


def _absolute(uri: str) -> str:
    """A relative sqlite path names the same file from a Ray worker whatever its working directory."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def _train_cell(cell: Cell, *, threads: int, extra_tags: dict[str, str] | None, **worker: Any) -> CellOutcome:
    """One cell in a Ray worker: its threads, quiet libraries, its run tagged with the node it trains on."""
    import ray
    import torch

    from triadapt_runner.console import quiet_libraries
    from triadapt_runner.tracking.runs import TAG_PREFIX

    torch.set_num_threads(threads)
    quiet_libraries()
    tags = {**(extra_tags or {}), f"{TAG_PREFIX}node": ray.get_runtime_context().get_node_id(),
            f"{TAG_PREFIX}host": socket.gethostname()}
    return run_cell_with_own_tracker(cell, extra_tags=tags, **worker)
