"""Meta-tests: the hook reference in docs/plugins.md matches hookspecs.py; every hook is tested."""

import inspect
import re
from pathlib import Path

from triadapt.plugins import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def hook_functions():
    return {name: fn for name, fn in vars(hookspecs).items() if name.startswith("triadapt_") and callable(fn)}


def signature_line(name, fn):
    sig = inspect.signature(fn)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"def {name}({params}) -> {sig.return_annotation}"


def test_reference_matches_hookspecs():
    reference = (ROOT / "docs" / "plugins.md").read_text().split("## Hook reference", 1)[1]
    documented = re.findall(r"^def triadapt_\w+\(.*$", reference, re.MULTILINE)
    expected = [signature_line(n, f) for n, f in hook_functions().items()]
    assert sorted(documented) == sorted(expected)


def test_every_hook_has_a_test():
    test_files = [p for pattern in ("packages/*/tests/*.py", "plugins/*/tests/*.py", "tests/*.py")
                  for p in ROOT.glob(pattern) if p.name != Path(__file__).name]
    text = "\n".join(p.read_text() for p in test_files)
    for name in hook_functions():
        assert re.search(rf"def {name}\(", text), f"hook {name} is implemented by no test"
