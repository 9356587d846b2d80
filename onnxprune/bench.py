"""Latency of several models side by side, the way docs/measuring.md says it must be measured.

- One process; every session ORT_ENABLE_ALL, intra_op_num_threads set explicitly, inter_op_num_threads=1,
  sequential execution.
- Sessions are interleaved in blocks: each round visits every model once in a shuffled order, and a visit is a
  short pause, 2 untimed runs (more for a fast model: at least 30 ms of them, so that its timed runs do not
  start on caches the previous model left cold), then a few timed runs (more for a fast model: at least 20 ms of
  them, so that a sub-millisecond model is not timed over a stretch shorter than the machine's stalls). The median
  is taken over all timed runs of all rounds.
  (Alternating sessions run by run makes onnxruntime's spinning threads fight and reads several times slower.)
- Warm-up runs are never timed; the inputs are fixed (seeded) and the same for every model.
- A control row, a second session on the first model, shows the noise floor ("dense vs dense").
- A speedup is the median over rounds of that round's dense median / model median: a round times every model
  within a second or so, so a slow spell of the machine (on a GPU at batch 1, launch latency that switches
  between two levels for seconds at a time) hits both sides of the ratio and cancels.
- Each speedup has a 95% interval from resampling whole rounds; a model is called faster or slower only when its
  whole interval lies beyond the control's reach from 1.00x (the control's speedup or interval end farthest
  from 1.00x), so a 2% difference on a noisy machine is not reported as a speedup.
- On a GPU, inputs are bound once with I/O binding, outputs are bound on the device, and the clock is read only
  after synchronizing. With CUDA graphs the outputs are preallocated on the device too, and every batch gets fresh
  sessions (a graph replays the shapes it was captured with).
- With fp16, float16 copies of the models (inputs and outputs kept float32) are timed, each checked against its
  float32 model on the CPU first (cosine >= 0.99).

Speedup is against the first model; mac_ratio = MACs / MACs of the first model at the same batch;
efficiency = speedup / (1 / mac_ratio): 1.0 means the time fell exactly as much as the MACs did.
"""

from __future__ import annotations

import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import onnx

from .cost import count_cost
from .errors import OnnxPruneError, OptionError
from .inputs import counting_shapes, make_inputs, model_inputs
from .io import ModelSource, load_model
from .session import open_session, run_failure
from .tables import markdown, num, plain

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
DEVICE_OF = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "cuda"}
# The control row's deviation from 1.00x is the noise; below this floor a single run cannot resolve anything.
NOISE_FLOOR = 0.01
BOOTSTRAP_SAMPLES = 2000  # resamples of whole rounds for a speedup's 95% interval
NOISY_CONTROL = 0.10  # a control reaching further than this from 1.00x gets a hint on a GPU


