"""A pruning plan on disk: which channels every group keeps, keyed by names that survive a re-export.

`prune --plan-out` writes it, `apply-plan` (api.apply_plan) reads it. A group is named by the weights it slices:
each *place* is (weight initializer, axis, offset of the group's channels along that axis). Weight names are what
an exporter keeps when it renames or reorders nodes; a weight held by a Constant node (no stable name) is named
by the node that reads it instead. Matching a plan to a model compares these keys and the channel counts and
names the first difference. The file is written deterministically: the same plan gives the same bytes.
See docs/pipeline.md for the format.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .deps.context import Analysis, Group
from .errors import OptionError, PlanMismatchError
from .plan import GroupDecision, Plan, PlanOptions

PLAN_FORMAT = "onnxprune-plan"
PLAN_VERSION = 2  # 2: removed residual blocks ("blocks"); version 1 plans (channels only) are read too
READS_VERSIONS = (1, 2)

Key = tuple  # ("weight" | "node", name, axis, offset)


@dataclass
class PlannedGroup:
    places: list[Key]  # sorted, unique: the group's stable name
    channels: int
    kept: list[int]  # sorted group indices that stay
    kind: str = "channels"
    unit: int = 1
    note: str = ""  # why a prunable group was kept whole (excluded by --exclude)

    def describe(self) -> str:
        kind, name, axis, offset = self.places[0]
        where = f"weight '{name}'" if kind == "weight" else f"node '{name}'"
        return f"{where} axis {axis}" + (f" at {offset}" if offset else "")

    def to_dict(self) -> dict:
        return {
            "places": [{kind: name, "axis": axis, "offset": offset} for kind, name, axis, offset in self.places],
            "channels": self.channels, "kind": self.kind, "unit": self.unit, "note": self.note, "kept": self.kept,
        }


@dataclass
class PlanFile:
    source_sha256: str  # of the model the plan was made on
    options: dict  # the prune options (plan options, criterion, recover, calib_samples)
    groups: list[PlannedGroup]
    shapes: dict = field(default_factory=dict)  # --shape values the analysis ran with
    onnxprune: str = ""
    source_name: str = ""
    blocks: list = field(default_factory=list)  # removed residual blocks: {"add": node name, "weights": [...]}

    def plan_options(self) -> PlanOptions:
        names = PlanOptions.__dataclass_fields__
        values = {k: v for k, v in self.options.items() if k in names}
        values["exclude"] = tuple(values.get("exclude", ()))
        return PlanOptions(**values)

    @property
    def recover(self) -> str:
        return self.options.get("recover", "none")

    def to_json(self) -> str:
        """Deterministic text: fixed key order, one line per group."""
        head = {
            "format": PLAN_FORMAT, "version": PLAN_VERSION, "onnxprune": self.onnxprune,
            "source": {"name": self.source_name, "sha256": self.source_sha256},
            "options": self.options, "shapes": self.shapes, "groups": "@GROUPS@",
        }
        if self.blocks:
            head["blocks"] = self.blocks
        lines = ",\n    ".join(json.dumps(g.to_dict()) for g in self.groups)
        return json.dumps(head, indent=2).replace('"@GROUPS@"', "[\n    " + lines + "\n  ]" if lines else "[]") + "\n"

    def save(self, path: Union[str, os.PathLike], *, inputs=(), force: bool = False) -> Path:
        from .io import write_text

        return write_text(path, self.to_json(), inputs=inputs, force=force)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "PlanFile":
        from .io import read_document

        doc = read_document(path, json.loads, (json.JSONDecodeError,), f"plan {path}")
        return cls.from_dict(doc, label=f"plan {path}")

    @classmethod
    def from_dict(cls, doc, label: str = "plan") -> "PlanFile":
        if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
            raise OptionError(f"{label}: not an onnxprune plan (no \"format\": \"{PLAN_FORMAT}\")")
        if doc.get("version") not in READS_VERSIONS:
            raise OptionError(f"{label}: plan format version {doc.get('version')!r}; this onnxprune reads versions "
                              f"{', '.join(map(str, READS_VERSIONS))}")
        try:
            groups = [_group_from_dict(g) for g in doc["groups"]]
            source = doc.get("source") or {}
            blocks = [{"add": str(b["add"]), "weights": [str(w) for w in b["weights"]]} for b in doc.get("blocks", [])]
            plan = cls(str(source.get("sha256", "")), dict(doc["options"]), groups, dict(doc.get("shapes") or {}),
                       str(doc.get("onnxprune", "")), str(source.get("name", "")), blocks)
            plan.plan_options().validate()
        except (KeyError, TypeError, ValueError) as exc:
            raise OptionError(f"{label}: malformed plan: {type(exc).__name__}: {exc}") from None
        except OptionError as exc:
            raise OptionError(f"{label}: malformed plan: {exc}") from None
        return plan

    def match(self, analysis: Analysis) -> Plan:
        """The plan as decisions on `analysis`'s groups; PlanMismatchError names the first difference."""
        return match_plan(self, analysis)


