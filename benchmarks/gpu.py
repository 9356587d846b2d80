"""`make bench-gpu`: dense vs pruned ResNet-50, BERT-base, ResNet-18 and MobileNetV2 on onnxruntime's CUDA provider.

    python3 benchmarks/gpu.py OUTDIR [--budget-s 390] [--cpu] [--small]

Measures, with onnxprune's own bench (interleaved rounds, control row, medians; I/O bound on the device):
batch 1, 8 and 64 (BERT: 32) in float32; CUDA graphs off and on; float16 (models converted by onnxprune.fp16 with
their I/O types kept and checked against float32 first); structured pruning (onnxprune.prune --ratio 0.5) against
unstructured (50%, 90% zeros) and, when onnxprune.prune takes `depth_ratio`, depth pruning; and the float16
channel alignment (--ratio 0.45 with --round-to 1, 8 and 16, batch 64).

The work runs in order of importance and stops starting new work when the next step would not fit in --budget-s
(each skipped step is listed with the reason). OUTDIR/gpu.json and OUTDIR/gpu.md are rewritten atomically after
every measured group, so a run killed at any point leaves every result measured until then.
Models have random weights (latency does not depend on the values) and are cached in OUTDIR/models.
--cpu runs the same on the CPU provider (the CUDA-graph steps are skipped); --small uses tiny models and short
rounds (seconds; what the test suite runs).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    import onnx

    from models import transformers, zoo
    from onnxprune import api
    from onnxprune.bench import (
        FP16_MIN_COSINE, BenchConfig, BenchReport, bench, environment, method_text, provider_list)
    from onnxprune.diagnosis import PROBE_FACTOR, Evidence, diagnose
    from onnxprune.errors import OnnxPruneError
    from onnxprune.fp16 import check_float16, to_float16
    from onnxprune.inputs import make_inputs
    from onnxprune.io import save_model
    from onnxprune.unstructured import prune_unstructured
except ModuleNotFoundError as exc:  # the system python3 of `make bench-gpu`, without the project's dependencies
    sys.exit(f"error: {sys.executable} has no module {exc.name!r}: run it with a Python that has onnx, onnxruntime "
             "(onnxruntime-gpu for CUDA), numpy, sympy and click, such as the .venv that `make test` creates: "
             "make bench-gpu PYTHON=.venv/bin/python GPU_ARGS=\"--cpu --small\"")

HAS_DEPTH = "depth_ratio" in inspect.signature(api.prune).parameters
DEPTH_NOTE = "onnxprune.prune has no depth_ratio argument in this version: depth pruning not measured"


# ---------------------------------------------------------------------------------------------------------------
# Models and their variants


@dataclass
class Net:
    name: str
    title: str
    build: Callable[[], onnx.ModelProto]
    seq: Optional[int] = None  # transformers: the sequence length (inputs [batch, seq])
    big: int = 64  # the large batch

    def shapes(self, batch: int = 1) -> Optional[dict]:
        if self.seq is None:
            return None
        return {n: [batch, self.seq] for n in ("input_ids", "attention_mask", "token_type_ids")}


def nets(small: bool) -> dict[str, Net]:
    if small:
        found = [
            Net("resnet50", "ResNet-50 (width 8, 32x32)", lambda: zoo.resnet50(width=8, image=32, num_classes=10)),
            Net("bert_base", "BERT (2 layers, hidden 64, sequence 16)",
                lambda: transformers.bert(2, 64, 4, 128, 100, name="bert_base"), seq=16, big=32),
            Net("resnet18", "ResNet-18 (width 8, 32x32)", lambda: zoo.resnet18(width=8, image=32, num_classes=10)),
            Net("mobilenet_v2", "MobileNetV2 (x0.25, 32x32)", lambda: zoo.mobilenet_v2(0.25, image=32, num_classes=10)),
        ]
    else:
        found = [
            Net("resnet50", "ResNet-50 224x224", zoo.resnet50),
            Net("bert_base", "BERT-base sequence 128 (heads + FFN)", transformers.bert_base, seq=128, big=32),
            Net("resnet18", "ResNet-18 224x224", zoo.resnet18),
            Net("mobilenet_v2", "MobileNetV2 224x224", zoo.mobilenet_v2),
        ]
    return {n.name: n for n in found}


VARIANTS = {  # label -> (what, how: "structured" kwargs | ("unstructured", sparsity) | "depth")
    "s50": ("structured --ratio 0.5", {"ratio": 0.5}),
    "u50": ("unstructured 50% zeros", 0.5),
    "u90": ("unstructured 90% zeros", 0.9),
    "a1": ("structured --ratio 0.45 --round-to 1", {"ratio": 0.45, "round_to": 1}),
    "a8": ("structured --ratio 0.45 --round-to 8", {"ratio": 0.45, "round_to": 8}),
    "a16": ("structured --ratio 0.45 --round-to 16", {"ratio": 0.45, "round_to": 16}),
    "d50": ("depth --depth-ratio 0.5", {"ratio": 0.0, "depth_ratio": 0.5}),
}


FP16 = ".fp16"  # a variant's float16 copy: "s50.fp16"


class Models:
    """Builds each model and variant once, on first use, and caches it as OUTDIR/models/NAME_VARIANT.onnx.

    A float16 copy ("VARIANT.fp16") is converted by onnxprune.fp16 and checked against its float32 model on
    `providers` (cosine >= 0.99) once, and then timed by every float16 step."""

    def __init__(self, folder: Path, nets: dict[str, Net], say, providers=("CPUExecutionProvider",)):
        self.folder = folder
        self.nets = nets
        self.say = say
        self.providers = providers
        folder.mkdir(parents=True, exist_ok=True)
        self.record = folder / "prepared.json"  # kept with the cached files, so a rerun still knows what they are
        self.prepared: dict[str, dict] = {}  # "net/variant" -> {"seconds", "what", "mac_ratio", "cosine"}
        if self.record.exists():
            self.prepared = json.loads(self.record.read_text())

    def path(self, net: str, variant: str) -> Path:
        return self.folder / (f"{net}.onnx" if variant == "dense" else f"{net}_{variant.replace('.', '_')}.onnx")

    def ready(self, net: str, variant: str) -> bool:
        return self.path(net, variant).exists() and f"{net}/{variant}" in self.prepared

    def get(self, net: str, variant: str) -> Path:
        path = self.path(net, variant)
        if path.exists() and f"{net}/{variant}" in self.prepared:
            return path
        spec = self.nets[net]
        t0 = time.perf_counter()
        info: dict = {}
        if variant.endswith(FP16):
            source = self.get(net, variant[: -len(FP16)])
            fp32 = onnx.load(str(source))
            half = to_float16(fp32)
            feeds = make_inputs(fp32, spec.shapes(1), samples=1, seed=0)
            info["cosine"] = check_float16(fp32, half, feeds, FP16_MIN_COSINE, self.providers)
            info["what"] = f"float16 copy of {source.name} (cosine to float32 {info['cosine']:.5f})"
            save_model(half, path)
        elif variant == "dense":
            save_model(spec.build(), path)
            info["what"] = "dense (random weights)"
        else:
            dense = self.get(net, "dense")
            what, how = VARIANTS[variant]
            info["what"] = what
            if isinstance(how, float):
                pruned, report = prune_unstructured(onnx.load(str(dense)), how)
                info["sparsity"] = report.sparsity if hasattr(report, "sparsity") else how
            else:
                result = api.prune(str(dense), shapes=spec.shapes(), **how)
                pruned = result.model
                info["mac_ratio"] = result.report.after.macs / result.report.before.macs
            save_model(pruned, path)
        info["seconds"] = round(time.perf_counter() - t0, 2)
        self.prepared[f"{net}/{variant}"] = info
        write_atomic(self.record, json.dumps(self.prepared, indent=2))
        self.say(f"prepared {path.name} in {info['seconds']:.1f}s ({info['what']})")
        return path


# ---------------------------------------------------------------------------------------------------------------
# The steps, most important first


@dataclass
class Step:
    id: str
    title: str
    net: str
    variants: list[str]  # the first is the baseline
    batches: list[int]
    fp16: bool = False
    cuda_graph: bool = False
    status: str = "pending"  # pending | running | done | skipped | failed
    note: str = ""
    seconds: Optional[float] = None
    rows: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "net": self.net, "variants": self.variants,
                "batches": self.batches, "fp16": self.fp16, "cuda_graph": self.cuda_graph, "status": self.status,
                "note": self.note, "seconds": self.seconds, "rows": [r.to_dict() for r in self.rows]}


def plan(all_nets: dict[str, Net]) -> list[Step]:
    r50, bert = all_nets["resnet50"], all_nets["bert_base"]
    steps = []
    for net in (r50, bert):  # the float32 table
        steps.append(Step(f"{net.name}-fp32", f"{net.title}: float32", net.name, ["dense", "s50"], [1, 8, net.big]))
    for net in (r50, bert):
        steps.append(Step(f"{net.name}-graph", f"{net.title}: float32, CUDA graph", net.name, ["dense", "s50"],
                          [1, 8], cuda_graph=True))
    for net in (r50, bert):
        steps.append(Step(f"{net.name}-fp16", f"{net.title}: float16", net.name, ["dense", "s50"], [1, 8], fp16=True))
    for net in (r50, bert):
        steps.append(Step(f"{net.name}-fp16-graph", f"{net.title}: float16, CUDA graph", net.name, ["dense", "s50"],
                          [1, 8], fp16=True, cuda_graph=True))
    steps.append(Step("resnet50-unstructured", f"{r50.title}: unstructured vs structured", "resnet50",
                      ["dense", "s50", "u50", "u90"], [1, r50.big]))
    steps.append(Step("bert_base-unstructured", f"{bert.title}: unstructured vs structured", "bert_base",
                      ["dense", "s50", "u90"], [1, bert.big]))
    steps.append(Step("resnet50-fp16-align", f"{r50.title}: float16 channel alignment (--ratio 0.45)", "resnet50",
                      ["dense", "a1", "a8", "a16"], [r50.big], fp16=True))
    for net in (r50, bert):
        steps.append(Step(f"{net.name}-depth", f"{net.title}: depth vs width pruning", net.name,
                          ["dense", "s50", "d50"], [1, 8]))
    for name in ("resnet18", "mobilenet_v2"):
        net = all_nets[name]
        steps.append(Step(f"{name}-fp32", f"{net.title}: float32", name, ["dense", "s50", "u50", "u90"],
                          [1, 8, net.big]))
    return steps


def diagnoses(steps: list[Step]) -> list[dict]:
    """onnxprune's diagnosis for every row far short of its MACs, from this run's own numbers: batch scaling from
    the same step (the dense model at the batch and at 8x it, timed in one interleaved run), the CUDA-graph gain
    from the step that timed the same models with graphs (a separate run in the same process)."""
    out = []
    for s in steps:
        if s.cuda_graph or not s.rows:
            continue
        dense = {r.batch: r.median_ms for r in s.rows if r.model == s.rows[0].model and not r.control and r.median_ms}
        twin = next((t for t in steps if t.cuda_graph and t.net == s.net and t.fp16 == s.fp16 and t.rows), None)
        graphed = {r.batch: r.median_ms for r in twin.rows if r.model == twin.rows[0].model and not r.control
                   and r.median_ms} if twin else {}
        for r in s.rows:
            if r.control or r.model == s.rows[0].model or not (r.speedup and r.mac_ratio):
                continue
            b, big = r.batch, r.batch * PROBE_FACTOR
            gain = (dense[b] / b) / (dense[big] / big) if b in dense and big in dense else None
            graph = dense[b] / graphed[b] if b in dense and b in graphed else None
            e = Evidence(r.provider, b, r.mac_ratio, r.speedup, batch_gain=gain, graph_gain=graph)
            text = diagnose(e)
            if text:
                out.append({"step": s.id, "batch": b, "model": r.model, "text": text, "evidence": e.to_dict()})
    return out


# ---------------------------------------------------------------------------------------------------------------
# Results: JSON and Markdown, rewritten after every group


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _f(x, fmt: str, suffix: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{suffix}"


def markdown(state: dict, steps: list[Step]) -> str:
    env = state["environment"]
    lines = [
        f"## GPU benchmark ({state['provider']} provider)", "",
        f"onnxruntime {env.get('onnxruntime', '?')}, {state['device']}; {'tiny models, ' if state['small'] else ''}"
        f"{state['elapsed_s']:.0f} s of a {state['budget_s']:.0f} s budget. Method: {state['method']}.", "",
        "Each speedup is against the dense model of the same step and batch, measured in the same interleaved run; "
        "noise is the control row's reach from 1.00x (a second session on the dense model).", "",
        "| step | batch | model | dense ms | ms | speedup | 95% interval | noise | MAC ratio | efficiency |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in steps:
        for batch in s.batches:
            group = [r for r in s.rows if r.batch == batch]
            if not group:
                continue
            base = group[0]
            control = next((r for r in group if r.control), None)
            noise = BenchReport(group, BenchConfig()).noise(group) if control else None
            for r in group[1:]:
                if r.control:
                    continue
                interval = "-" if r.speedup_low is None else f"{r.speedup_low:.2f}-{r.speedup_high:.2f}"
                lines.append(
                    f"| {s.id} | {batch} | {r.model} | {_f(base.median_ms, '.3f')} | {_f(r.median_ms, '.3f')} | "
                    f"{_f(r.speedup, '.2f', 'x')} | {interval} | {_f(noise and noise * 100, '.1f', '%')} | "
                    f"{_f(r.mac_ratio, '.3f')} | {_f(r.efficiency, '.2f')} |")
    found = diagnoses(steps)
    if found:
        lines += ["", "Diagnosis (onnxprune's rule on this run's numbers):", ""]
        lines += [f"- {d['step']} b{d['batch']} {d['model']}: {d['text']}." for d in found]
    others = [s for s in steps if s.status != "done"]
    if others:
        lines += ["", "Not measured:", ""]
        lines += [f"- {s.id}: {s.status}{': ' + s.note if s.note else ''}" for s in others]
    notes = [f"- {s.id}: {s.note}" for s in steps if s.status == "done" and s.note]
    notes += [f"- {s.id}: {r.model}: {r.note}" for s in steps for r in s.rows
              if r.note and not r.control and r.batch == s.batches[0]]
    if notes:
        lines += ["", "Notes:", ""] + notes
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--budget-s", type=float, default=390.0,
                        help="wall-clock seconds for the whole run; steps that would not fit are skipped (390)")
    parser.add_argument("--cpu", action="store_true", help="use the CPU provider (CUDA-graph steps are skipped)")
    parser.add_argument("--small", action="store_true", help="tiny models and short rounds (a smoke test)")
    parser.add_argument("--only", default="", help="comma-separated step ids to run (default: all)")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    def elapsed() -> float:
        return time.perf_counter() - start

    def say(msg: str) -> None:
        print(f"[{elapsed():6.1f}s] {msg}", flush=True)

    import onnxruntime as ort

    provider = "cpu" if args.cpu else "cuda"
    available = ort.get_available_providers()
    if not args.cpu and "CUDAExecutionProvider" not in available:
        print(f"gpu.py: onnxruntime {ort.__version__} has no CUDA provider here (available: {', '.join(available)}); "
              "pass --cpu to run on the CPU", file=sys.stderr)
        return 2
    args.outdir.mkdir(parents=True, exist_ok=True)
    all_nets = nets(args.small)
    models = Models(args.outdir / "models", all_nets, say, provider_list(provider))
    steps = plan(all_nets)
    if args.only:
        wanted = set(args.only.split(","))
        steps = [s for s in steps if s.id in wanted]
    if args.small:
        timing = dict(warmup=2, runs=2, rounds=3, pause_s=0.0, visit_ms=2.0)
    else:
        timing = dict(warmup=10, runs=5, rounds=10, pause_s=0.02, visit_ms=20.0)
    state = {
        "provider": provider, "small": args.small, "budget_s": args.budget_s, "elapsed_s": 0.0,
        "environment": environment(), "device": _device_name(provider),
        "method": _method(timing),
        "depth_pruning": "measured" if HAS_DEPTH else DEPTH_NOTE,
    }
    out_json, out_md = args.outdir / "gpu.json", args.outdir / "gpu.md"

    def save() -> None:
        state["elapsed_s"] = round(elapsed(), 1)
        data = dict(state, preparation=models.prepared, steps=[s.to_dict() for s in steps],
                    diagnoses=diagnoses(steps))
        write_atomic(out_json, json.dumps(data, indent=2))
        write_atomic(out_md, markdown(state, steps))

    save()
    seconds_per_visit: dict[str, float] = {}  # net -> measured seconds per model visit, sessions included
    for step in steps:
        if step.cuda_graph and provider != "cuda":
            step.status, step.note = "skipped", "CUDA graphs need the CUDA provider"
            save()
            continue
        if "d50" in step.variants and not HAS_DEPTH:
            step.status, step.note = "skipped", DEPTH_NOTE
            save()
            continue
        need = _estimate(step, models, seconds_per_visit, timing, args.small)
        left = args.budget_s - elapsed()
        if need > left:
            step.status, step.note = "skipped", f"needs ~{need:.0f}s, {max(left, 0):.0f}s of --budget-s left"
            say(f"{step.id}: {step.note}")
            save()
            continue
        step.status = "running"
        say(f"{step.id}: {step.title}, batch {', '.join(map(str, step.batches))} (estimate {need:.0f}s)")
        t0 = time.perf_counter()
        try:
            variants = [v + FP16 if step.fp16 else v for v in step.variants]
            paths = [str(models.get(step.net, v)) for v in variants]
            t1 = time.perf_counter()
            config = BenchConfig(providers=(provider,), batches=tuple(step.batches), shapes=_overrides(all_nets[step.net]),
                                 require_provider=True, cuda_graph=step.cuda_graph, **timing)

            def on_group(rows, step=step, variants=variants):
                for r, v in zip(rows, variants + variants[:1]):  # the control row last, on the first model
                    info = models.prepared.get(f"{step.net}/{v}", {})
                    if "cosine" in info:
                        r.note = f"float16 (cosine to float32 {info['cosine']:.5f})"
                step.rows.extend(rows)
                for r in rows:
                    if not r.control and r is not rows[0]:
                        say(f"  {step.id} b{r.batch} {r.model}: {_f(rows[0].median_ms, '.3f')} -> "
                            f"{_f(r.median_ms, '.3f')} ms, {_f(r.speedup, '.2f', 'x')} (MACs {_f(r.mac_ratio, '.3f')})")
                control = next((r for r in rows if r.control), None)
                if control is not None:
                    say(f"  {step.id} b{control.batch} control: {_f(control.speedup, '.3f', 'x')}")
                save()

            bench(paths, config, progress=lambda m: say(f"  {m}"), on_group=on_group)
            visits = (len(step.variants) + 1) * len(step.batches) * timing["rounds"]
            seconds_per_visit[step.net] = max(seconds_per_visit.get(step.net, 0.0), (time.perf_counter() - t1) / visits)
            step.status = "done"
        except (OnnxPruneError, RuntimeError, MemoryError, ValueError) as exc:
            step.status = "failed"
            step.note = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            say(f"{step.id}: failed: {step.note}")
        step.seconds = round(time.perf_counter() - t0, 1)
        save()
    done = sum(s.status == "done" for s in steps)
    say(f"done: {done} of {len(steps)} steps measured; wrote {out_json} and {out_md}")
    return 0


def _overrides(net: Net) -> dict:
    """bench's --shape for the dims other than the batch (the batch replaces the first dim)."""
    return {k: v for k, v in (net.shapes(1) or {}).items()}