@dataclass
class BenchConfig:
    providers: Sequence[str] = ("cpu",)
    batches: Optional[Sequence[int]] = None  # None: the model's own batch (1 when the first dim is dynamic)
    threads: Sequence[int] = (1,)  # intra_op_num_threads, one measurement group per value
    warmup: int = 5  # untimed runs per session before the rounds (per batch)
    runs: int = 5  # timed runs per visit
    rounds: int = 10  # shuffled rounds; timed runs per model = runs * rounds
    untimed_per_visit: int = 2
    pause_s: float = 0.05  # pause before each visit
    shapes: dict = field(default_factory=dict)  # --shape overrides for dynamic dims other than the batch
    seed: int = 0  # inputs and the round order
    require_provider: bool = False  # an unavailable provider raises instead of reporting "unavailable"
    trt_sparsity: bool = False  # TensorRT: trt_sparsity_enable
    control: bool = True
    visit_ms: float = 20.0  # timed work per visit, at least: a fast model gets more than `runs` timed runs
    cuda_graph: bool = False  # CUDA: capture each model once as a CUDA graph and replay it (enable_cuda_graph)
    fp16: bool = False  # time float16 copies of the models (I/O types kept), checked against float32 first

    def validate(self) -> None:
        for p in self.providers:
            if p not in PROVIDERS:
                raise OptionError(f"unknown provider {p!r}: choose from {', '.join(PROVIDERS)}")
        if not self.providers:
            raise OptionError("no provider given")
        for name, values in (("batch", self.batches or ()), ("threads", self.threads)):
            for v in values:
                if int(v) < 1:
                    raise OptionError(f"{name} must be at least 1, got {v}", params=(name,))
        if not self.threads:
            raise OptionError("threads needs at least one value", params=("threads",))
        if self.runs < 1 or self.rounds < 1:
            raise OptionError(f"runs and rounds must be at least 1, got {self.runs} and {self.rounds}",
                              params=("runs", "rounds"))
        if self.warmup < 0 or self.untimed_per_visit < 0 or self.pause_s < 0 or self.visit_ms < 0:
            raise OptionError("warmup, visit_ms, untimed runs per visit and the pause must not be negative",
                              params=("warmup", "visit_ms"))
        if self.cuda_graph and list(self.providers) != ["cuda"]:
            raise OptionError("cuda_graph needs provider cuda alone (CUDA graphs are a CUDA provider feature)",
                              params=("cuda_graph", "provider"))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["providers"], d["threads"] = list(self.providers), list(self.threads)
        d["batches"] = None if self.batches is None else list(self.batches)
        return d


@dataclass
class BenchRow:
    model: str  # label
    source: str  # the path (or the graph name of an in-memory model)
    provider: str  # cpu | cuda | tensorrt
    threads: int
    batch: int
    status: str = "ok"  # ok | unavailable | error
    control: bool = False
    median_ms: Optional[float] = None
    p10_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    runs: int = 0  # timed runs
    throughput: Optional[float] = None  # samples per second at the median
    speedup: Optional[float] = None  # vs the first model in the same provider/threads/batch group
    speedup_low: Optional[float] = None  # 95% interval of the speedup (rounds resampled; None with one round)
    speedup_high: Optional[float] = None
    macs: Optional[int] = None
    mac_ratio: Optional[float] = None
    efficiency: Optional[float] = None
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BenchReport:
    rows: list[BenchRow]
    config: BenchConfig
    environment: dict = field(default_factory=dict)
    diagnoses: list = field(default_factory=list)  # diagnosis.Diagnosis: why a speedup fell far short of its MACs

    def groups(self) -> list[tuple[tuple[str, int, int], list[BenchRow]]]:
        """Rows grouped by (provider, threads, batch), in order."""
        out: dict[tuple[str, int, int], list[BenchRow]] = {}
        for r in self.rows:
            out.setdefault((r.provider, r.threads, r.batch), []).append(r)
        return list(out.items())

    def noise(self, group: Sequence[BenchRow]) -> Optional[float]:
        """The group's noise: how far from 1.00 the control row's speedup and its 95% interval reach
        (at least NOISE_FLOOR)."""
        for r in group:
            if r.control and r.speedup is not None:
                ends = [x for x in (r.speedup, r.speedup_low, r.speedup_high) if x is not None]
                return max(max(abs(x - 1.0) for x in ends), NOISE_FLOOR)
        return None

    def to_dict(self) -> dict:
        groups = []
        for (provider, threads, batch), rows in self.groups():
            groups.append({"provider": provider, "threads": threads, "batch": batch, "noise": self.noise(rows)})
        return {
            "config": self.config.to_dict(),
            "environment": dict(self.environment),
            "method": method_text(self.config),
            "groups": groups,
            "rows": [r.to_dict() for r in self.rows],
            "diagnoses": [d.to_dict() for d in self.diagnoses],
        }


# ---------------------------------------------------------------------------------------------------------------
# Sessions and runners


def session_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 4
    return so