def _group_from_dict(d: dict) -> PlannedGroup:
    places = []
    for p in d["places"]:
        kind = "weight" if "weight" in p else "node"
        places.append((kind, str(p[kind]), int(p["axis"]), int(p["offset"])))
    group = PlannedGroup(sorted(set(places)), int(d["channels"]), [int(i) for i in d["kept"]], str(d.get("kind", "channels")),
                         int(d.get("unit", 1)), str(d.get("note", "")))
    kept = group.kept
    if not places or not kept or kept != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= group.channels:
        raise ValueError(f"group of {group.describe() if places else 'no places'}: kept indices must be sorted, "
                         f"unique, and lie in [0, {group.channels})")
    return group


def group_places(analysis: Analysis, group: Group) -> list[Key]:
    """The stable name of `group`: (weight, axis, offset) of every weight slice it owns, sorted; a constant that is
    no initializer (a Constant node's output, named after its node) is named by the node that reads it."""
    out = set()
    initializers = analysis.graph.initializers
    for place in group.places:
        offset = 0
        for seg in analysis.spaces.resolve(place.layout):
            if seg.space is group.space:
                break
            offset += seg.length
        if place.root in initializers:
            out.add(("weight", place.root, place.axis, offset))
        else:
            out.add(("node", place.node, place.axis, offset))
    return sorted(out)


def plan_file(analysis: Analysis, plan: Plan, options: dict, *, source_sha256: str, source_name: str = "",
              shapes: Optional[dict] = None, onnxprune: str = "") -> PlanFile:
    """The plan of a prune run, ready to save: every planned group with its stable name and kept indices."""
    from .plan import kind_of, unit_of

    ops = {node.name: node.op_type for node in analysis.graph.nodes()}
    groups = []
    for g in analysis.groups:
        decision = plan.decisions.get(g.id)
        if decision is None:
            continue
        groups.append(PlannedGroup(group_places(analysis, g), g.size, [int(i) for i in decision.kept],
                                   kind_of(g, analysis.spaces, ops), unit_of(g, analysis.spaces), decision.note))
    return PlanFile(source_sha256, dict(options), groups, {k: list(v) for k, v in (shapes or {}).items()},
                    onnxprune, source_name)


def match_plan(planned: PlanFile, analysis: Analysis) -> Plan:
    by_place: dict[Key, Group] = {}
    for g in analysis.groups:
        for key in group_places(analysis, g):
            by_place.setdefault(key, g)
    weights = set(analysis.graph.initializers)
    nodes = {n.name for n in analysis.graph.nodes()}
    plan = Plan(planned.plan_options())
    for i, entry in enumerate(planned.groups):
        label = f"plan group {i} ({entry.describe()})"
        for kind, name, axis, offset in entry.places:
            if kind == "weight" and name not in weights:
                raise PlanMismatchError(f"the plan does not fit: {label}: weight '{name}' is not in the model")
            if kind == "node" and name not in nodes:
                raise PlanMismatchError(f"the plan does not fit: {label}: node '{name}' is not in the model")
        group = by_place.get(entry.places[0])
        if group is None:
            raise PlanMismatchError(f"the plan does not fit: {label}: the model has no channel group there "
                                    "(other channel counts, or an exporter that changed the graph)")
        if group.size != entry.channels:
            raise PlanMismatchError(f"the plan does not fit: {label}: {entry.channels} channels in the plan, "
                                    f"{group.size} in the model")
        if not group.prunable:
            raise PlanMismatchError(f"the plan does not fit: {label}: the model's group cannot be pruned: {group.reasons[0]}")
        found = group_places(analysis, group)
        if found != entry.places:
            extra = sorted(set(found) - set(entry.places))
            missing = sorted(set(entry.places) - set(found))
            diff = (f"the model's group also slices {_place_text(extra[0])}" if extra
                    else f"the model's group does not slice {_place_text(missing[0])}")
            raise PlanMismatchError(f"the plan does not fit: {label}: {diff}")
        if group.id in plan.decisions:
            raise PlanMismatchError(f"the plan does not fit: {label}: two plan groups name the same model group")
        plan.decisions[group.id] = GroupDecision(group.id, group.size, np.asarray(entry.kept, dtype=np.int64), entry.note)
    for g in analysis.groups:
        if g.prunable and g.id not in plan.decisions:
            place = group_places(analysis, g)[0]
            raise PlanMismatchError(f"the plan does not fit: the model's prunable group of {_place_text(place)} "
                                    "has no entry in the plan")
    return plan


def _place_text(key: Key) -> str:
    kind, name, axis, offset = key
    return f"{kind} '{name}' axis {axis}" + (f" at {offset}" if offset else "")


def planned_block(block) -> dict:
    """How a plan names a removed block (blocks.Block): the initializers its branch reads, which a re-export of the
    same network keeps, and its Add node's name (used only for a branch without initializers)."""
    return {"add": block.add, "weights": list(block.weights)}


def match_blocks(planned: list[dict], found: list) -> list:
    """The blocks of this model (blocks.Block) that the plan's removed blocks name; PlanMismatchError for the
    first one that has no match."""
    chosen = []
    for p in planned:
        hits = [b for b in found if (set(b.weights) == set(p["weights"]) if p["weights"] else b.add == p["add"])]
        if not hits:
            key = f"weights {', '.join(p['weights'][:3])}" if p["weights"] else f"Add '{p['add']}'"
            raise PlanMismatchError(f"the plan does not fit: it removes the residual block with {key} "
                                    f"(Add '{p['add']}'), which this model has no removable block for")
        chosen.append(hits[0])
    return chosen
