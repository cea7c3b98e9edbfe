"""The core never imports deepspeed, mlflow, accelerate (nor transformers, peft, trl or bitsandbytes)."""

import subprocess
import sys


def test_import_pulls_no_heavy_dependency():
    code = ("import sys, triadapt, triadapt.testing, triadapt.testing.conformance, triadapt.quantized, triadapt.zero3\n"
            "heavy = ('deepspeed', 'mlflow', 'accelerate', 'transformers', 'peft', 'trl', 'bitsandbytes')\n"
            "bad = [m for m in heavy if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