def provider_list(provider: str, trt_sparsity: bool = False, cuda_graph: bool = False) -> list:
    if provider == "tensorrt":
        return [
            ("TensorrtExecutionProvider", {"trt_sparsity_enable": bool(trt_sparsity)}),
            "CUDAExecutionProvider",
            "CPUExecutionProvider",
        ]
    if provider == "cuda":
        cuda = ("CUDAExecutionProvider", {"enable_cuda_graph": "1"}) if cuda_graph else "CUDAExecutionProvider"
        return [cuda, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class _Runner:
    """One session with its inputs prepared; `__call__` runs once and returns when the results are ready.

    With `fixed_outputs` (what a CUDA graph needs: it replays on the same device addresses), the outputs are
    preallocated on the device too: one run with outputs onnxruntime allocates gives their shapes and types
    (onnxruntime runs a session normally before it captures the graph), then buffers of those are bound.
    """

    def __init__(self, session, feeds: dict[str, np.ndarray], device: str = "cpu", use_iobinding: bool = False,
                 label: str = "model", fixed_outputs: bool = False):
        self.session = session
        self.label = label
        self.feeds = feeds
        self.binding = None
        if device != "cpu" or use_iobinding or fixed_outputs:
            self._bind(device, fixed_outputs)

    def _bind(self, device: str, fixed_outputs: bool) -> None:
        import onnxruntime as ort

        io = self.session.io_binding()
        self._values = []  # keep the device copies alive for as long as the binding
        for name, arr in self.feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(arr, device, 0)
            self._values.append(value)
            io.bind_ortvalue_input(name, value)
        for out in self.session.get_outputs():
            io.bind_output(out.name, device, 0)
        io.synchronize_inputs()
        self.binding = io
        if fixed_outputs:
            self()
            shapes = [(v.shape(), v.numpy().dtype) for v in io.get_outputs()]
            io.clear_binding_outputs()
            for out, (shape, dtype) in zip(self.session.get_outputs(), shapes):
                value = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, device, 0)
                self._values.append(value)
                io.bind_ortvalue_output(out.name, value)

    def __call__(self) -> None:
        try:
            if self.binding is None:
                self.session.run(None, self.feeds)
            else:
                self.session.run_with_iobinding(self.binding)
                self.binding.synchronize_outputs()
        except Exception as exc:  # onnxruntime's own exception classes
            raise run_failure(self.session, self.feeds, self.label, exc,
                              "bench draws the inputs from the first model; models timed together take the same inputs") from None


VISIT_WARM_S = 0.03  # untimed work at the start of each visit, at least
MAX_UNTIMED_PER_VISIT = 20
MAX_RUNS_PER_VISIT = 2000  # timed runs per visit, at most (a 10 us model at visit_s = 20 ms)


