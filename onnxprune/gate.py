"""A gate for pipelines: does a pruned model meet the thresholds of a policy? `onnxprune check` runs it.

Thresholds:
- fidelity: verify's gates (verify.Gates: --max-rel-error, --min-cosine, --min-top1, --max-abs,
  --max-accuracy-drop with labelled data, and any gate verify adds, by its field name in a policy file), checked
  by verify.compare itself, with verify's warnings where a statistic says little;
- speed: --min-speedup, measured with bench's method (bench.bench: interleaved rounds, a control row, a 95%
  interval from resampled rounds). It passes only when the interval's lower end clears the threshold by more
  than the control's noise (the noise is a fraction of the speedup: the bound is low * (1 - noise)). Where the
  interval clears it but the noise does not, or misses it by less than the noise, the answer is "open";
- cost: --max-size-ratio (bytes on disk, external data included) and --max-macs-ratio (at the same input shapes).
A policy file (TOML) holds the same settings under the options' names (see docs/pipeline.md); options given on
the command line override it. Every threshold yields a Criterion: pass, fail or open; the check passes when
all pass.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

from .errors import OptionError
from .verify import Gates, VerifyReport

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

GATE_FIELDS = tuple(f.name for f in dataclasses.fields(Gates))
PATH_KEYS = ("data", "labels")


@dataclass
class CheckPolicy:
    """Thresholds (None: not checked) and how to measure them."""

    gates: Gates = field(default_factory=Gates)  # verify's fidelity gates
    min_speedup: Optional[float] = None
    max_size_ratio: Optional[float] = None
    max_macs_ratio: Optional[float] = None
    data: Optional[str] = None  # inputs (.npz) for fidelity; random inputs otherwise
    labels: Optional[str] = None  # class ids (.npy) for --max-accuracy-drop
    samples: int = 4  # random input samples when there is no data
    seed: int = 0
    shapes: dict = field(default_factory=dict)  # pinned input dims (fidelity, MACs, speed)
    provider: str = "cpu"
    batch: Optional[int] = None
    threads: int = 1
    rounds: int = 10
    runs: int = 5
    warmup: int = 5

    @classmethod
    def keys(cls) -> list[str]:
        """The settings a policy file or the command line may give, by option name."""
        own = [f.name for f in dataclasses.fields(cls) if f.name not in ("gates", "shapes")]
        return sorted(_option(k) for k in own + list(GATE_FIELDS) + ["shape"])

    def updated(self, values: Mapping[str, object], label: str = "the command line") -> "CheckPolicy":
        """A copy with `values` (option names, dashes or underscores; None values are skipped) applied."""
        own = {f.name for f in dataclasses.fields(self)} - {"gates", "shapes"}
        gates, changes = {}, {}
        for key, value in values.items():
            if value is None:
                continue
            name = key.replace("-", "_")
            if name in GATE_FIELDS:
                gates[name] = _number(value, key, label)
            elif name == "shape":
                from .inputs import parse_shapes

                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                    raise OptionError(f"{label}: 'shape' takes NAME=AxBxC strings, got {value!r}")
                if value:
                    changes["shapes"] = parse_shapes(value)
            elif name in own:
                changes[name] = value
            else:
                raise OptionError(f"{label}: unknown setting {key!r}; known: {', '.join(self.keys())}")
        policy = dataclasses.replace(self, gates=dataclasses.replace(self.gates, **gates), **changes)
        policy.validate(label)
        return policy

    def validate(self, label: str = "policy") -> None:
        from .bench import PROVIDERS

        self.gates.validate()
        for name in ("min_speedup", "max_size_ratio", "max_macs_ratio"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                          and math.isfinite(value) and value > 0):
                raise OptionError(f"{label}: --{_option(name)} must be a positive number, got {value!r}")
        for name in ("samples", "seed", "threads", "rounds", "runs", "warmup", "batch"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise OptionError(f"{label}: --{_option(name)} must be a whole number >= 0, got {value!r}")
        if self.provider not in PROVIDERS:
            raise OptionError(f"{label}: --provider must be one of {', '.join(PROVIDERS)}, got {self.provider!r}")
        if self.min_speedup is not None and self.rounds < 2:
            raise OptionError(f"{label}: --min-speedup needs --rounds of at least 2 for its 95% interval")
        for name in PATH_KEYS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise OptionError(f"{label}: --{name} must be a path, got {value!r}")

    @property
    def thresholds(self) -> dict:
        out = {_option(k): v for k, v in self.gates.to_dict().items() if v is not None}
        out.update({_option(k): getattr(self, k) for k in ("min_speedup", "max_size_ratio", "max_macs_ratio")
                    if getattr(self, k) is not None})
        return out

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "gates"}
        d["gates"] = self.gates.to_dict()
        return d


def _option(name: str) -> str:
    return name.replace("_", "-")


def _number(value, key: str, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"{label}: {key!r} must be a number, got {value!r}")
    return float(value)


def load_policy(path: Union[str, os.PathLike], base: Optional[CheckPolicy] = None) -> CheckPolicy:
    """A policy from a TOML file: top-level keys named as check's options (min-cosine = 0.99, provider = "cpu",
    shape = ["input=1x3x224x224"], ...). Relative data/labels paths are read from the file's folder."""
    from .io import read_document

    p = Path(path)
    values = read_document(p, tomllib.loads, (tomllib.TOMLDecodeError,), f"--policy {p} (TOML)")
    for key, value in values.items():
        if isinstance(value, dict):
            raise OptionError(f"--policy {p}: settings are top-level keys; [{key}] is a table")
        if key in PATH_KEYS and isinstance(value, str) and not os.path.isabs(value):
            values[key] = str(p.parent / value)
    return (base or CheckPolicy()).updated(values, f"--policy {p}")


