"""The README's examples run as printed: the Python API block, and the inspect output it shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cli_run import run

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_api_example_runs_from_the_clone_root(tmp_path):
    block = re.search(r"## Python API.*?```python\n(.*?)```", README, re.S).group(1)
    (tmp_path / "models").symlink_to(ROOT / "models")  # the clone's root, without writing into it
    script = tmp_path / "example.py"
    script.write_text(block)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-W", "error::onnxprune.OnnxPruneWarning", str(script)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "groups: 5 (4 prunable, 1 blocked)" in done.stdout and "recovery all:" in done.stdout
    assert (tmp_path / "digits_cnn.pruned.onnx").is_file()


# The text before each README Python block, as the tests that run the block alone find it: this file runs the
# first, tests/test_pipeline.py (test_readme_pipeline_block_runs) the second.
BLOCKS_RUN_BY_TESTS = ("## Python API", "The pipeline steps return dataclasses too")


def test_every_python_block_is_run_by_a_test():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    run = [re.search(re.escape(after) + r".*?```python\n(.*?)```", README, re.S).group(1)
           for after in BLOCKS_RUN_BY_TESTS]
    assert sorted(blocks) == sorted(run), "a README Python block that no test runs alone: run it in a test"


def test_inspect_and_prune_outputs_match_the_readme(tmp_path):
    result = run("inspect", ROOT / "models" / "demo_resnet18.onnx", "--members", "3")
    assert result.exit_code == 0
    block = README[README.index("$ onnxprune inspect models/demo_resnet18.onnx"):]
    block = block[:block.index("$ onnxprune prune")]
    summary = result.stdout[result.stdout.index("groups:"):].strip().splitlines()
    assert block.strip().splitlines()[-len(summary):] == summary
    pruned = run("prune", ROOT / "models" / "demo_resnet18.onnx", "-o", tmp_path / "p.onnx", "--ratio", "0.5")
    assert pruned.exit_code == 0
    block = README[README.index("$ onnxprune prune models/demo_resnet18.onnx"):]
    block = block[:block.index("$ onnxprune bench")]
    for line in pruned.stdout.rstrip().splitlines()[:-1]:  # the last note is cut short in the README
        assert line in block.splitlines(), f"README's prune example lacks: {line}"
