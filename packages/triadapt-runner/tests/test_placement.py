"""Which devices each `--jobs` cell gets and what a `--backend ray` cell reserves, with injected GPU and node lists."""

import pytest

from triadapt_runner.errors import RunnerError
from triadapt_runner.grid.placement import Devices, check_gpus_per_cell


def fill(devices, processes=1, threads=1):
    """Take placements until nothing fits; the placements taken."""
    out = []
    while (placed := devices.take(processes, threads)) is not None:
        out.append(placed)
    return out


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_one_gpu_per_cell_never_shared(gpus):
    devices = Devices(list(range(gpus)), threads=64)
    placed = fill(devices)
    assert [p.gpus for p in placed] == [(i,) for i in range(gpus)]
    assert [p.environment()["CUDA_VISIBLE_DEVICES"] for p in placed] == [str(i) for i in range(gpus)]
    devices.give_back(placed[0])
    assert devices.take(1, 1).gpus == (0,)  # the freed card is the one given next


def test_multi_gpu_cells_get_disjoint_sets():
    devices = Devices(list(range(8)), threads=64)
    placed = fill(devices, processes=2)
    assert [p.gpus for p in placed] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert placed[1].environment()["CUDA_VISIBLE_DEVICES"] == "2,3"
    devices = Devices(list(range(8)), threads=64)
    assert devices.take(3, 1).gpus == (0, 1, 2) and devices.take(3, 1).gpus == (3, 4, 5)
    assert devices.take(3, 1) is None  # two GPUs left: a 3-GPU cell waits


def test_fractions_pack_one_card_before_the_next():
    devices = Devices([0, 1], threads=64, gpus_per_cell=0.25)
    placed = fill(devices)
    assert [p.gpus for p in placed] == [(0,)] * 4 + [(1,)] * 4
    devices.give_back(placed[5])
    assert devices.take(1, 1).gpus == (1,)
    with pytest.raises(RunnerError, match=r"train.num_processes=2 is invalid with --gpus-per-cell 0.25"):
        devices.take(2, 1)


def test_threads_are_never_oversubscribed():
    devices = Devices([], threads=4)  # a CPU machine: only the threads are shared out
    assert devices.threads_per_cell(2) == 2
    placed = fill(devices, threads=2)
    assert [p.gpus for p in placed] == [(), ()] and "CUDA_VISIBLE_DEVICES" not in placed[0].environment()
    assert placed[0].environment()["OMP_NUM_THREADS"] == "2"
    gpu = Devices([0, 1], threads=2)
    assert len(fill(gpu, threads=2)) == 1  # a free GPU, but no free threads


def test_a_cell_that_can_never_fit_is_refused():
    with pytest.raises(RunnerError, match=r"train.num_processes=3 is invalid here: a cell needs 3 GPUs, this machine "
                                          r"has 2 visible"):
        Devices([0, 1], threads=8).check(3)
    Devices([], threads=8).check(3)  # CPU: processes share the cores


@pytest.mark.parametrize("value", [0, -1, 0.3, 0.26, 1.5, float("nan"), True, "a"])
def test_gpus_per_cell_out_of_range(value):
    with pytest.raises(RunnerError, match=r"--gpus-per-cell=.* is invalid: use a whole number"):
        check_gpus_per_cell(value)


@pytest.mark.parametrize("value", [1, 2, 0.5, 0.25, 0.2, 0.1])
def test_gpus_per_cell_valid(value):
    check_gpus_per_cell(value)


# -- --backend ray: what a cell reserves on a cluster, from injected node lists (no Ray needed) -----------------
def ray_cell(processes=1, threads=None):
    from triadapt_runner.config import RunConfig
    from triadapt_runner.grid.spec import Cell

    cfg = RunConfig.from_dict({"task": "rotten_tomatoes", "train": {"num_processes": processes, "threads": threads}})
    return Cell("c1", cfg, {}, 0)


def test_ray_cells_reserve_threads_per_process_and_gpus_only_where_there_are_any():
    from triadapt_runner.grid.ray_tasks import RayCluster

    cpus_only = RayCluster(None, [{"CPU": 2.0}, {"CPU": 2.0}])
    assert cpus_only.need(ray_cell(), 1.0) == (1.0, 0)
    assert cpus_only.need(ray_cell(2, threads=2), 1.0) == (4.0, 0)
    assert cpus_only.totals == (4.0, 0)
    gpus = RayCluster(None, [{"CPU": 16.0, "GPU": 8.0}, {"CPU": 16.0, "GPU": 8.0}])
    assert gpus.need(ray_cell(), 1.0) == (1.0, 1000)
    assert gpus.need(ray_cell(), 0.25) == (1.0, 250)  # a quarter of a card: Ray's num_gpus=0.25
    assert gpus.need(ray_cell(4), 1.0) == (4.0, 4000)
    assert gpus.need(ray_cell(2), 2.0) == (2.0, 4000)
    assert gpus.totals == (32.0, 16000)
    with pytest.raises(RunnerError, match=r"train.num_processes=2 is invalid with --gpus-per-cell 0.5"):
        gpus.need(ray_cell(2), 0.5)


def test_ray_cell_that_no_node_holds_is_refused():
    from triadapt_runner.grid.ray_tasks import RayCluster

    cluster = RayCluster(None, [{"CPU": 4.0, "GPU": 2.0}, {"CPU": 8.0}])
    cluster.check([ray_cell(2)], 1.0)  # 2 CPUs and 2 GPUs on the first node
    with pytest.raises(RunnerError, match=r"needs 3 CPUs and 3 GPUs on one node, its largest node has 4 CPUs and 2"):
        cluster.check([ray_cell(3)], 1.0)  # 3 GPUs in all, but not on one node
    with pytest.raises(RunnerError, match=r"needs 6 CPUs and 2 GPUs on one node"):
        cluster.check([ray_cell(2, threads=3)], 1.0)


@pytest.mark.parametrize("uri", ["sqlite:///m.db", "sqlite:////abs/m.db", "file:///tmp/mlruns", "./mlruns"])
def test_ray_cluster_of_several_nodes_refuses_local_stores(uri):
    from triadapt_runner.grid.ray_tasks import RayCluster

    RayCluster(None, [{"CPU": 2.0}]).check_tracking(uri)  # one node: its own disk serves
    RayCluster(None, [{"CPU": 2.0}, {"CPU": 2.0}]).check_tracking("http://10.0.0.5:5000")
    with pytest.raises(RunnerError, match=r"is invalid for a Ray cluster of 2 nodes: .*`mlflow server "):
        RayCluster(None, [{"CPU": 2.0}, {"CPU": 2.0}]).check_tracking(uri)
