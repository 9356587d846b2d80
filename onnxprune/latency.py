"""The latency model: what narrowing each channel group costs or saves on the deployment runtime, measured.

For every prunable group, the whole model is timed with only that group narrowed, at a short ladder of widths
aligned to the kernel's channel block (LADDER: about 1/4, 1/2 and 3/4 of the group kept), beside the dense model
in one interleaved bench run (bench.py: medians, a control row). Each width's latency is the dense latency times
its ratio to the dense model in that run (bench's speedup, paired round by round), so that slow spells of a
shared machine cancel; the ladder is then made monotone (a narrower group is never slower), and widths between
the rungs are interpolated.

Cost is bounded: groups are measured largest MAC share first until `budget_s` is spent; groups holding less
than `min_mac_share` of the model's MACs, and those left when the budget runs out, are modelled from their MACs
(the dense latency times their share of the MACs), and the profile says which and how many.

A profile is cached in a JSON file keyed by the model's hash, the provider, the batch, the threads, the pinned
input shapes, the onnxruntime version and the CPU or GPU name, so a second run on the same machine reuses it.
A profile measured elsewhere can be passed on explicitly; it is used with a warning when its machine differs.

The model predicts the latency of a plan as the dense latency minus each narrowed group's own saving: additive,
an approximation the prune loop (latency_target.py) corrects by measuring.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import onnx

from .bench import PROVIDERS, BenchConfig, bench
from .errors import OptionError
from .io import write_text

LADDER = (0.25, 0.5, 0.75)  # fractions of a group kept at the measured rungs (rounded up to aligned widths)
MIN_MAC_SHARE = 0.01
DEFAULT_BUDGET_S = 900.0
CACHE_NOISE = 0.10  # a profile whose ladder runs' median control noise is above this is not cached (a busy machine)
PROFILE_VERSION = 2  # 2: dims nobody pinned are timed at inputs.counting_shapes' sizes (1 before)


@dataclass(frozen=True)
class Deployment:
    """Where the pruned model will run: onnxruntime provider, batch size, intra-op threads."""

    provider: str = "cpu"
    batch: int = 1
    threads: int = 1

    def validate(self) -> None:
        if self.provider not in PROVIDERS:
            raise OptionError(f"provider must be one of {', '.join(PROVIDERS)}, got {self.provider!r}",
                              params=("provider",))
        if self.batch < 1 or self.threads < 1:
            raise OptionError(f"batch and threads must be at least 1, got {self.batch} and {self.threads}",
                              params=("batch", "threads"))

    def bench_config(self, shapes: Optional[Mapping] = None, rounds: int = 4, runs: int = 3) -> BenchConfig:
        return BenchConfig(providers=(self.provider,), batches=(self.batch,), threads=(self.threads,), warmup=2,
                           runs=runs, rounds=rounds, shapes=dict(shapes or {}), require_provider=True)


@dataclass
class GroupLatency:
    """Whole-model latency (ms) with only this group narrowed to each width; the last width is the full group."""

    group: int
    size: int
    widths: list[int]
    ms: list[float]
    source: str  # "measured" or "macs"
    macs: int = 0  # MACs of the nodes that produce or read the group
    noise: Optional[float] = None  # the control's reach in the run that measured it

    def at(self, width: float) -> float:
        """Latency at `width`: interpolated between rungs; below the narrowest rung, the first segment extended."""
        w, ms = np.asarray(self.widths, float), np.asarray(self.ms, float)
        if len(w) > 1 and width < w[0]:
            slope = (ms[1] - ms[0]) / (w[1] - w[0])
            return float(max(ms[0] - slope * (w[0] - width), 0.0))
        return float(np.interp(width, w, ms))

    def saved(self, width: float) -> float:
        """Milliseconds saved by narrowing this group alone to `width`."""
        return self.ms[-1] - self.at(width)


@dataclass
class LatencyProfile:
    key: dict
    dense_ms: float
    groups: dict[int, GroupLatency] = field(default_factory=dict)
    cost_s: float = 0.0  # wall time spent measuring
    models_timed: int = 0
    notes: list[str] = field(default_factory=list)
    path: Optional[str] = None  # the cache file it was read from or written to
    reused: bool = False

    def predict(self, widths: Mapping[int, int]) -> float:
        """Predicted latency (ms) of the model with each listed group narrowed to its width."""
        return self.dense_ms - sum(self.groups[g].saved(w) for g, w in widths.items() if g in self.groups)

    def noise(self) -> Optional[float]:
        """The median control noise of the runs that measured the ladders (None: none measured); one run caught
        by a burst of other work does not make the whole profile noisy."""
        values = [g.noise for g in self.groups.values() if g.noise is not None]
        return float(np.median(values)) if values else None

    def measured_groups(self) -> int:
        return sum(1 for g in self.groups.values() if g.source == "measured")

    def cost_text(self) -> str:
        modelled = len(self.groups) - self.measured_groups()
        how = (f"reused {self.path}" if self.reused else
               f"measured in {self.cost_s:.0f} s ({self.models_timed} models timed)")
        return (f"latency profile: {how}; {self.measured_groups()} group(s) measured at "
                f"{len(LADDER)} widths, {modelled} modelled from MACs")

    def to_dict(self) -> dict:
        return {"version": PROFILE_VERSION, "key": self.key, "dense_ms": self.dense_ms, "cost_s": self.cost_s,
                "models_timed": self.models_timed, "notes": list(self.notes),
                "groups": {str(k): asdict(v) for k, v in sorted(self.groups.items())}}

    @classmethod
    def from_dict(cls, data: dict) -> "LatencyProfile":
        groups = {int(k): GroupLatency(**v) for k, v in data["groups"].items()}
        return cls(data["key"], float(data["dense_ms"]), groups, float(data.get("cost_s", 0.0)),
                   int(data.get("models_timed", 0)), list(data.get("notes", [])))


# ---------------------------------------------------------------------------------------------------------------
# Keys and the cache


def model_hash(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def device_name(provider: str = "cpu") -> str:
    """The CPU's model name, or the GPU's for a GPU provider: what a latency profile is only valid on."""
    if provider != "cpu":
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10, check=False).stdout.strip().splitlines()
            if out:
                return out[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
        return f"unknown {provider} device"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def profile_key(model: onnx.ModelProto, deployment: Deployment, shapes: Optional[Mapping] = None) -> dict:
    import onnxruntime as ort

    return {"version": PROFILE_VERSION, "model_sha256": model_hash(model), "provider": deployment.provider,
            "batch": deployment.batch,
            "threads": deployment.threads, "device": device_name(deployment.provider),
            "shapes": {k: list(v) for k, v in sorted((shapes or {}).items())}, "onnxruntime": ort.__version__}


def default_cache_dir() -> Path:
    root = os.environ.get("ONNXPRUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "onnxprune")
    return Path(root) / "latency"


def cache_path(cache_dir, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{key['model_sha256'][:12]}-{digest}.json"


def load_profile(path) -> LatencyProfile:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
        profile = LatencyProfile.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OptionError(f"{p}: not a readable latency profile ({type(exc).__name__}: {exc})") from None
    profile.path = str(p)
    return profile


def save_profile(profile: LatencyProfile, path) -> None:
    """Written atomically: a reader never sees half a profile."""
    p = Path(path)
    write_text(p, json.dumps(profile.to_dict(), indent=1))
    profile.path = str(p)


def key_differences(have: dict, want: dict) -> list[str]:
    """What differs between a profile's key and the one this run needs, in words."""
    return [f"{k} {have.get(k)!r} (this run: {want.get(k)!r})" for k in sorted(set(have) | set(want))
            if have.get(k) != want.get(k)]


