"""scripts/bench_scale.py at a size a CI run can afford (slow: run with -m slow); the 1 M
figures in docs/design.md come from the script itself."""

import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "bench_scale.py")


@pytest.mark.slow
def test_bench_scale_runs_and_an_idle_volume_stays_idle(tmp_path):
    out = subprocess.run([sys.executable, SCRIPT, "--inodes", "100000", "--idle", "10",
                          "--dir", str(tmp_path)], capture_output=True, text=True, timeout=900,
                         check=True).stdout
    idle = next(line for line in out.splitlines() if line.startswith("idle CPU"))
    assert float(idle.split(": ")[1].split(" %")[0]) < 1.0, out
    assert "0 problems" in out, out
