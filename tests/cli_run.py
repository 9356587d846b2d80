"""Running the `onnxprune` command in tests: in this process through click's CliRunner (fast), or in a fresh
Python process exactly as a user runs it; and the checks every command's outcome gets."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

import onnxprune.cli

ROOT = Path(__file__).resolve().parent.parent


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def _entry(args):
    """Hands every argument, options included, to the real entry point."""
    onnxprune.cli.main(list(args))


def run(*args):
    """`onnxprune ARGS` in this process; returns click's Result (exit_code, stdout, stderr, exception)."""
    return CliRunner().invoke(_entry, [str(a) for a in args])


def run_process(*args, cwd=None, env_extra=None) -> subprocess.CompletedProcess:
    """`onnxprune ARGS` in a fresh Python process, exactly as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "ONNXPRUNE_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "onnxprune.cli", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


def exit_code(result) -> int:
    return result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code


def assert_error(result, code: int, *needles: str) -> str:
    """Exit `code`, one stderr line 'error: ...' containing every needle, and no traceback anywhere."""
    stdout, stderr = result.stdout, result.stderr
    assert exit_code(result) == code, f"exit {exit_code(result)}, expected {code}\nstdout: {stdout}\nstderr: {stderr}"
    assert "Traceback" not in stderr and "Traceback" not in stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def assert_ok(result) -> None:
    assert exit_code(result) == 0, f"exit {exit_code(result)}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.stderr


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) -> sha256 of its bytes; folders as 'dir'."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() and not p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out
