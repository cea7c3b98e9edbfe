"""The core never imports deepspeed, mlflow, accelerate (nor transformers or peft)."""

import subprocess
import sys


def test_import_pulls_no_heavy_dependency():
    code = ("import sys, triadapt, triadapt.testing, triadapt.testing.conformance\n"
            "bad = [m for m in ('deepspeed', 'mlflow', 'accelerate', 'transformers', 'peft') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
