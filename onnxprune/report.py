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
    kind: str = "channels"  # "channels" | "heads" | "neurons" (plan.kind_of)

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
class AnalysisReport:
    groups: list[GroupReport]
    totals: Totals
    prunable_macs: int  # MACs of layers whose output or input channels are in a prunable group
    prunable_macs_both_sides: int = 0  # ... of those whose output and input channels both are
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

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
    finetune: Optional[dict] = None  # finetune.train.FinetuneReport.to_dict() after --finetune-epochs

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
            "finetune": self.finetune,
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
        lines.append(
            f"groups: {len(self.groups)}, pruned {len(self.pruned_groups)}, blocked {len(self.blocked_groups)}"
            f"   (MACs counted at {_shapes(self.input_shapes)})"
        )
        lines += _blocked_summary(self.blocked_groups)
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
