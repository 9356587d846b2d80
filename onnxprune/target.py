"""Channel multiples that the deployment hardware's kernels work in: `--target` picks `--round-to`.

onnxruntime's blocked (NCHWc) CPU convolutions process 8 channels at a time with AVX2 and 16 with AVX-512, so a
layer with 12 channels costs about what one with 16 does (docs/benchmarks.md has the measurements). GPU tensor
cores want channel counts that are multiples of 8 in fp16. `auto` reads this machine's CPU: right when the model
will run where it is pruned; name the deployment target otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .errors import OptionError

TARGETS = {"cpu-avx2": 8, "cpu-avx512": 16, "gpu": 8}
CHOICES = ("auto", *TARGETS)


def cpu_target(cpuinfo: Optional[str] = None) -> str:
    """The preset for this CPU, from /proc/cpuinfo's flags (or numpy's CPU feature table elsewhere)."""
    flags: set[str] = set()
    text = cpuinfo
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    if not flags and cpuinfo is None:
        flags = _numpy_features()
    if "avx512f" in flags:
        return "cpu-avx512"
    return "cpu-avx2"  # AVX2 and anything narrower: 8 is the smallest block the blocked kernels use


def _numpy_features() -> set[str]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return set()
    return {name.lower() for name, present in features.items() if present}


def round_to_for(target: str) -> int:
    if target == "auto":
        target = cpu_target()
    if target not in TARGETS:
        raise OptionError(f"target must be one of {', '.join(CHOICES)}, got {target!r}", params=("target",))
    return TARGETS[target]
