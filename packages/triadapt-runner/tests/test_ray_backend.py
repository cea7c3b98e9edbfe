"""`triadapt ablate --backend ray`: a grid's cells as Ray tasks on a 2-node Ray cluster simulated on this machine.

The cluster is Ray's own `ray.cluster_utils.Cluster` (two raylets of one CPU each), the tracking store a real
`mlflow server` process; the grid runs from a plain `triadapt ablate` subprocess, as a user would run it.
"""

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, assert_bad_input, free_port, run_cli, run_main, write_yaml

ray = pytest.importorskip("ray", reason="the runner's [ray] extra is not installed")

ONE_THREAD = {**TINY, "train": {**TINY["train"], "threads": 1}}  # a cell's threads, the same in every backend
GRID = {"name": "ray-select", "experiment": "ray", "base": {"task": "rotten_tomatoes", **ONE_THREAD},
        "axes": [{"zip": {"method": ["TriAdaptLoRA"]}}], "seeds": [0, 1, 2],
        "select": {"axis": "train.learning_rate", "values": [1e-5, 2e-3], "seeds": [0]}}  # 2 selection + 2 more cells


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 100 * 1024 ** 2})
    cluster.add_node(num_cpus=1, object_store_memory=100 * 1024 ** 2)
    cluster.wait_for_nodes()
    yield cluster.address
    cluster.shutdown()


def test_grid_on_two_nodes_with_a_tracking_server_resumes_and_compares_as_serial(two_nodes, mlflow_server,
                                                                                tmp_path, capsys):
    grid = write_yaml(tmp_path / "g.yaml", GRID)
    done = run_cli("ablate", grid, "--backend", "ray", "--ray-address", two_nodes, "--tracking-uri", mlflow_server,
                   "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "grid done: 4 finished" in done.stdout, done.stdout
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("ray").experiment_id
    cells = client.search_runs([experiment], "tags.`triadapt.role` = 'cell'")
    assert len(cells) == 4 and {r.info.status for r in cells} == {"FINISHED"}
    assert len({r.data.tags["triadapt.node"] for r in cells}) == 2  # the two selection cells ran on both nodes at once
    (parent,) = client.search_runs([experiment], "tags.`triadapt.role` = 'parent'")
    assert parent.info.status == "FINISHED" and {r.data.tags["mlflow.parentRunId"] for r in cells} == {
        parent.info.run_id}
    selection = [r for r in cells if r.data.tags["triadapt.seed"] == "0"]
    finals = [r for r in cells if r.data.tags["triadapt.seed"] != "0"]
    assert min(r.info.start_time for r in finals) >= max(r.info.end_time for r in selection)  # after the choice
    assert {r.data.tags.get("triadapt.selection") for r in finals} == {"chosen"}

    # the rest in this process (the first call above is the one a user makes; these save a start-up each)
    capsys.readouterr()
    again = run_main(["ablate", grid, "--backend", "ray", "--ray-address", two_nodes, "--tracking-uri", mlflow_server,
                      "--no-progress"])
    assert again == 0 and "grid done: 4 skipped" in capsys.readouterr().out
    assert not ray.is_initialized()  # disconnected again

    serial_uri = f"sqlite:///{tmp_path / 'serial.db'}"
    assert run_main(["ablate", grid, "--tracking-uri", serial_uri, "--no-progress"]) == 0
    assert "grid done: 4 finished" in capsys.readouterr().out
    tables = []
    for uri in (mlflow_server, serial_uri):
        assert run_main(["compare", "--grid", "ray-select", "--tracking-uri", uri]) == 0
        tables.append([line for line in capsys.readouterr().out.splitlines() if "parent run" not in line])
    assert any(line.startswith("TriAdaptLoRA ") for line in tables[0]) and tables[0] == tables[1]


def test_sqlite_store_on_two_nodes_is_one_line_before_anything_starts(two_nodes, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    grid = write_yaml(tmp_path / "g.yaml", GRID)
    err = assert_bad_input(["ablate", grid, "--backend", "ray", "--ray-address", two_nodes, "--tracking-uri", uri],
                           r"--tracking-uri=sqlite:.* is invalid for a Ray cluster of 2 nodes: .*mlflow server", uri,
                           capsys)
    assert "--tracking-uri http://" in err
    assert not ray.is_initialized()  # the connection was closed again


def test_cell_larger_than_every_node_is_one_line(two_nodes, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    grid = write_yaml(tmp_path / "g.yaml", {**GRID, "base": {**GRID["base"], "train": {
        **ONE_THREAD["train"], "num_processes": 2}}})
    assert_bad_input(["ablate", grid, "--backend", "ray", "--ray-address", two_nodes, "--tracking-uri", uri],
                     r"train.num_processes=2 \(train.threads=1\) of cell \w+ is invalid on this Ray cluster: the cell "
                     r"needs 2 CPUs and 0 GPUs on one node, its largest node has 1 CPUs", uri, capsys)


def test_unreachable_ray_address_is_one_line(tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    grid = write_yaml(tmp_path / "g.yaml", GRID)
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")  # nothing listens there
    assert_bad_input(["ablate", grid, "--backend", "ray", "--tracking-uri", uri],
                     r"RAY_ADDRESS=127\.0\.0\.1:\d+ is unreachable .*ray start --head", uri, capsys)
    assert_bad_input(["ablate", grid, "--backend", "ray", "--ray-address", "head-node", "--tracking-uri", uri],
                     r"--ray-address=head-node is invalid: give the head node as HOST:PORT", uri, capsys)


def test_backend_ray_without_ray_names_the_extra(tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    grid = write_yaml(tmp_path / "g.yaml", GRID)
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    assert_bad_input(["ablate", grid, "--backend", "ray", "--tracking-uri", uri],
                     r"--backend ray needs Ray, which is not installed: pip install 'triadapt-runner\[ray\]'", uri,
                     capsys)
    assert_bad_input(["ablate", grid, "--ray-address", "127.0.0.1:6379", "--tracking-uri", uri],
                     r"--ray-address=127.0.0.1:6379 is invalid without --backend ray", uri, capsys)
    assert run_main(["ablate", grid, "--backend", "ray", "--dry-run"]) == 2  # a dry run says so too