# ---------------------------------------------------------------------------------------------------------------
# Measurement


def narrowed(model: onnx.ModelProto, widths: Mapping[int, int], shapes: Optional[Mapping] = None) -> onnx.ModelProto:
    """A copy of `model` with each listed group keeping its first `width` channels (which ones does not matter
    for latency); the other groups untouched. `model` is not changed."""
    from .api import _analysis
    from .graph import drop_unused
    from .rewrite import rewrite

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _, analysis, _ = _analysis(copy, shapes, None)
    by_id = {g.id: g for g in analysis.groups}
    keep = {by_id[g].space: np.arange(int(w)) for g, w in widths.items() if w < by_id[g].size}
    out = rewrite(analysis, keep)
    drop_unused(out)
    return out


def ladder(widths: Sequence[int], size: int, fractions: Sequence[float] = LADDER) -> list[int]:
    """The rungs to measure: for each fraction, the narrowest allowed width that keeps at least that fraction."""
    rungs = []
    for f in fractions:
        fit = [w for w in widths if w >= f * size and w < size]
        if fit and fit[0] not in rungs:
            rungs.append(fit[0])
    return sorted(rungs)


def monotone(values: Sequence[float]) -> list[float]:
    """The closest non-decreasing sequence (pool adjacent violators): latency never falls as a group widens."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, c2 = blocks.pop()
            m1, c1 = blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    out = []
    for mean, count in blocks:
        out += [mean] * int(count)
    return out


def measure_profile(
    model: onnx.ModelProto,
    widths_of: Mapping[int, Sequence[int]],
    group_macs: Mapping[int, int],
    total_macs: int,
    deployment: Deployment,
    key: dict,
    *,
    shapes: Optional[Mapping] = None,
    budget_s: float = DEFAULT_BUDGET_S,
    min_mac_share: float = MIN_MAC_SHARE,
    rounds: int = 4,
    runs: int = 3,
    progress: Optional[Callable[[str], None]] = None,
    clock: Callable[[], float] = time.monotonic,
) -> LatencyProfile:
    """Measure the ladder of every group in `widths_of` (group id -> its allowed widths, ascending, the full size
    last); `model` is the dense model (not changed)."""
    say = progress or (lambda _m: None)
    start = clock()
    config = deployment.bench_config(shapes, rounds, runs)
    order = sorted(widths_of, key=lambda g: -group_macs.get(g, 0))
    share = {g: group_macs.get(g, 0) / total_macs if total_macs else 0.0 for g in order}
    ratios: dict[int, tuple[list[int], list[float], Optional[float]]] = {}
    dense_medians: list[float] = []
    timed = 0
    small = [g for g in order if share[g] < min_mac_share]
    to_measure = [g for g in order if share[g] >= min_mac_share]
    left: list[int] = []
    for i, g in enumerate(to_measure):
        if clock() - start > budget_s:
            left = to_measure[i:]
            break
        size = widths_of[g][-1]
        rungs = ladder(widths_of[g], size)
        if not rungs:
            small.append(g)
            continue
        say(f"group {g} ({i + 1}/{len(to_measure)}, {share[g] * 100:.1f}% of MACs): widths {rungs} of {size}")
        models = [model] + [narrowed(model, {g: w}, shapes) for w in rungs]
        for m, w in zip(models[1:], rungs):
            m.graph.name = f"group{g}_w{w}"
        report = bench(models, config)
        rows = [r for r in report.rows if r.status == "ok"]
        dense_medians.append(rows[0].median_ms)
        noise = report.noise(rows)
        measured = [1.0 / r.speedup for r in rows[1:1 + len(rungs)]]  # bench's paired per-round ratio
        ratios[g] = (rungs + [size], [min(v, 1.0) for v in monotone(measured)] + [1.0], noise)  # dense: 1
        timed += len(rows)
    if not dense_medians:  # nothing measured: time the dense model alone for the MAC model's scale
        report = bench([model], config)
        dense_medians.append(report.rows[0].median_ms)
        timed += len(report.rows)
    dense_ms = float(np.median(dense_medians))
    groups = {}
    for g, (ws, rs, noise) in ratios.items():
        groups[g] = GroupLatency(g, ws[-1], ws, [dense_ms * r for r in rs], "measured", group_macs.get(g, 0), noise)
    for g in small + left:
        size = widths_of[g][-1]
        groups[g] = GroupLatency(g, size, [0, size], [dense_ms * (1.0 - min(share[g], 1.0)), dense_ms], "macs",
                                 group_macs.get(g, 0))
    notes = []
    if small:
        notes.append(f"{len(small)} group(s) touching less than {min_mac_share * 100:g}% of the MACs each are "
                     "modelled from their MACs (dense latency x their share of the MACs)")
    if left:
        notes.append(f"the measuring budget of {budget_s:g} s ran out after {len(ratios)} group(s): {len(left)} "
                     "group(s) are modelled from their MACs")
    return LatencyProfile(key, dense_ms, groups, clock() - start, timed, notes)


def get_profile(
    model: onnx.ModelProto,
    widths_of: Mapping[int, Sequence[int]],
    group_macs: Mapping[int, int],
    total_macs: int,
    deployment: Deployment,
    *,
    shapes: Optional[Mapping] = None,
    cache_dir=None,
    profile_file=None,
    budget_s: float = DEFAULT_BUDGET_S,
    min_mac_share: float = MIN_MAC_SHARE,
    progress: Optional[Callable[[str], None]] = None,
    warn: Optional[Callable[[str], None]] = None,
) -> LatencyProfile:
    """The latency profile of `model` on `deployment`: `profile_file` when given (with a warning when it was
    measured for another model or machine), else the cached one, else measured now and cached."""
    deployment.validate()
    key = profile_key(model, deployment, shapes)
    if profile_file is not None:
        profile = load_profile(profile_file)
        differences = key_differences(profile.key, key)
        if differences and warn is not None:
            warn(f"{profile_file} was measured for another setting: {'; '.join(differences)}. Latency ladders "
                 "hold only on identical machines, providers, batches and threads: its predictions may be off here")
        profile.reused = True
        return _covering(profile, widths_of, profile_file)
    path = cache_path(cache_dir or default_cache_dir(), key)
    if path.is_file():
        try:
            profile = load_profile(path)
        except OptionError:
            profile = None
        if profile is not None and profile.key == key and set(widths_of) <= set(profile.groups):
            profile.reused = True
            return profile
    profile = measure_profile(model, widths_of, group_macs, total_macs, deployment, key, shapes=shapes,
                              budget_s=budget_s, min_mac_share=min_mac_share, progress=progress)
    noise = profile.noise()
    if noise is not None and noise > CACHE_NOISE:
        profile.notes.append(f"the ladders were measured with control noise ±{noise * 100:.0f}% (the median over "
                             "their runs; most often other work on the machine): this profile is used for this run "
                             "only, not cached; measure where the machine is quiet")
        return profile
    try:
        save_profile(profile, path)
    except OSError as exc:
        if warn is not None:
            warn(f"cannot cache the latency profile in {path.parent}: {exc.strerror or exc}")
    return profile


def _covering(profile: LatencyProfile, widths_of: Mapping[int, Sequence[int]], source) -> LatencyProfile:
    missing = [g for g in widths_of if g not in profile.groups
               or profile.groups[g].size != widths_of[g][-1]]
    if missing:
        raise OptionError(f"{source}: the profile does not cover group(s) {missing[:5]} of this model "
                          "(it was measured on another model)")
    return profile
