"""benchmarks/conv_rule.py: the Winograd/im2col threshold timed on a whole network, a process per setting."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_conv_rule_times_each_threshold_in_its_own_process():
    done = subprocess.run([sys.executable, str(BENCH / "conv_rule.py"), "--model", "resnet20", "--batch-size", "2",
                           "--min-channels", "16,1024", "--rounds", "1", "--steps", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("Winograd from   16 channels: train ") and "1024 channels" in lines[2]