def interleave(
    runners: Sequence[Callable[[], None]],
    *,
    warmup: int,
    runs: int,
    rounds: int,
    untimed_per_visit: int = 2,
    pause_s: float = 0.05,
    visit_warm_s: float = VISIT_WARM_S,
    visit_s: float = 0.0,
    seed: int = 0,
    clock: Callable[[], int] = time.perf_counter_ns,
    progress: Optional[Callable[[int], None]] = None,
) -> list[list[float]]:
    """Block-interleaved timing; returns the timed latencies (ms) of each runner.

    Warm-up: `warmup` untimed runs of each runner (timed only to size the visits). Then `rounds` rounds; each
    visits every runner once in a shuffled (seeded) order: pause, untimed runs, `runs` timed runs. A visit's
    untimed runs are `untimed_per_visit`, or more for a fast model: as many as fill `visit_warm_s` (at most
    MAX_UNTIMED_PER_VISIT), so that its timed runs do not start on caches the previous model left cold.
    A visit's timed runs are `runs`, or more for a fast model: as many as fill `visit_s` by the warm-up runs'
    median (at most MAX_RUNS_PER_VISIT), so that a sub-millisecond model is timed over a stretch long enough for
    the clock and the machine's short stalls to average out; the count is fixed per runner for every round.
    `progress(round)` after each round (1-based).
    """
    order_rng = random.Random(seed)
    warm_runs, timed_runs = [], []
    for run in runners:
        spent = []
        for _ in range(warmup):
            t0 = clock()
            run()
            spent.append((clock() - t0) / 1e9)
        typical = sorted(spent)[len(spent) // 2] if spent else 0.0
        extra = math.ceil(visit_warm_s / typical) if typical > 0 and visit_warm_s > 0 else 0
        warm_runs.append(max(untimed_per_visit, min(extra, MAX_UNTIMED_PER_VISIT)))
        fill = math.ceil(visit_s / typical) if typical > 0 and visit_s > 0 else 0
        timed_runs.append(max(runs, min(fill, MAX_RUNS_PER_VISIT)))
    times: list[list[float]] = [[] for _ in runners]
    indices = list(range(len(runners)))
    for done in range(1, rounds + 1):
        order_rng.shuffle(indices)
        for i in indices:
            run = runners[i]
            if pause_s:
                time.sleep(pause_s)
            for _ in range(warm_runs[i]):
                run()
            for _ in range(timed_runs[i]):
                t0 = clock()
                run()
                times[i].append((clock() - t0) / 1e6)
        if progress is not None:
            progress(done)
    return times


# ---------------------------------------------------------------------------------------------------------------
# Shapes


def _native_batch(proto: onnx.ModelProto, overrides: dict) -> int:
    """The batch used when none is asked for: a fixed first dim, else the --shape override's, else 1."""
    specs = [s for s in model_inputs(proto) if s.dims]
    for s in specs:
        first = s.dims[0]
        if not (isinstance(first, int) and first > 0):
            return int(overrides[s.name][0]) if s.name in overrides else 1
    return int(specs[0].dims[0]) if specs else 1


def shapes_for_batch(proto: onnx.ModelProto, overrides: dict, batch: int) -> dict[str, list[int]]:
    """Input shapes at `batch`: the batch replaces every dynamic first dim; overrides fill the other dynamic dims,
    and the dims nobody pinned are at inputs.counting_shapes' sizes."""
    shapes = counting_shapes(proto, overrides)[0]
    specs = [s for s in model_inputs(proto) if s.dims]
    dynamic_first = [s.name for s in specs if not (isinstance(s.dims[0], int) and s.dims[0] > 0)]
    if dynamic_first:
        for name in dynamic_first:
            shapes[name][0] = int(batch)
    elif specs and batch != specs[0].dims[0]:
        raise OptionError(
            f"input {specs[0].name!r} has a fixed first dim {specs[0].dims[0]}; --batch {batch} needs a model "
            "whose first (batch) dim is dynamic"
        )
    return shapes


# ---------------------------------------------------------------------------------------------------------------
# The benchmark


@dataclass
class _Model:
    label: str
    source: ModelSource
    control: bool = False
    note: str = ""


FP16_MIN_COSINE = 0.99


def _float16_copy(label: str, proto: onnx.ModelProto, feed: dict, providers: Sequence) -> tuple[onnx.ModelProto, str]:
    """A float16 copy of `proto` (I/O types kept), checked against the float32 model on `providers` before anything
    is timed; OptionError when their outputs disagree."""
    from .fp16 import check_float16, to_float16

    half = to_float16(proto)
    half.graph.name = label
    cosine = check_float16(proto, half, [feed], FP16_MIN_COSINE, providers)
    return half, f"float16 (cosine to float32 {cosine:.5f})"


def _labels(models: Sequence[ModelSource]) -> list[str]:
    names = []
    for i, m in enumerate(models):
        names.append(m.graph.name or f"model{i}" if isinstance(m, onnx.ModelProto) else Path(m).name)
    if len(set(names)) < len(names):  # same file name in different folders: use what the user typed
        names = [f"model{i}" if isinstance(m, onnx.ModelProto) else str(m) for i, m in enumerate(models)]
    if len(set(names)) < len(names):
        names = [f"{n} #{i + 1}" for i, n in enumerate(names)]
    return names


def _source_text(source: ModelSource) -> str:
    return f"<in-memory {source.graph.name or 'model'}>" if isinstance(source, onnx.ModelProto) else str(source)


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def environment() -> dict:
    import onnxruntime as ort

    return {
        "onnxruntime": ort.__version__,
        "available_providers": list(ort.get_available_providers()),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
    }


def bench(
    models: Sequence[ModelSource],
    config: Optional[BenchConfig] = None,
    *,
    progress: Optional[Callable[[str], None]] = None,
    on_group: Optional[Callable[[list[BenchRow]], None]] = None,
) -> BenchReport:
    """Time `models` side by side for every provider x threads x batch of `config`; the first model is the base.

    `on_group` receives the rows of each provider/threads/batch group as soon as it is measured.
    """
    import onnxruntime as ort

    cfg = config or BenchConfig()
    cfg.validate()
    if not models:
        raise OptionError("no model to benchmark")
    say = progress or (lambda _msg: None)
    labels = _labels(models)
    entries = [_Model(label, src) for label, src in zip(labels, models)]
    first = entries[0]
    first_proto = load_model(first.source)
    base_inputs = [s.name for s in model_inputs(first_proto)]
    overrides = dict(cfg.shapes)
    batches = list(cfg.batches) if cfg.batches else [_native_batch(first_proto, overrides)]
    shapes = {b: shapes_for_batch(first_proto, overrides, b) for b in batches}  # validates before timing
    feeds = {b: make_inputs(first_proto, shapes[b], samples=1, seed=cfg.seed)[0] for b in batches}
    macs: dict[tuple[int, int], Optional[int]] = {}
    for i, e in enumerate(entries):  # one model's weights in memory at a time; sessions read the files
        proto = first_proto if i == 0 else load_model(e.source)
        names = [s.name for s in model_inputs(proto)]
        if sorted(names) != sorted(base_inputs):
            raise OnnxPruneError(f"{e.label}: inputs {names} differ from {first.label}'s {base_inputs}")
        for b in batches:
            try:
                macs[i, b] = count_cost(proto, shapes[b]).macs
            except OnnxPruneError:
                macs[i, b] = None
        del proto
    if cfg.fp16:
        check_feed = make_inputs(first_proto, shapes_for_batch(first_proto, overrides, _native_batch(first_proto, overrides)),
                                 samples=1, seed=cfg.seed)[0]
        # checked where they will run: on the GPU when CUDA is timed and available (the CPU runs float16 slowly)
        on_gpu = "cuda" in cfg.providers and PROVIDERS["cuda"] in ort.get_available_providers()
        checking = provider_list("cuda" if on_gpu else "cpu")
        for e in entries:
            e.source, e.note = _float16_copy(e.label, first_proto if e is first else load_model(e.source), check_feed,
                                             checking)
            say(f"{e.label}: float16 copy, {e.note}")
    del first_proto
    timed = entries + ([_Model(f"{first.label} (control)", first.source, True, first.note)] if cfg.control else [])
    macs.update({(len(entries), b): macs[0, b] for b in batches})

    available = list(ort.get_available_providers())
    rows: list[BenchRow] = []

    def blank(k: int, e: _Model, provider: str, threads: int, batch: int, status: str, note: str) -> BenchRow:
        m, m0 = macs[k, batch], macs[0, batch]
        return BenchRow(e.label, _source_text(e.source), provider, threads, batch, status=status, control=e.control,
                        macs=m, mac_ratio=m / m0 if m is not None and m0 else None, note=note)

    for provider in cfg.providers:
        ep = PROVIDERS[provider]
        if ep not in available:
            msg = f"{ep} is not available in this onnxruntime (available: {', '.join(available)})"
            if cfg.require_provider:
                raise OnnxPruneError(f"--provider {provider}: {msg}")
            say(f"{provider}: unavailable")
            rows += [blank(k, e, provider, t, b, "unavailable", msg)
                     for t in cfg.threads for b in batches for k, e in enumerate(timed)]
            continue
        for threads in cfg.threads:
            # a CUDA graph is captured once per session, at the first run's shapes: fresh sessions for each batch
            for pass_batches in ([[b] for b in batches] if cfg.cuda_graph else [batches]):
                sessions, fallback = _open_sessions(timed, provider, threads, cfg)
                if fallback:
                    if cfg.require_provider:
                        raise OnnxPruneError(f"--provider {provider}: {fallback}")
                    say(f"{provider}: {fallback}")
                    rows += [blank(k, e, provider, threads, b, "unavailable", fallback)
                             for b in pass_batches for k, e in enumerate(timed)]
                    continue
                for b in pass_batches:
                    say(f"{provider} threads={threads} batch={b}: {len(timed)} sessions x {cfg.rounds} rounds")
                    try:
                        runners = [_Runner(s, feeds[b], DEVICE_OF[provider], label=e.label,
                                           fixed_outputs=cfg.cuda_graph) for s, e in zip(sessions, timed)]
                    except OnnxPruneError:
                        raise
                    except Exception as exc:  # binding inputs on the device
                        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                        raise OnnxPruneError(f"{provider}: cannot bind the inputs on the device: {first_line}") from None
                    times = interleave(
                        runners, warmup=cfg.warmup, runs=cfg.runs, rounds=cfg.rounds,
                        untimed_per_visit=cfg.untimed_per_visit, pause_s=cfg.pause_s, visit_s=cfg.visit_ms / 1000.0,
                        seed=cfg.seed, progress=lambda r, where=f"{provider} threads={threads} batch={b}": say(
                            f"{where}: round {r}/{cfg.rounds}"),
                    )
                    group = _rows(timed, times, provider, threads, b, [macs[k, b] for k in range(len(timed))],
                                  rounds=cfg.rounds, seed=cfg.seed)
                    rows += group
                    if on_group is not None:
                        on_group(group)
                del sessions
    return BenchReport(rows=rows, config=cfg, environment=environment())


def _open_sessions(timed: Sequence[_Model], provider: str, threads: int, cfg: BenchConfig) -> tuple[list, str]:
    """A session per model on `provider`, or ([], why not) when the provider cannot run them (its failure to load a
    model on the CPU provider, or with require_provider, is raised instead)."""
    ep = PROVIDERS[provider]
    sessions = []
    for e in timed:
        try:
            sess = open_session(e.source, session_options(threads),
                                provider_list(provider, cfg.trt_sparsity, cfg.cuda_graph))
        except OnnxPruneError as exc:
            if provider == "cpu" or cfg.require_provider:
                raise
            return [], f"{ep} failed to create a session: {exc}"
        if sess.get_providers()[0] != ep:
            return [], f"onnxruntime fell back to {sess.get_providers()[0]} ({ep} could not start)"
        sessions.append(sess)
    return sessions, ""


def round_ratios(base: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Per-round speedups: median(base) / median(model) within each round, both (rounds, runs) arrays of latencies.

    A round times every model within a second or so, so a slow spell of the machine (on a GPU at batch 1, launch
    latency that switches between levels for seconds at a time) hits both sides of each ratio alike and cancels;
    pooling all rounds first would let a different mix of slow and fast rounds decide the speedup."""
    return np.median(base, axis=1) / np.median(model, axis=1)


def paired_speedup(base: np.ndarray, model: np.ndarray) -> float:
    """The speedup of `model` over `base`: the median of the per-round speedups (see `round_ratios`)."""
    return float(np.median(round_ratios(base, model)))


def speedup_interval(base: np.ndarray, model: np.ndarray, seed: int = 0) -> tuple[Optional[float], Optional[float]]:
    """95% interval of `paired_speedup(base, model)`, both (rounds, runs) arrays of latencies.

    Whole rounds are resampled with replacement: the interval shows how much the speedup depends on which rounds
    happened to be quiet. None with a single round.
    """
    rounds = base.shape[0]
    if rounds < 2:
        return None, None
    ratios = round_ratios(base, model)
    picks = np.random.default_rng(seed).integers(0, rounds, size=(BOOTSTRAP_SAMPLES, rounds))
    low, high = np.percentile(np.median(ratios[picks], axis=1), [2.5, 97.5])
    return float(low), float(high)


def _rows(timed, times, provider, threads, batch, macs, *, rounds: int, seed: int = 0) -> list[BenchRow]:
    rows = []
    by_round = [np.asarray(t, dtype=np.float64).reshape(rounds, -1) for t in times]  # timed runs, round by round
    for e, t, per_round, m in zip(timed, times, by_round, macs):
        median = float(np.median(t))
        speedup = paired_speedup(by_round[0], per_round) if median > 0 else None
        low, high = speedup_interval(by_round[0], per_round, seed) if median > 0 else (None, None)
        row = BenchRow(
            e.label, _source_text(e.source), provider, threads, batch, control=e.control,
            median_ms=median, p10_ms=_pct(t, 10), p90_ms=_pct(t, 90), runs=len(t),
            throughput=batch * 1000.0 / median if median > 0 else None,
            speedup=speedup, speedup_low=low, speedup_high=high,
            macs=m, note=e.note,
        )
        if m is not None and macs[0]:
            row.mac_ratio = m / macs[0]
            if row.speedup is not None:
                row.efficiency = row.speedup * row.mac_ratio
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Formatting


def method_text(cfg: BenchConfig) -> str:
    return (
        f"one process; ORT_ENABLE_ALL, intra_op_num_threads as listed, inter_op_num_threads=1, sequential; "
        f"{cfg.warmup} untimed warm-up runs per session, then {cfg.rounds} shuffled rounds, each visiting every "
        f"model once ({cfg.pause_s * 1000:g} ms pause, {cfg.untimed_per_visit} untimed runs or as many as fill {VISIT_WARM_S * 1000:g} ms (at most {MAX_UNTIMED_PER_VISIT}), {cfg.runs} timed runs or as many as fill {cfg.visit_ms:g} ms); "
        f"median and p10-p90 over all timed runs; speedup = median over rounds of the round's dense/model median "
        f"ratio, its 95% interval from {BOOTSTRAP_SAMPLES} resamples of whole rounds; same seeded inputs (seed {cfg.seed}) for every model"
        + ("; float16 copies of the models (inputs and outputs kept float32), checked against float32 first"
           if cfg.fp16 else "")
        + ("; CUDA graphs (enable_cuda_graph), inputs and outputs preallocated on the device" if cfg.cuda_graph else "")
    )


def speed_verdict(row: BenchRow, noise: float) -> str:
    """"faster" or "slower" only when the row's whole 95% interval lies beyond the control's reach from 1.00x."""
    low = row.speedup if row.speedup_low is None else row.speedup_low
    high = row.speedup if row.speedup_high is None else row.speedup_high
    if low > 1.0 + noise:
        return "faster"
    if high < 1.0 - noise:
        return "slower"
    return "within noise"


def _verdict(row: BenchRow, index: int, noise: Optional[float]) -> str:
    if row.status != "ok":
        return row.status
    if row.control:
        return "control (noise)" if noise is None else f"control: noise ±{noise * 100:.1f}%"
    if index == 0:
        return "baseline"
    if row.speedup is None:
        return "-"
    if noise is None:
        return "no control row: noise unknown"
    return speed_verdict(row, noise)


def _interval(row: BenchRow) -> str:
    if row.speedup_low is None or row.speedup_high is None:
        return "-"
    return f"{row.speedup_low:.2f}-{row.speedup_high:.2f}"


def _table_rows(report: BenchReport, rows: Sequence[BenchRow], noise) -> list[list[str]]:
    out = []
    for i, r in enumerate(rows):
        if r.status != "ok":
            out.append([r.model, r.status, "-", "-", "-", "-", "-", num(r.mac_ratio, ".3f"), "-",
                        _verdict(r, i, noise)])
            continue
        out.append([
            r.model, num(r.median_ms, ".3f"), f"{num(r.p10_ms, '.3f')}-{num(r.p90_ms, '.3f')}", str(r.runs),
            num(r.throughput, ".1f"), num(r.speedup, ".2f", "x"), _interval(r), num(r.mac_ratio, ".3f"),
            num(r.efficiency, ".2f"),
            _verdict(r, i, noise),
        ])
    return out


HEADER = ["model", "median ms", "p10-p90 ms", "runs", "samples/s", "speedup", "95% interval", "MAC ratio",
          "efficiency", "verdict"]
TEXT_COLUMNS = (0, len(HEADER) - 1)  # model and verdict; the numbers between are right-aligned


def _group_title(provider: str, threads: int, batch: int) -> str:
    return f"{provider}, {threads} thread{'s' if threads != 1 else ''}, batch {batch}"


def _noise_sentence(report: BenchReport, rows: Sequence[BenchRow]) -> list[str]:
    ok = [r for r in rows if r.status == "ok"]
    if not ok:
        return [f"{rows[0].provider}: not measured: {rows[0].note}"] if rows else []
    return _noise_lines(report, rows) + [f"Diagnosis, {d.model}: {d.text}." for d in report.diagnoses
                                         if (d.provider, d.threads, d.batch) == (rows[0].provider, rows[0].threads,
                                                                                 rows[0].batch)]


def _noise_lines(report: BenchReport, rows: Sequence[BenchRow]) -> list[str]:
    noise = report.noise(rows)
    control = next((r for r in rows if r.control), None)
    if noise is None or control is None:
        return ["No control row: the noise floor is unknown, so no speedup here can be called real."]
    interval = "" if control.speedup_low is None else f" (95% interval {_interval(control)})"
    lines = [
        f"Control (a second session on {rows[0].model}): {control.speedup:.2f}x{interval}, so speedups within "
        f"±{noise * 100:.1f}% of 1.00x are noise; a row is called faster or slower only when its whole 95% "
        "interval lies beyond that."
    ]
    if noise > NOISY_CONTROL and control.provider == "cuda" and not report.config.cuda_graph:
        lines.append(f"The control is noisy (±{noise * 100:.0f}%): on a GPU at small batches the launch latency "
                     "switches between levels for seconds at a time; --cuda-graph removes the launches "
                     "(±1% measured on an H200), more --rounds average them out.")
    for i, r in enumerate(rows):
        if i == 0 or r.control or r.speedup is None:
            continue
        word = speed_verdict(r, noise)
        if word == "within noise":
            lines.append(f"{r.model}: {r.speedup:.2f}x is within the control's noise: no measurable speedup.")
        else:
            eff = f", efficiency {r.efficiency:.2f}" if r.efficiency is not None else ""
            lines.append(f"{r.model}: {r.speedup:.2f}x ({word}) is beyond the control's noise{eff}.")
    return lines


def format_table(report: BenchReport) -> str:
    """A plain-text table per provider/threads/batch group, with the noise statement under each."""
    lines = []
    for (provider, threads, batch), rows in report.groups():
        noise = report.noise(rows)
        lines.append(f"== {_group_title(provider, threads, batch)}")
        lines += plain([HEADER] + _table_rows(report, rows, noise), TEXT_COLUMNS)
        lines.extend(_noise_sentence(report, rows))
        lines.append("")
    lines.append("method: " + method_text(report.config))
    lines.append("Ratios are measured side by side in this run; do not compare absolute times across runs.")
    return "\n".join(lines)


def format_markdown(report: BenchReport) -> str:
    """Markdown tables, one per group, each followed by a plain statement of what is and is not noise."""
    env = report.environment
    lines = [
        "## Benchmark",
        "",
        f"onnxruntime {env.get('onnxruntime', '?')}, {env.get('cpu_count', '?')} CPUs ({env.get('machine', '?')}). "
        f"Method: {method_text(report.config)}.",
        "",
    ]
    for (provider, threads, batch), rows in report.groups():
        noise = report.noise(rows)
        lines.append(f"### {_group_title(provider, threads, batch)}")
        lines.append("")
        lines += markdown(HEADER, _table_rows(report, rows, noise), TEXT_COLUMNS)
        lines.append("")
        lines.extend(_noise_sentence(report, rows))
        lines.append("")
    lines.append(
        "Speedup is against the first model; efficiency = speedup / (1 / MAC ratio). "
        "Ratios are measured side by side in one run; absolute times from different runs are not comparable."
    )
    return "\n".join(lines) + "\n"