# ---------------------------------------------------------------------------------------------------------------
# The check


@dataclass
class Criterion:
    name: str  # the option: "min-cosine", "min-speedup", ...
    threshold: Optional[float]
    value: Optional[float]  # what was measured (the worst output for per-output gates)
    status: str  # "pass" | "fail" | "open"
    detail: str

    def to_dict(self) -> dict:
        return {"name": self.name, "threshold": self.threshold, "value": _json_float(self.value),
                "status": self.status, "detail": self.detail}


@dataclass
class CheckReport:
    dense: str
    pruned: str
    policy: CheckPolicy
    criteria: list[Criterion]
    fidelity: VerifyReport
    sizes: tuple[int, int]  # bytes on disk: dense, pruned
    macs: tuple[int, int]
    bench: Optional[object] = None  # bench.BenchReport, when --min-speedup was given
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.status == "pass" for c in self.criteria)

    @property
    def failed(self) -> list[Criterion]:
        return [c for c in self.criteria if c.status != "pass"]

    def to_dict(self) -> dict:
        return {
            "dense": self.dense, "pruned": self.pruned, "passed": self.passed,
            "criteria": [c.to_dict() for c in self.criteria],
            "thresholds": self.policy.thresholds, "policy": self.policy.to_dict(),
            "sizes": {"dense": self.sizes[0], "pruned": self.sizes[1]},
            "macs": {"dense": self.macs[0], "pruned": self.macs[1]},
            "fidelity": self.fidelity.to_dict(),
            "bench": None if self.bench is None else self.bench.to_dict(),
            "notes": self.notes,
        }


