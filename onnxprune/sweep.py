"""`onnxprune sweep`: structured vs unstructured pruning of one model across ratios, side by side.

For every ratio it writes both pruned models, measures fidelity against the dense model (cosine, top-1) and
MACs, then times the dense model and every pruned one in ONE interleaved benchmark run (bench.py), so the
latencies are comparable. Outputs: sweep.json, sweep.md and, with matplotlib installed (onnxprune[plot]),
sweep.png: latency against ratio for both methods beside the ideal curve (dense latency x MAC ratio).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import api
from .bench import BenchConfig, bench, speed_verdict
from .cost import count_cost
from .errors import NothingToPruneError, OptionError
from .inputs import counting_shapes, make_inputs
from .io import load_model, make_folder, save_model, write_text
from .tables import markdown, num
from .unstructured import prune_unstructured
from .verify import compare

METHODS = ("structured", "unstructured")


@dataclass
class SweepPoint:
    method: str
    ratio: float
    path: Optional[str]  # None when nothing could be pruned
    params: Optional[int] = None
    macs: Optional[int] = None
    mac_ratio: Optional[float] = None
    cosine: Optional[float] = None  # lowest over the outputs
    top1: Optional[float] = None
    median_ms: Optional[float] = None
    p10_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    speedup: Optional[float] = None
    speedup_low: Optional[float] = None  # 95% interval (bench.speedup_interval)
    speedup_high: Optional[float] = None
    efficiency: Optional[float] = None
    verdict: str = ""  # faster | slower | within noise, against the control (bench.speed_verdict)
    note: str = ""


SWEEP_HEADER = ["method", "ratio", "MAC ratio", "params", "median ms", "speedup", "95% interval", "verdict",
                "efficiency", "cosine", "top-1", "note"]


@dataclass
class SweepReport:
    model: str
    dense_ms: Optional[float]
    control_speedup: Optional[float]
    noise: Optional[float]  # the control's reach from 1.00x (bench.BenchReport.noise)
    points: list[SweepPoint] = field(default_factory=list)
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "dense_ms": self.dense_ms, "control_speedup": self.control_speedup,
            "noise": self.noise,
            "points": [asdict(p) for p in self.points], "files": self.files,
        }

    def format_markdown(self) -> str:
        lines = [
            f"# Sweep of {self.model}",
            "",
            f"Dense median latency {num(self.dense_ms, '.3f')} ms; control (dense vs dense) "
            f"{num(self.control_speedup, '.2f')}x, so speedups within ±{num(self.noise and self.noise * 100, '.1f')}% of 1.00x are noise.",
            "",
        ]
        rows = [[p.method, f"{p.ratio:g}", num(p.mac_ratio, ".3f"), num(p.params, ","), num(p.median_ms, ".3f"),
                 num(p.speedup, ".2f", "x"), f"{num(p.speedup_low, '.2f')}-{num(p.speedup_high, '.2f')}", p.verdict,
                 num(p.efficiency, ".2f"), num(p.cosine, ".4f"), num(p.top1, ".3f"), p.note] for p in self.points]
        lines += markdown(SWEEP_HEADER, rows, (0, 7, 11))
        lines += [
            "",
            "Structured pruning removes channels: every GEMM shrinks and latency follows the MACs. Unstructured "
            "pruning zeroes weights in place: shapes and MACs are unchanged, and dense kernels run exactly as before.",
        ]
        return "\n".join(lines) + "\n"


def parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise OptionError(f"--ratios must be comma-separated numbers, got {text!r}") from None
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise OptionError(f"--ratios must be numbers in (0, 1), got {text!r}")
    return sorted(set(ratios))


def sweep(
    model: str,
    ratios: Sequence[float],
    out_dir: str,
    *,
    round_to: int = 16,
    shapes: Optional[dict] = None,
    samples: int = 4,
    config: Optional[BenchConfig] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> SweepReport:
    say = progress or (lambda _msg: None)
    out = make_folder(out_dir)
    dense = load_model(model)
    measured = counting_shapes(dense, shapes)[0]
    feeds = make_inputs(dense, shapes=measured, samples=samples, seed=0)
    dense_cost = count_cost(dense, measured)
    points: list[SweepPoint] = []
    for ratio in ratios:
        for method in METHODS:
            say(f"{method} {ratio:g}")
            path = out / f"{method}_{ratio:g}.onnx"
            try:
                if method == "structured":
                    pruned = api.prune(model, ratio=ratio, round_to=round_to, shapes=shapes).model
                else:
                    pruned = prune_unstructured(load_model(model), ratio)[0]
            except NothingToPruneError as exc:
                points.append(SweepPoint(method, ratio, None, note=str(exc)))
                continue
            save_model(pruned, path, inputs=(model,))
            cost = count_cost(pruned, shapes)
            del pruned
            fidelity = compare(model, str(path), feeds)
            cosines = [o.cosine for o in fidelity.outputs if o.cosine is not None]
            top1s = [o.top1 for o in fidelity.outputs if o.top1 is not None]
            points.append(SweepPoint(
                method, ratio, str(path), cost.params, cost.macs,
                cost.macs / dense_cost.macs if dense_cost.macs else None,
                min(cosines) if cosines else None, min(top1s) if top1s else None,
            ))
    say("benchmark")
    timed = [p for p in points if p.path is not None]
    report = bench([model] + [p.path for p in timed], config or BenchConfig(shapes=dict(shapes or {})))
    rows = [r for r in report.rows if r.status == "ok"]
    first = rows[0].threads, rows[0].batch, rows[0].provider  # the first group: one table per sweep
    rows = [r for r in rows if (r.threads, r.batch, r.provider) == first]
    by_source = {r.source: r for r in rows if not r.control}
    control = next((r for r in rows if r.control), None)
    noise = report.noise(rows)
    for p in timed:
        row = by_source.get(p.path)
        if row is not None:
            p.median_ms, p.p10_ms, p.p90_ms = row.median_ms, row.p10_ms, row.p90_ms
            p.speedup, p.speedup_low, p.speedup_high = row.speedup, row.speedup_low, row.speedup_high
            p.efficiency = row.efficiency
            p.verdict = speed_verdict(row, noise) if noise is not None else "noise unknown"
    dense_row = by_source.get(str(model))
    result = SweepReport(str(model), dense_row.median_ms if dense_row else None, control.speedup if control else None,
                         noise, points)
    result.files["json"] = str(out / "sweep.json")
    result.files["markdown"] = str(out / "sweep.md")
    plot = _plot(result, out / "sweep.png")
    if plot:
        result.files["plot"] = plot
    write_text(result.files["markdown"], result.format_markdown())
    write_text(result.files["json"], json.dumps(result.to_dict(), indent=2))
    return result


def _plot(report: SweepReport, path: Path) -> Optional[str]:
    """Latency vs ratio for both methods and the ideal MAC curve; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, style in (("structured", "o-"), ("unstructured", "s--")):
        pts = [p for p in report.points if p.method == method and p.median_ms is not None]
        ax.plot([p.ratio for p in pts], [p.median_ms for p in pts], style, label=f"{method} pruning")
    ideal = [p for p in report.points if p.method == "structured" and p.mac_ratio is not None]
    if report.dense_ms and ideal:
        ax.plot([0] + [p.ratio for p in ideal], [report.dense_ms] + [report.dense_ms * p.mac_ratio for p in ideal],
                ":", color="gray", label="ideal: dense latency x MAC ratio")
    if report.dense_ms:
        ax.axhline(report.dense_ms, color="black", linewidth=0.8, label="dense")
    ax.set_xlabel("pruning ratio (channels removed / weights zeroed)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title(Path(report.model).name)
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
