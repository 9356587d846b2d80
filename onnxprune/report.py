"""Reports of `analyze` and `prune`: dataclasses with `to_dict()` and plain-text tables."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class GroupReport:
    id: int
    channels: int
    kept: int
    prunable: bool
    members: list[str]
    reasons: list[str] = field(default_factory=list)
    unit: int = 1  # tensor channels per group index (head_dim for attention heads)
    note: str = ""  # why a prunable group was left whole (e.g. excluded by --exclude)
    kind: str = "channels"  # "channels" | "heads" | "neurons" | "units" (plan.kind_of)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Totals:
    params: int
    macs: int
    size_bytes: Optional[int] = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BlockReport:
    """A removable residual block (blocks.Block): y = x + f(x), where f is `nodes` nodes ending at the Add."""

    name: str  # the branch's nodes' common name prefix
    add: str  # the Add node
    nodes: int
    params: int
    macs: int
    kernels: Optional[int] = None  # onnxruntime nodes of the branch and the Add once it has optimized the graph
    score: Optional[float] = None  # ||f(x)|| / ||x|| with calibration data, else the weight proxy
    removed: bool = False
    note: str = ""  # why it was kept whatever its score (excluded by --exclude)

    def to_dict(self) -> dict:
        return asdict(self)


def format_blocks(blocks: list[BlockReport], total_macs: int, kernels_total: Optional[int]) -> list[str]:
    """The block table of `inspect` and `prune`: name, Add node, nodes, MACs, kernels, score."""
    scored = any(b.score is not None for b in blocks)
    lines = [f"{'block':<28}  {'add node':<28}  {'nodes':>5}  {'MACs':>14}  {'kernels':>7}" + ("  score" if scored else "")]
    for b in blocks:
        kernels = "?" if b.kernels is None else str(b.kernels)
        line = f"{_cut(b.name, 28):<28}  {_cut(b.add, 28):<28}  {b.nodes:>5}  {b.macs:>14,}  {kernels:>7}"
        if scored:
            line += f"  {b.score:.4g}" + ("  removed" if b.removed else f"  {b.note}" if b.note else "")
        lines.append(line)
    macs = sum(b.macs for b in blocks)
    share = f" ({macs / total_macs:.1%} of the model)" if total_macs else ""
    summary = f"removable blocks: {len(blocks)}, MACs {macs:,}{share}"
    if kernels_total and all(b.kernels is not None for b in blocks):
        summary += f", kernels {sum(b.kernels for b in blocks)} of {kernels_total} after onnxruntime's optimizations"
    return lines + [summary]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width // 2 - 1] + "..." + text[-(width - width // 2 - 2):]


@dataclass
class DepthReport:
    """Depth pruning: every removable block found, with its score, and which were removed."""

    blocks: list[BlockReport]
    scored_by: str  # "calibration" (||f(x)|| / ||x||), "weights" (block_scores.py's proxy) or "the plan" (apply-plan)
    kernels_before: Optional[int] = None  # onnxruntime nodes of the optimized dense model (kernels.py)
    kernels_after: Optional[int] = None  # ... of the pruned model

    @property
    def removed(self) -> list[BlockReport]:
        return [b for b in self.blocks if b.removed]

    def to_dict(self) -> dict:
        return {"blocks": [b.to_dict() for b in self.blocks], "found": len(self.blocks),
                "removed": len(self.removed), "scored_by": self.scored_by,
                "kernels_before": self.kernels_before, "kernels_after": self.kernels_after}

    def summary(self) -> str:
        names = ", ".join(f"{b.name} ({b.score:.3g})" for b in self.removed)
        how = "as the plan says" if self.scored_by == "the plan" else f"lowest scores by {self.scored_by}"
        text = f"blocks: removed {len(self.removed)} of {len(self.blocks)} removable ({how}): {names}"
        if self.kernels_before and self.kernels_after:
            text += f"\nkernels after onnxruntime's optimizations: {self.kernels_before} -> {self.kernels_after}"
        return text


@dataclass
class AnalysisReport:
    groups: list[GroupReport]
    totals: Totals
    prunable_macs: int  # MACs of layers whose output or input channels are in a prunable group
    prunable_macs_both_sides: int = 0  # ... of those whose output and input channels both are
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    blocks: list[BlockReport] = field(default_factory=list)  # removable residual blocks (depth pruning)
    kernels_total: Optional[int] = None  # onnxruntime nodes of the whole optimized model

    @property
    def prunable_groups(self) -> list[GroupReport]:
        return [g for g in self.groups if g.prunable]

    @property
    def prunable_mac_share(self) -> float:
        return self.prunable_macs / self.totals.macs if self.totals.macs else 0.0

    @property
    def both_sides_mac_share(self) -> float:
        return self.prunable_macs_both_sides / self.totals.macs if self.totals.macs else 0.0

    def to_dict(self) -> dict:
        return {
            "groups": [g.to_dict() for g in self.groups],
            "totals": self.totals.to_dict(),
            "prunable_groups": len(self.prunable_groups),
            "blocked_groups": len(self.groups) - len(self.prunable_groups),
            "prunable_macs": self.prunable_macs,
            "prunable_mac_share": round(self.prunable_mac_share, 4),
            "prunable_macs_both_sides": self.prunable_macs_both_sides,
            "both_sides_mac_share": round(self.both_sides_mac_share, 4),
            "input_shapes": self.input_shapes,
            "notes": self.notes,
            "blocks": [b.to_dict() for b in self.blocks],
            "kernels_total": self.kernels_total,
        }

    def format(self, members: int = 4) -> str:
        lines = [f"{'group':>5}  {'size':>6}  {'kind':<8}  {'unit':>4}  {'status':<8}  members / reason"]
        for g in self.groups:
            shown = ", ".join(g.members[:members]) + (f", +{len(g.members) - members} more" if len(g.members) > members else "")
            status = "prunable" if g.prunable else "blocked"
            lines.append(f"{g.id:>5}  {g.channels:>6}  {g.kind:<8}  {g.unit:>4}  {status:<8}  {shown}")
            if not g.prunable:
                lines.append(f"{'':>41}why: {g.reasons[0]}" + (f" (+{len(g.reasons) - 1} more)" if len(g.reasons) > 1 else ""))
        t = self.totals
        if self.blocks:
            lines += [""] + format_blocks(self.blocks, t.macs, self.kernels_total)
        lines += [
            "",
            f"groups: {len(self.groups)} ({len(self.prunable_groups)} prunable, {len(self.groups) - len(self.prunable_groups)} blocked)",
            f"params: {t.params:,}   MACs: {t.macs:,} at {_shapes(self.input_shapes)}",
            f"MACs in layers with prunable channels: {self.prunable_mac_share:.1%} (input and output both prunable: "
            f"{self.both_sides_mac_share:.1%})",
            "  (at --ratio r a layer loses about r of its MACs when one side is prunable, 2r - r*r when both are)",
        ]
        if any(g.kind == "heads" and g.prunable for g in self.groups):
            lines.append("heads: each index is a whole attention head of `unit` features; its score is the L1 norm of "
                         "its Q, K and V projection weights plus the output projection's weights that read it "
                         "(--heads-ratio prunes them apart from --ratio)")
        if any(g.kind == "neurons" and g.prunable for g in self.groups):
            lines.append("neurons: output features of MatMul/Gemm layers (a transformer's FFN intermediates, an MLP's "
                         "hidden units); --ffn-ratio prunes them apart from --ratio")
        if any(g.kind == "units" and g.prunable for g in self.groups):
            lines.append("units: hidden units of LSTM/GRU/RNN layers, each removed from every gate and direction at "
                         "once; they follow --ratio")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class PruneReport:
    before: Totals
    after: Totals
    groups: list[GroupReport]
    options: dict
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    recovery: Optional[dict] = None  # recovery.RecoveryReport.to_dict() when calibration data was given
    warnings: list[str] = field(default_factory=list)  # an option that had no effect (errors.OnnxPruneWarning)
    depth: Optional[DepthReport] = None  # with --depth-ratio / --remove-blocks
    latency: Optional[dict] = None  # latency_target.LatencyReport.to_dict() under a latency target
    finetune: Optional[dict] = None  # finetune.train.FinetuneReport.to_dict() after --finetune-epochs
    search: Optional[dict] = None  # policy_search.SearchReport.to_dict() after --within POLICY

    @property
    def pruned_groups(self) -> list[GroupReport]:
        return [g for g in self.groups if g.kept < g.channels]

    @property
    def blocked_groups(self) -> list[GroupReport]:
        return [g for g in self.groups if not g.prunable]

    def to_dict(self) -> dict:
        return {
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "params_ratio": _ratio(self.after.params, self.before.params),
            "macs_ratio": _ratio(self.after.macs, self.before.macs),
            "groups": [g.to_dict() for g in self.groups],
            "pruned_groups": len(self.pruned_groups),
            "blocked_groups": len(self.blocked_groups),
            "options": self.options,
            "recovery": self.recovery,
            "depth": self.depth.to_dict() if self.depth is not None else None,
            "latency": self.latency,
            "finetune": self.finetune,
            "search": self.search,
            "input_shapes": self.input_shapes,
            "notes": self.notes,
            "warnings": self.warnings,
        }

    def format(self) -> str:
        b, a = self.before, self.after
        rows = [("params", b.params, a.params), ("MACs", b.macs, a.macs)]
        if b.size_bytes is not None and a.size_bytes is not None:
            rows.append(("file size (bytes)", b.size_bytes, a.size_bytes))
        lines = [f"{'':<18}{'before':>16}{'after':>16}{'ratio':>8}"]
        for label, x, y in rows:
            lines.append(f"{label:<18}{x:>16,}{y:>16,}{_ratio(y, x):>8.3f}")
        lines.append("")
        if self.depth is not None:
            lines += format_blocks(self.depth.blocks, b.macs, self.depth.kernels_before)[:-1]
            lines.append(self.depth.summary())
        counted = f"(MACs counted at {_shapes(self.input_shapes)})"
        if self.groups or self.depth is None:
            lines.append(f"groups: {len(self.groups)}, pruned {len(self.pruned_groups)}, blocked "
                         f"{len(self.blocked_groups)}   {counted}")
        else:
            lines.append(counted)
        lines += _blocked_summary(self.blocked_groups)
        pruned_notes: dict[str, int] = {}
        for g in self.pruned_groups:
            if g.note:
                key = re.sub(r"^\d+ x \d+ features: ", "", g.note)
                pruned_notes[key] = pruned_notes.get(key, 0) + 1
        lines += [f"  pruned x{n}: {note}" for note, n in pruned_notes.items()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


SHOWN_REASONS = 8


def _blocked_summary(blocked: list[GroupReport]) -> list[str]:
    """One line per kind of reason (the same reason at other layers, quoted names aside, counts as one kind), most
    frequent first; the first SHOWN_REASONS kinds, then how many more."""
    kinds: dict[str, list[str]] = {}
    for g in blocked:
        kinds.setdefault(re.sub(r"'[^']*'", "''", g.reasons[0]), []).append(g.reasons[0])
    ordered = sorted(kinds.values(), key=len, reverse=True)
    lines = [f"  blocked x{len(r)}: {r[0]}" + (f" (and {len(r) - 1} more like it)" if len(r) > 1 else "")
             for r in ordered[:SHOWN_REASONS]]
    rest = ordered[SHOWN_REASONS:]
    if rest:
        lines.append(f"  +{len(rest)} more reasons ({sum(len(r) for r in rest)} groups): onnxprune inspect lists "
                     "every group")
    return lines


def _ratio(x: int, y: int) -> float:
    return round(x / y, 4) if y else 1.0


def _shapes(shapes: dict[str, list[int]]) -> str:
    return ", ".join(f"{k}={shape_text(v)}" for k, v in shapes.items()) or "the declared input shapes"


def shape_text(dims) -> str:
    """1x3x224x224; a scalar (no dims) as "scalar"."""
    return "x".join(map(str, dims)) or "scalar"