def check(dense: Union[str, os.PathLike], pruned: Union[str, os.PathLike], policy: CheckPolicy, *,
          progress=None) -> CheckReport:
    """Measure `pruned` against `dense` and judge every threshold of `policy` (both are model files)."""
    from .cost import count_cost
    from .inputs import counting_shapes
    from .io import load_model
    from .provenance import model_disk_bytes
    from .verify import compare

    policy.validate()
    if not policy.thresholds:
        raise OptionError("no threshold given: a check with nothing to check passes everything; give --policy or "
                          "at least one of --max-rel-error, --min-cosine, --min-top1, --max-abs, "
                          "--max-accuracy-drop, --min-speedup, --max-size-ratio, --max-macs-ratio")
    dense, pruned = str(dense), str(pruned)
    sizes = (model_disk_bytes(dense), model_disk_bytes(pruned))
    dense_proto = load_model(dense)
    measured, notes = counting_shapes(dense_proto, policy.shapes, what="fidelity, MACs and speed are measured")
    data = fidelity_data(policy, dense_proto)
    dense_cost = count_cost(dense_proto, measured)
    del dense_proto
    macs = (dense_cost.macs, count_cost(load_model(pruned), measured).macs)
    fidelity = compare(dense, pruned, data.feeds, gates=policy.gates, labels=data.labels, inputs=data.inputs)
    notes += fidelity_notes(policy, fidelity, len(data.feeds))
    criteria = fidelity_criteria(fidelity)
    if policy.max_size_ratio is not None:
        criteria.append(_at_most("max-size-ratio", sizes[1] / sizes[0], policy.max_size_ratio,
                                 f"{sizes[1]:,} / {sizes[0]:,} bytes on disk"))
    if policy.max_macs_ratio is not None:
        ratio = macs[1] / macs[0] if macs[0] else float("nan")
        criteria.append(_at_most("max-macs-ratio", ratio, policy.max_macs_ratio, f"{macs[1]:,} / {macs[0]:,} MACs"))
    bench_report = None
    if policy.min_speedup is not None:
        from .bench import BenchConfig, bench

        config = BenchConfig(providers=(policy.provider,), batches=(policy.batch,) if policy.batch else None,
                             threads=(policy.threads,), warmup=policy.warmup, runs=policy.runs, rounds=policy.rounds,
                             shapes=dict(policy.shapes), seed=policy.seed, require_provider=True)
        bench_report = bench([dense, pruned], config, progress=progress)
        criteria.append(speed_criterion(bench_report, policy.min_speedup))
    return CheckReport(dense, pruned, policy, criteria, fidelity, sizes, macs, bench_report, notes)


@dataclass
class FidelityData:
    """What a policy's fidelity thresholds are judged on."""

    feeds: list  # input feeds (dicts of arrays)
    inputs: str  # where they come from: "--data X.npz" or "random"
    labels: Optional[object] = None  # class ids (numpy array) for --max-accuracy-drop


def fidelity_data(policy: CheckPolicy, dense) -> FidelityData:
    """The policy's --data (and --labels), or its random inputs (at inputs.counting_shapes' sizes where the policy
    pins none), for `dense` (a ModelProto)."""
    from .inputs import counting_shapes, load_inputs_npz, make_inputs
    from .verify import load_labels

    if policy.labels is not None and policy.data is None:
        raise OptionError("--labels needs the inputs they label: give --data X.npz")
    if policy.gates.max_accuracy_drop is not None and policy.labels is None:
        raise OptionError("--max-accuracy-drop needs --labels (and --data)")
    labels = load_labels(policy.labels) if policy.labels is not None else None
    if policy.data is not None:
        return FidelityData(load_inputs_npz(policy.data, dense), f"--data {policy.data}", labels)
    shapes = counting_shapes(dense, policy.shapes)[0]
    return FidelityData(make_inputs(dense, shapes, samples=policy.samples, seed=policy.seed), "random")


def fidelity_notes(policy: CheckPolicy, report: VerifyReport, batches: int) -> list[str]:
    """verify's warnings about the gates, and what judging them on random inputs means."""
    notes = [f"warning: {w}" for w in report.gate_warnings]
    notes += [f"warning: output {o.name!r}: {o.warnings[0]}" for o in report.outputs if o.constant]
    if policy.data is None and report.gates.any:
        notes.append(f"the fidelity thresholds were judged on {batches} batch(es) of random inputs: they say how "
                     "much the function changed on noise, not accuracy on real data (give --data)")
    return notes


def fidelity_criteria(report: VerifyReport) -> list[Criterion]:
    """One criterion per gate verify was given, judged by verify's own failures (and their messages)."""
    out = []
    gates = report.gates.to_dict()
    for gate, threshold in gates.items():
        if threshold is None:
            continue
        failed = [f for f in report.failures if f.gate == gate]
        value = _observed(report, gate)
        detail = "; ".join(str(f) for f in failed) or _observed_text(report, gate)
        out.append(Criterion(_option(gate), threshold, value, "fail" if failed else "pass", detail))
    out += [Criterion(_option(f.gate), f.threshold, f.value, "fail", str(f)) for f in report.failures
            if f.gate not in gates]
    return out


