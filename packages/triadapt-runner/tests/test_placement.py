"""Which devices each `--jobs` cell gets, with injected GPU lists (no GPU needed)."""

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