# BERT-base on a 2-core machine: build 5 s, prune 5 s, unstructured 5 s, float16 copy 7 s (+ its check)
PREPARE_GUESS_S = {"dense": 8.0, "structured": 12.0, "unstructured": 8.0, "fp16": 10.0}


def _estimate(step: Step, models: Models, seconds_per_visit: dict, timing: dict, small: bool) -> float:
    """Seconds the step will take: building the variants not built yet, then the visits (from the same model's
    earlier steps, or a guess)."""
    prepare = 0.0
    for v in step.variants:
        if not models.ready(step.net, v):
            kind = "dense" if v == "dense" else ("unstructured" if v.startswith("u") else "structured")
            prepare += (0.5 if small else PREPARE_GUESS_S[kind])
        if step.fp16 and not models.ready(step.net, v + FP16):
            prepare += (0.5 if small else PREPARE_GUESS_S["fp16"])
    per_visit = seconds_per_visit.get(step.net, 0.05 if small else 0.25)
    visits = (len(step.variants) + 1) * len(step.batches) * timing["rounds"]
    return prepare + visits * per_visit


def _method(timing: dict) -> str:
    return (method_text(BenchConfig(**timing)) + "; float16 steps time float16 copies (inputs and outputs kept "
            "float32) made once per model by onnxprune.fp16 and checked against float32 on the same provider first")


def _device_name(provider: str) -> str:
    if provider == "cpu":
        import platform

        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return "GPU " + out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "GPU"
    except (OSError, subprocess.SubprocessError):
        return "GPU"


if __name__ == "__main__":
    sys.exit(main())
