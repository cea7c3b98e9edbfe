"""`triadapt plugins`, `triadapt data`, `--help` of every command."""

import pytest

from triadapt_runner.cli import main


def test_plugins_lists_builtins(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "triadapt.builtins" in out and "scorer: fnorm, fnorm-sqrt, fnorm-raw" in out


def test_data_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("cola", "stsb", "mnli", "rotten_tomatoes", "drug_reviews", "custom"):
        assert name in out


@pytest.mark.parametrize("command", ["demo", "train", "ablate", "compare", "plugins", "data"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and "usage: triadapt " + command in capsys.readouterr().out
