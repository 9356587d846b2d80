"""`make bench` runs scripts that no other test imports: each must at least compile and answer --help, so that a
broken benchmark is found by `make test`, not after an hour of measuring."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_script_compiles(script):
    compile(script.read_text(), str(script), "exec")


@pytest.mark.parametrize("name", ["run_all.py", "latency.py", "finetune.py", "recovery.py", "prune_cost.py",
                                  "depth_vs_width.py"])
def test_benchmark_entry_points_answer_help(name):
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
