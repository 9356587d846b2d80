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
                                  "depth_vs_width.py", "recurrent.py"])
def test_benchmark_entry_points_answer_help(name):
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_latency_verdict_without_a_uniform_match_compares_with_the_neighbours():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import latency
    finally:
        sys.path.remove(str(BENCHMARKS))

    def q(acc, err):
        return {"accuracy": acc, "rel_error": err}

    fractions = {"u0.4": 0.73, "u0.5": 0.28}
    row = {"measured_fraction": 0.49, "uniform_fractions": fractions}
    cases = [
        (q(0.99, 0.10), "yes: less than u0.4 (0.730), which is slower"),  # beats even the slower one
        (q(0.95, 0.30), "**no**: more than u0.5 (0.280), which is faster"),  # loses to the faster one
        (q(0.985, 0.15), "n/a: no uniform ratio within"),  # between the two
    ]
    for aware, verdict in cases:
        row.update(quality={"aware": aware}, uniform_quality={"u0.4": q(0.988, 0.12), "u0.5": q(0.98, 0.2)})
        assert latency.between(row).startswith(verdict)