def _observed(report: VerifyReport, gate: str) -> Optional[float]:
    if gate == "max_accuracy_drop":
        return None if report.accuracy is None else report.accuracy.drop
    values = [o.statistics.get(gate) for o in report.outputs]  # as observed, also where it can be fooled
    values = [v for v in values if v is not None]
    if not values:
        return None
    if any(isinstance(v, float) and math.isnan(v) for v in values):
        return float("nan")
    return min(values) if gate.startswith("min_") else max(values)


def _observed_text(report: VerifyReport, gate: str) -> str:
    if gate == "max_accuracy_drop" and report.accuracy is not None:
        a = report.accuracy
        return f"accuracy {a.dense:.4f} -> {a.pruned:.4f} on {a.samples} labelled samples"
    worst = "lowest" if gate.startswith("min_") else "highest"
    return f"{worst} over {len(report.outputs)} output(s), {report.samples} input batch(es)"


def _at_most(name: str, value: float, threshold: float, detail: str) -> Criterion:
    ok = value <= threshold  # NaN fails
    return Criterion(name, threshold, value, "pass" if ok else "fail", detail)


def speed_criterion(report, threshold: float) -> Criterion:
    """--min-speedup on a bench of [dense, pruned]: pass when the 95% interval's lower end, less the control's
    noise, clears the threshold; fail when its upper end, plus the noise, stays below; else open."""
    (_key, rows), = report.groups()
    row = next(r for r in rows[1:] if not r.control)
    noise = report.noise(rows)
    if row.status != "ok" or row.speedup is None or row.speedup_low is None or noise is None:
        return Criterion("min-speedup", threshold, row.speedup, "fail", f"not measured: {row.note or row.status}")
    low, high = row.speedup_low, row.speedup_high
    measured = (f"speedup {row.speedup:.2f}x, 95% interval {low:.2f}-{high:.2f}, control noise ±{noise * 100:.1f}% "
                f"({row.provider}, {row.threads} thread(s), batch {row.batch})")
    if low * (1 - noise) >= threshold:
        return Criterion("min-speedup", threshold, row.speedup, "pass", measured)
    if high * (1 + noise) < threshold:
        return Criterion("min-speedup", threshold, row.speedup, "fail", measured)
    if low >= threshold:
        why = "the interval clears it, but not by the control's noise"
    else:
        why = "the interval misses it by less than the control's noise"
    return Criterion("min-speedup", threshold, row.speedup, "open",
                     f"{measured}: {why}, so the answer is open; rerun with more --rounds, or on a quieter machine")


def _json_float(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None if value is None else str(value)
    return value


# ---------------------------------------------------------------------------------------------------------------
# Formatting

STATUS = {"pass": "pass", "fail": "FAIL", "open": "OPEN"}


def _value(c: Criterion) -> str:
    from .tables import num

    if c.value is None:
        return "-"
    return num(c.value, ".4f" if c.name != "min-speedup" else ".2f", "x" if c.name == "min-speedup" else "")


def _rows(report: CheckReport) -> list[list[str]]:
    return [[c.name, "-" if c.threshold is None else f"{c.threshold:g}", _value(c), STATUS[c.status], c.detail]
            for c in report.criteria]


def _verdict(report: CheckReport) -> str:
    if report.passed:
        return f"PASSED: {len(report.criteria)} threshold(s) met"
    return f"FAILED: {len(report.failed)} of {len(report.criteria)} threshold(s) not met: " + "; ".join(
        f"{c.name} {c.status}" for c in report.failed)


def format_table(report: CheckReport) -> str:
    from .tables import plain

    lines = [f"check: {report.pruned} against {report.dense}"]
    lines += plain([["threshold", "limit", "measured", "status", "detail"]] + _rows(report), (0, 3, 4))
    lines += [f"note: {n}" for n in report.notes]
    lines.append(_verdict(report))
    return "\n".join(lines)


def format_markdown(report: CheckReport) -> str:
    from .tables import markdown

    icon = "✅" if report.passed else "❌"
    lines = [f"### {icon} onnxprune check: {'passed' if report.passed else 'failed'}", "",
             f"`{report.pruned}` against `{report.dense}`", ""]
    lines += markdown(["threshold", "limit", "measured", "status", "detail"], _rows(report), (0, 3, 4))
    lines += [""] + [f"- note: {n}" for n in report.notes] + ([""] if report.notes else [])
    lines.append(_verdict(report))
    return "\n".join(lines) + "\n"
