"""Why a speedup fell far short of the MAC reduction, from numbers the benchmark measures itself.

Width pruning removes MACs from every kernel but removes no kernel. Where a run's time is the fixed cost of its
kernels (launching them on a GPU, dispatching them on a CPU) rather than their arithmetic, the time cannot fall
with the MACs. Three measurements show that, each on the dense model at the batch in question:
- batch scaling: the time per sample falls steeply when the batch grows (8x the batch for far less than 8x the
  time): most of a batch-1 run was overhead that a larger batch shares;
- a CUDA graph (CUDA only): replaying the run as one graph removes the launches; a large gain means launches took a
  large part of the time;
- kernels per run and their mean time, from onnxruntime's profiler: tiny kernels are dominated by their fixed cost.
`diagnose` is a pure function of those numbers; `gather` measures them with bench's own timing loop and profiler.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable, Optional, Sequence

SHORT = 0.6  # efficiency (speedup x MAC ratio) below which a speedup falls far short of the MAC promise
STEEP = 3.0  # per-sample time at the batch / at PROBE_FACTOR x the batch, from which a run is overhead-bound
GRAPH_GAIN = 1.25  # dense time without / with a CUDA graph, from which launches are a large part of a run
# mean time per kernel below which its fixed cost dominates it: a CUDA launch plus onnxruntime's per-node work is
# ~10 us; a CPU kernel's dispatch ~1 us. Used only where batch scaling could not be measured.
TINY_KERNEL_US = {"cpu": 5.0, "cuda": 20.0, "tensorrt": 20.0}
PROBE_FACTOR = 8
PROBE_MAX_BATCH = 8  # batch scaling is probed for batches up to this (8x more would be a different workload)


@dataclass
class Evidence:
    provider: str  # cpu | cuda | tensorrt
    batch: int
    mac_ratio: float  # pruned MACs / dense MACs
    speedup: float  # dense time / pruned time at `batch`
    batch_gain: Optional[float] = None  # dense per-sample time at `batch` / at PROBE_FACTOR x `batch`
    graph_gain: Optional[float] = None  # dense time without a CUDA graph / with one, at `batch`
    kernels: Optional[int] = None  # kernels per dense run (onnxruntime's profiler)
    kernel_us: Optional[float] = None  # the dense run's time / kernels, microseconds
    cuda_graph: bool = False  # the speedup was measured with CUDA graphs already

    @property
    def efficiency(self) -> float:
        return self.speedup * self.mac_ratio

    def to_dict(self) -> dict:
        return dict(asdict(self), efficiency=self.efficiency)


def diagnose(e: Evidence) -> Optional[str]:
    """One line on why `e.speedup` falls far short of 1 / `e.mac_ratio`; None when it does not (efficiency >=
    SHORT) or nothing measured says why."""
    if e.mac_ratio <= 0 or e.speedup <= 0 or e.efficiency >= SHORT or e.mac_ratio > 0.95:
        return None
    signs = []
    if e.batch_gain is not None and e.batch_gain >= STEEP:
        signs.append(f"{PROBE_FACTOR}x the batch costs only {PROBE_FACTOR / e.batch_gain:.1f}x the time")
    if e.graph_gain is not None and e.graph_gain >= GRAPH_GAIN:
        signs.append(f"a CUDA graph alone runs the dense model {e.graph_gain:.2f}x faster")
    if e.batch_gain is None and e.kernel_us is not None and e.kernels and \
            e.kernel_us < TINY_KERNEL_US.get(e.provider, TINY_KERNEL_US["cuda"]):
        signs.append(f"{e.kernels} kernels per run at {e.kernel_us:.0f} us each")
    promise = f"{e.speedup:.2f}x for MACs x{e.mac_ratio:.3f} (efficiency {e.efficiency:.2f})"
    device = "GPU" if e.provider != "cpu" else "CPU"
    if signs:
        tries = ["--depth-ratio", "a larger batch"] + (["--cuda-graph"] if e.provider == "cuda" and not e.cuda_graph
                                                       else [])
        return (f"{promise}: launch-bound at batch {e.batch} on this {device} ({'; '.join(signs)}): the run's time "
                f"is the fixed cost of its kernels, which width pruning does not remove, so it cannot pay here; try "
                f"{', '.join(tries[:-1])} or {tries[-1]}")
    measured = []
    if e.batch_gain is not None:
        measured.append(f"{PROBE_FACTOR}x the batch costs {PROBE_FACTOR / e.batch_gain:.1f}x the time")
    if e.graph_gain is not None:
        measured.append(f"a CUDA graph gains {e.graph_gain:.2f}x")
    why = f" (not launch-bound: {'; '.join(measured)})" if measured else ""
    return (f"{promise}{why}: the time fell less than the MACs inside the kernels: misaligned channel counts "
            f"(--round-to), memory-bound or unpruned layers; --layers shows which layers kept their time")


# ---------------------------------------------------------------------------------------------------------------
# Measuring the evidence


@dataclass
class Diagnosis:
    provider: str
    threads: int
    batch: int
    model: str
    text: str
    evidence: Evidence

    def to_dict(self) -> dict:
        return {"provider": self.provider, "threads": self.threads, "batch": self.batch, "model": self.model,
                "text": self.text, "evidence": self.evidence.to_dict()}


def _median(report, batch: int) -> Optional[float]:
    row = next((r for r in report.rows if r.batch == batch and r.status == "ok" and not r.control), None)
    return row.median_ms if row is not None else None


def gather(report, dense, progress: Optional[Callable[[str], None]] = None) -> list[Diagnosis]:
    """A diagnosis for every row of `report` (a BenchReport of `dense` and pruned models) whose speedup falls far
    short of its MACs, with the evidence measured on `dense`: the report's own batch scaling where it timed the
    batch and 8x the batch, else a short probe; on CUDA, the same batch with a CUDA graph; kernels per run from
    onnxruntime's profiler."""
    from .bench import bench
    from .errors import OnnxPruneError

    say = progress or (lambda _msg: None)
    cfg = report.config
    out = []
    for (provider, threads, batch), rows in report.groups():
        short = [r for r in rows[1:] if not r.control and r.status == "ok" and r.speedup and r.mac_ratio
                 and r.speedup * r.mac_ratio < SHORT and r.mac_ratio <= 0.95]
        if not short:
            continue
        say(f"diagnosis: {provider} batch {batch}: {len(short)} model(s) far short of their MACs; measuring why")
        probe = replace(cfg, providers=(provider,), threads=(threads,), control=False,
                        rounds=max(3, min(cfg.rounds, 5)))
        same = {r.batch: r.median_ms for r in report.rows
                if (r.provider, r.threads) == (provider, threads) and r.model == rows[0].model and r.status == "ok"}
        base = rows[0].median_ms
        gain = graph = None
        big = batch * PROBE_FACTOR
        if batch <= PROBE_MAX_BATCH:
            try:
                times = same if big in same else None
                if times is None:
                    scaled = bench([dense], replace(probe, batches=(batch, big)))
                    times = {batch: _median(scaled, batch), big: _median(scaled, big)}
                if times.get(batch) and times.get(big):
                    gain = (times[batch] / batch) / (times[big] / big)
            except OnnxPruneError as exc:  # a fixed batch, or the larger batch does not fit
                say(f"diagnosis: no batch-scaling probe: {exc}")
        if provider == "cuda" and not cfg.cuda_graph:
            try:
                plain = bench([dense], replace(probe, batches=(batch,)))
                graphed = bench([dense], replace(probe, batches=(batch,), cuda_graph=True))
                if _median(plain, batch) and _median(graphed, batch):
                    graph = _median(plain, batch) / _median(graphed, batch)
            except OnnxPruneError as exc:
                say(f"diagnosis: no CUDA-graph probe: {exc}")
        kernels = kernel_us = None
        try:
            kernels = count_kernels(dense, provider, threads, batch, cfg)
            kernel_us = base * 1000.0 / kernels if kernels else None
        except OnnxPruneError as exc:
            say(f"diagnosis: no kernel count: {exc}")
        for r in short:
            e = Evidence(provider, batch, r.mac_ratio, r.speedup, gain, graph, kernels, kernel_us, cfg.cuda_graph)
            text = diagnose(e)
            if text:
                out.append(Diagnosis(provider, threads, batch, r.model, text, e))
    return out


def count_kernels(dense, provider: str, threads: int, batch: int, cfg) -> Optional[int]:
    """Kernels onnxruntime runs per run of `dense` at `batch` (its profiler's node events, median over runs)."""
    from .bench import provider_list, shapes_for_batch
    from .io import load_model
    from .layers import profile
    from .inputs import make_inputs

    proto = load_model(dense)
    feed = make_inputs(proto, shapes_for_batch(proto, dict(cfg.shapes), batch), samples=1, seed=cfg.seed)[0]
    times = profile([dense], feed, threads=threads, warmup=2, runs=3, rounds=1,
                    providers=provider_list(provider, cfg.trt_sparsity))[0]
    return len(times) or None
