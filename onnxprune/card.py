"""The model card of a prune run: report.json (schema in docs/report-schema.md) and report.md.

What went in (the source model's hash, the options), what came out (the output's hash, params, MACs and size
before and after, the groups pruned and declined with their reasons), how close the output stays to the source
(fidelity: verify's comparison), how fast it runs (a bench report, when one was run), what recovery did, the
command that reproduces the output, and the versions of the tools that made it.
The card is plain data: `ModelCard.to_dict()` is report.json, `to_markdown()` is report.md.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from .errors import OptionError
from .io import OutputError, write_text
from .tables import markdown

SCHEMA = "onnxprune-report"
SCHEMA_VERSION = 1
JSON_NAME, MARKDOWN_NAME = "report.json", "report.md"


@dataclass
class ModelFile:
    path: str
    sha256: str
    size_bytes: int

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "size_bytes": self.size_bytes}


@dataclass
class ModelCard:
    source: ModelFile
    output: ModelFile
    options: dict
    prune: dict  # report.PruneReport.to_dict()
    command: str  # a shell command that reproduces the output
    versions: dict
    plan: Optional[ModelFile] = None  # the plan written with the output (--plan-out)
    fidelity: Optional[dict] = None  # verify.VerifyReport.to_dict()
    bench: Optional[dict] = None  # bench.BenchReport.to_dict()
    bench_markdown: str = ""
    fidelity_text: str = ""  # verify's table
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        p = self.prune
        groups = p["groups"]
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "source": self.source.to_dict(),
            "output": self.output.to_dict(),
            "plan": None if self.plan is None else {"path": self.plan.path, "sha256": self.plan.sha256},
            "options": self.options,
            "input_shapes": p["input_shapes"],
            "totals": {
                "before": p["before"], "after": dict(p["after"], size_bytes=self.output.size_bytes), "params_ratio": p["params_ratio"],
                "macs_ratio": p["macs_ratio"], "size_ratio": _ratio(self.output.size_bytes, self.source.size_bytes),
            },
            "groups": {
                "pruned": [_group(g) for g in groups if g["kept"] < g["channels"]],
                "unchanged": [dict(_group(g), note=g["note"]) for g in groups if g["prunable"] and g["kept"] == g["channels"]],
                "declined": [dict(_group(g), reasons=g["reasons"]) for g in groups if not g["prunable"]],
            },
            "fidelity": self.fidelity,
            "bench": self.bench,
            "recovery": p["recovery"],
            "depth": p.get("depth"),
            "search": p.get("search"),
            "notes": [f"warning: {w}" for w in p.get("warnings", [])] + list(p["notes"]) + self.notes,
            "command": self.command,
            "versions": self.versions,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_markdown(self) -> str:
        return card_markdown(self.to_dict(), self.bench_markdown, self.fidelity_text)

    def write(self, directory: Union[str, os.PathLike]) -> list[Path]:
        """Write report.json and report.md into `directory` (created with its parents if missing), each
        atomically. Returns the two paths."""
        folder = Path(directory)
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder}: is a file, expected a folder for the report")
        inputs = (self.source.path, self.output.path)
        return [write_text(folder / JSON_NAME, self.to_json(), inputs=inputs),
                write_text(folder / MARKDOWN_NAME, self.to_markdown(), inputs=inputs)]


def _group(g: dict) -> dict:
    return {"id": g["id"], "kind": g["kind"], "channels": g["channels"], "kept": g["kept"], "unit": g["unit"],
            "members": g["members"]}


def _ratio(x: Optional[int], y: Optional[int]) -> Optional[float]:
    return round(x / y, 4) if x is not None and y else None


def model_file(path: Union[str, os.PathLike]) -> ModelFile:
    from .provenance import model_disk_bytes, model_sha256

    return ModelFile(str(path), model_sha256(path), model_disk_bytes(path))


# ---------------------------------------------------------------------------------------------------------------
# The reproducing command

# PlanOptions and prune settings -> the prune option that sets them (None: not an option of its own)
OPTION_FLAGS = {"ratio": "--ratio", "scope": "--scope", "max_ratio": "--max-ratio", "round_to": "--round-to",
                "min_channels": "--min-channels", "heads_ratio": "--heads-ratio", "ffn_ratio": "--ffn-ratio",
                "criterion": "--criterion", "recover": "--recover", "calib_samples": "--calib-samples",
                "depth_ratio": "--depth-ratio", "remove_blocks": "--remove-blocks"}


def prune_command(source: str, output: str, options: dict, shapes: Optional[dict] = None,
                  calib_args: Sequence[str] = ()) -> str:
    """The `onnxprune prune` command line that makes the same plan as `options` (a PruneReport's options), with
    `calib_args` naming the calibration data (api.calibration_args)."""
    args = ["onnxprune", "prune", source, "-o", output]
    for key, flag in OPTION_FLAGS.items():
        value = options.get(key)
        if value is None or (key == "calib_samples" and not value):
            continue
        args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    for pattern in options.get("exclude", ()):
        args += ["--exclude", pattern]
    for name, dims in (shapes or {}).items():
        args += ["--shape", f"{name}={'x'.join(map(str, dims))}"]
    return shlex.join(args + list(calib_args))


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def card_markdown(card: dict, bench_markdown: str = "", fidelity_text: str = "") -> str:
    t = card["totals"]
    before, after = t["before"], t["after"]
    lines = [f"# Model card: {Path(card['output']['path']).name}", ""]
    lines += markdown(["", "path", "SHA-256", "bytes"], [
        [what, f"`{f['path']}`", f"`{f['sha256']}`", f"{f['size_bytes']:,}"]
        for what, f in (("source", card["source"]), ("output", card["output"]))], (0, 1, 2))
    if card["plan"]:
        lines += ["", f"Plan: `{card['plan']['path']}` (SHA-256 `{card['plan']['sha256']}`)."]
    lines += ["", "## Size and cost", ""]
    rows = [["params", f"{before['params']:,}", f"{after['params']:,}", f"{t['params_ratio']:.3f}"],
            ["MACs", f"{before['macs']:,}", f"{after['macs']:,}", f"{t['macs_ratio']:.3f}"]]
    if t["size_ratio"] is not None:
        rows.append(["file size (bytes)", f"{card['source']['size_bytes']:,}", f"{card['output']['size_bytes']:,}",
                     f"{t['size_ratio']:.3f}"])
    lines += markdown(["", "before", "after", "ratio"], rows, (0,))
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in card["input_shapes"].items())
    lines += ["", f"MACs counted at {shapes or 'the declared input shapes'}.", "", "## Groups", ""]
    g = card["groups"]
    lines.append(f"{len(g['pruned'])} pruned, {len(g['unchanged'])} prunable but kept whole, "
                 f"{len(g['declined'])} declined.")
    if g["pruned"]:
        lines += [""] + markdown(["group", "kind", "channels", "kept", "members"], [
            [str(x["id"]), x["kind"], str(x["channels"]), str(x["kept"]), _members(x["members"])] for x in g["pruned"]],
            (0, 1, 4))
    reasons: dict[str, int] = {}
    for x in g["unchanged"]:
        key = x["note"] or "too small for --ratio/--round-to/--min-channels"
        reasons[f"kept whole: {key}"] = reasons.get(f"kept whole: {key}", 0) + 1
    for x in g["declined"]:
        reasons[f"declined: {x['reasons'][0]}"] = reasons.get(f"declined: {x['reasons'][0]}", 0) + 1
    if reasons:
        lines += [""] + markdown(["groups", "why"], [[str(n), r] for r, n in
                                                        sorted(reasons.items(), key=lambda kv: -kv[1])], (1,))
    depth = card.get("depth")
    if depth:
        removed = [b for b in depth["blocks"] if b["removed"]]
        lines += ["", "## Blocks", "", f"{len(removed)} of {len(depth['blocks'])} removable residual blocks removed "
                  f"(scored by {depth['scored_by']})" + (":" if removed else ".")]
        if removed:
            lines += [""] + markdown(["block", "add node", "MACs"], [
                [b["name"], f"`{b['add']}`", f"{b['macs']:,}"] for b in removed], (0, 1))
    search = card.get("search")
    if search:
        limits = ", ".join(f"{k} {v:g}" for k, v in search["thresholds"].items())
        lines += ["", "## Search within the policy", "", f"The highest `--ratio` that passes {search['policy']} "
                  f"({limits}, on {search['inputs']}): **{search['ratio']:g}**.", ""]
        lines += markdown(["ratio", "MACs kept", "fidelity", "verdict"], [
            [f"{x['ratio']:g}", f"{x['macs_ratio']:.3f}", x["criteria"], "pass" if x["passed"] else "fail"]
            for x in sorted(search["probes"], key=lambda x: x["ratio"])], (2, 3))
    lines += ["", "## Fidelity", ""]
    lines += _fidelity(card["fidelity"], fidelity_text)
    lines += ["", "## Speed", ""]
    lines += [bench_markdown.strip().replace("## Benchmark", "").strip()] if bench_markdown else [
        "Not measured with this card: `onnxprune bench SOURCE OUTPUT` or `onnxprune check --min-speedup`."]
    lines += ["", "## Recovery", ""]
    rec = card["recovery"]
    lines.append("No recovery (no calibration data)." if rec is None else
                 f"{rec['method']} on {rec['samples']} calibration samples, {rec['passes']} pass(es), "
                 f"{len(rec['layers'])} layer step(s).")
    if card["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in card["notes"]]
    versions = ", ".join(f"{k} {v}" for k, v in card["versions"].items())
    lines += ["", "## Reproduce", "", "```sh", card["command"], "```", "", f"Made with {versions}.", ""]
    return "\n".join(lines)


def _members(members: list[str], shown: int = 3) -> str:
    more = f", +{len(members) - shown} more" if len(members) > shown else ""
    return ", ".join(f"`{m}`" for m in members[:shown]) + more


def _fidelity(fidelity: Optional[dict], text: str) -> list[str]:
    if fidelity is None:
        return ["Not measured."]
    shapes = ", ".join(f"{k}{v}" for k, v in fidelity["input_shapes"].items())
    return [f"Dense vs pruned on {fidelity['samples']} input batch(es) ({shapes}), onnxruntime CPU "
            "(`onnxprune verify`):", "", "```", text.strip(), "```"]


# ---------------------------------------------------------------------------------------------------------------
# Building the card


@dataclass
class PruneFacts:
    """What a card needs of an api.PruneResult, without the models (so the CLI can free them first)."""

    report: object  # report.PruneReport
    source: Optional[str]
    shapes: dict
    calib_args: tuple  # api.PruneResult.calib_args

    @classmethod
    def of(cls, result) -> "PruneFacts":
        return cls(result.report, result.source, dict(result.shapes), tuple(result.calib_args))


def model_card(result, output: Union[str, os.PathLike], *, plan: Optional[Union[str, os.PathLike]] = None,
               command: Optional[str] = None, samples: int = 4, seed: int = 0, bench=None) -> ModelCard:
    """The card of `result` (api.PruneResult, pruned from a file) once its model is written to `output`.

    Fidelity: verify's comparison of the source and `output` on `samples` random inputs (0: not measured).
    `result` may be a PruneFacts. `bench`: a bench.BenchReport to include. `command` defaults to the `onnxprune prune` command equivalent to
    the result's options; `plan`: the plan file written with it.
    """
    from .bench import format_markdown
    from .provenance import file_sha256, versions
    from .inputs import counting_shapes, make_inputs
    from .io import load_model
    from .verify import compare, format_table

    result = result if isinstance(result, PruneFacts) else PruneFacts.of(result)
    if result.source is None:
        raise OptionError("a model card needs the source model's file: prune a path, not a ModelProto")
    options = result.report.options
    notes = []
    if command is None:
        command = prune_command(result.source, str(output), options, result.shapes, result.calib_args)
        if options.get("calib_samples") and not result.calib_args:
            notes.append("the calibration data was given in memory: the command needs it as --calib FILE.npz")
    fidelity = None
    if samples:
        feeds = make_inputs(result.source, counting_shapes(load_model(result.source), result.shapes or None)[0],
                            samples=samples, seed=seed)
        fidelity = compare(result.source, str(output), feeds, inputs="random")
    return ModelCard(
        source=model_file(result.source), output=model_file(output), options=options,
        prune=result.report.to_dict(), command=command, versions=versions(),
        plan=None if plan is None else ModelFile(str(plan), file_sha256(plan), Path(plan).stat().st_size),
        fidelity=None if fidelity is None else fidelity.to_dict(), bench=None if bench is None else bench.to_dict(),
        fidelity_text="" if fidelity is None else format_table(fidelity),
        bench_markdown="" if bench is None else format_markdown(bench), notes=notes,
    )
