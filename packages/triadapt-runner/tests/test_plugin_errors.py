"""A plugin whose import fails is listed by `triadapt plugins`, does not stop a run, and is fatal when strict."""

import os

import pytest

from conftest import TINY, run_cli, write_yaml


@pytest.fixture
def broken_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "triadapt_broken-0.3.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: triadapt-broken\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text("[triadapt]\nbroken = broken_plugin\n")
    (site / "broken_plugin.py").write_text("raise ImportError('needs libmissing.so')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return site


def test_broken_plugin_listed_run_continues_strict_fails(broken_site, tmp_path, monkeypatch):
    listed = run_cli("plugins")
    assert listed.returncode == 0
    line = next(l for l in listed.stdout.splitlines() if l.startswith("broken"))
    assert "triadapt-broken" in line and "0.3.0" in line and "ERROR failed to load: ImportError: needs libmissing.so" \
        in line

    config = write_yaml(tmp_path / "run.yaml", {"task": "rotten_tomatoes", **TINY})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_cli("train", "--config", config, "--tracking-uri", uri, "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]

    monkeypatch.setenv("TRIADAPT_STRICT_PLUGINS", "1")
    strict = run_cli("train", "--config", config, "--tracking-uri", uri, "--no-progress", cwd=tmp_path)
    assert strict.returncode == 2
    assert "plugin 'broken' from distribution 'triadapt-broken' failed to load" in strict.stderr
    assert run_cli("plugins").returncode == 2
