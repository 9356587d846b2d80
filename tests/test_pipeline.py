"""Pipelines: pruning plans (prune --plan-out, apply-plan), the model card (--report) and the gate (check).

A plan replayed on its own model must give the same bytes; on a re-export (nodes renamed and reordered) a model
that matches the masking oracle; a plan that does not fit must fail on one line. The card must follow
docs/report-schema.md. The gate must judge with verify's and bench's own measures and exit 0/4/1. The
GitHub Actions example in docs/ is run as written.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.bench import BenchConfig, BenchReport, BenchRow
from onnxprune.gate import CheckPolicy, load_policy, speed_criterion
from onnxprune.inputs import make_inputs
from onnxprune.oracle import masked
from onnxprune.planfile import PlanFile
from oracle_check import run as ort_run
from cli_run import assert_error, assert_ok, run, snapshot

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
DIGITS = MODELS / "digits_resnet.onnx"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("ONNXPRUNE_DEBUG", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def _copy(tmp_path: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        shutil.copy(MODELS / name, tmp_path / name)
        out.append(tmp_path / name)
    return out


# ----------------------------------------------------------------------------------------------- plans

# groups of every kind: residuals (resnet), Concat offsets (c2f), depthwise (mobilenet), heads and FFN (bert),
# skips and Resize (unet)
PLAN_MODELS = ["resnet_tiny_ts.onnx", "c2f_tiny_ts.onnx", "mobilenetv2_tiny_ts.onnx", "tx_bert_ts.onnx",
               "unet_tiny_ts.onnx"]


@pytest.mark.parametrize("name", PLAN_MODELS)
def test_plan_replays_to_the_same_bytes(name):
    result = onnxprune.prune(MODELS / name, ratio=0.5, round_to=1)
    plan = onnxprune.pruning_plan(result)
    assert plan.to_json() == onnxprune.pruning_plan(onnxprune.prune(MODELS / name, ratio=0.5, round_to=1)).to_json()
    again = onnxprune.apply_plan(MODELS / name, PlanFile.from_dict(json.loads(plan.to_json())))
    assert again.model.SerializeToString() == result.model.SerializeToString()
    assert again.report.to_dict() == result.report.to_dict()


def test_cli_plan_and_apply_plan_same_bytes(tmp_path):
    model, = _copy(tmp_path, "digits_resnet.onnx")
    args = ["prune", model, "-o", tmp_path / "a.onnx", "--ratio", "0.4", "--round-to", "1", "--exclude", "*layer3*"]
    assert_ok(run(*args, "--plan-out", tmp_path / "plan.json"))
    first_plan = (tmp_path / "plan.json").read_bytes()
    assert_ok(run(*args, "--plan-out", tmp_path / "plan2.json"))
    assert (tmp_path / "plan2.json").read_bytes() == first_plan, "the plan file must be deterministic"
    result = run("apply-plan", model, tmp_path / "plan.json", "-o", tmp_path / "b.onnx")
    assert_ok(result)
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    assert "is not the model the plan was made on" not in result.stdout
    doc = json.loads(first_plan)
    assert doc["source"]["sha256"] == onnxprune.provenance.model_sha256(model)
    assert doc["onnxprune"] and doc["options"]["exclude"] == ["*layer3*"]
    assert any(g["note"].startswith("excluded by") for g in doc["groups"])
    assert all(p.get("weight") for g in doc["groups"] for p in g["places"]), "keyed by weight names"


def test_plan_with_recovery_needs_the_same_data(tmp_path):
    model, calib = _copy(tmp_path, "digits_resnet.onnx", "digits_calib.npz")
    assert_ok(run("prune", model, "-o", tmp_path / "a.onnx", "--ratio", "0.3", "--round-to", "1", "--calib", calib,
                  "--calib-samples", "16", "--criterion", "activation", "--plan-out", tmp_path / "plan.json"))
    before = snapshot(tmp_path)
    assert_error(run("apply-plan", model, tmp_path / "plan.json", "-o", tmp_path / "b.onnx"), 1, "--calib")
    assert snapshot(tmp_path) == before
    assert_ok(run("apply-plan", model, tmp_path / "plan.json", "-o", tmp_path / "b.onnx", "--calib", calib))
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    # on a model the plan does not fit, the mismatch comes first: no data would make it apply
    other, = _copy(tmp_path, "digits_cnn.onnx")
    before = snapshot(tmp_path)
    assert_error(run("apply-plan", other, tmp_path / "plan.json", "-o", tmp_path / "c.onnx"), 1, "does not fit")
    assert snapshot(tmp_path) == before


def test_plan_recovered_on_images_replays_with_the_same_images(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    from graphs import image_model

    images = tmp_path / "images"
    images.mkdir()
    for i in range(9):
        pixels = (np.random.default_rng(i).random((12, 10, 3)) * 255).astype(np.uint8)
        pil.fromarray(pixels).save(images / f"{i}.png")
    model = tmp_path / "m.onnx"
    onnx.save(image_model(), model)
    pictures = ["--calib-images", images, "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--size", "8x8"]
    assert_ok(run("prune", model, "-o", tmp_path / "a.onnx", "--round-to", "1", *pictures,
                  "--plan-out", tmp_path / "plan.json"))
    assert json.loads((tmp_path / "plan.json").read_text())["options"]["recover"] == "all"
    assert_ok(run("apply-plan", model, tmp_path / "plan.json", "-o", tmp_path / "b.onnx", *pictures))
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    assert_ok(run("apply-plan", model, tmp_path / "plan.json", "-o", tmp_path / "c.onnx", *pictures[:2]))
    assert (tmp_path / "c.onnx").read_bytes() != (tmp_path / "a.onnx").read_bytes(), "other preprocessing, other data"
    # through the API: the card's command names the same images with the same options
    folder = onnxprune.ImageFolder(images, onnxprune.ImageOptions((8, 8), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    result = onnxprune.prune(model, round_to=1, calib=folder)
    result.save(tmp_path / "d.onnx")
    assert (tmp_path / "d.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    command = shlex.split(onnxprune.model_card(result, tmp_path / "d.onnx", samples=0).command)
    os.remove(tmp_path / "d.onnx")
    assert_ok(run(*command[1:]))
    assert (tmp_path / "d.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()


def reexport(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """The same network as another export might write it: every node and activation renamed, nodes in another
    topologically valid order; weights (initializers) keep their names."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    keep = {vi.name for vi in graph.input} | {vi.name for vi in graph.output} | {t.name for t in graph.initializer}
    names = {}
    for i, node in enumerate(graph.node):
        node.name = f"exported_{len(graph.node) - i}"
        for j, name in enumerate(node.output):
            if name and name not in keep:
                names[name] = f"t{len(names)}_{name[::-1]}"
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for vi in graph.value_info:
        vi.name = names.get(vi.name, vi.name)
    rng = random.Random(seed)
    available = {""} | keep
    pending, order = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        assert ready, "the model is not a DAG of plain nodes"
        node = rng.choice(ready)
        pending.remove(node)
        order.append(node)
        available.update(node.output)
    copies = [onnx.NodeProto() for _ in order]
    for copy, node in zip(copies, order):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    onnx.checker.check_model(out)
    return out


@pytest.mark.parametrize("name", PLAN_MODELS)
def test_plan_applies_to_a_reexport(name, tmp_path):
    dense = onnx.load(MODELS / name)
    result = onnxprune.prune(dense, ratio=0.5, round_to=1)
    plan = onnxprune.pruning_plan(result, source_sha256="0" * 64)
    other = reexport(dense, seed=len(name))
    assert [n.name for n in other.graph.node] != [n.name for n in dense.graph.node]
    replayed = onnxprune.apply_plan(other, plan)
    onnx.checker.check_model(replayed.model, full_check=True)
    oracle = masked(other, replayed.masked_reads)
    for feeds in make_inputs(dense, samples=2, seed=3):
        want, got, original = ort_run(oracle, feeds), ort_run(replayed.model, feeds), ort_run(result.model, feeds)
        for w, g, o in zip(want, got, original):
            scale = max(float(np.max(np.abs(w))), 1e-6)
            assert float(np.max(np.abs(w.astype(np.float64) - g))) <= 1e-4 * scale, "differs from the masking oracle"
            assert float(np.max(np.abs(o.astype(np.float64) - g))) <= 1e-4 * scale, "differs from the original plan's model"
    assert replayed.report.after.macs == result.report.after.macs


def test_cli_apply_plan_to_a_reexport_notes_the_other_source(tmp_path):
    model, = _copy(tmp_path, "resnet_tiny_ts.onnx")
    assert_ok(run("prune", model, "-o", tmp_path / "a.onnx", "--ratio", "0.5", "--plan-out", tmp_path / "plan.json"))
    onnx.save(reexport(onnx.load(model), seed=1), tmp_path / "other.onnx")
    result = run("apply-plan", tmp_path / "other.onnx", tmp_path / "plan.json", "-o", tmp_path / "b.onnx")
    assert_ok(result)
    assert "is not the model the plan was made on" in result.stdout


def test_pipeline_outputs_go_into_new_folders_with_the_umask_permissions(tmp_path):
    """-o, --plan-out and --report create the folders they name, and every file gets what the umask gives a new
    file (0644 under umask 022), the text files as the model."""
    model, = _copy(tmp_path, "digits_resnet.onnx")
    old = os.umask(0o022)
    try:
        assert_ok(run("prune", model, "-o", tmp_path / "out" / "pruned.onnx", "--ratio", "0.5",
                      "--plan-out", tmp_path / "plans" / "plan.json", "--report", tmp_path / "cards" / "card"))
        assert_ok(run("apply-plan", model, tmp_path / "plans" / "plan.json", "-o", tmp_path / "again" / "m.onnx"))
    finally:
        os.umask(old)
    written = ["out/pruned.onnx", "plans/plan.json", "cards/card/report.json", "cards/card/report.md", "again/m.onnx"]
    assert {name: (tmp_path / name).stat().st_mode & 0o777 for name in written} == dict.fromkeys(written, 0o644)


def _plan_doc(tmp_path) -> dict:
    model, = _copy(tmp_path, "digits_resnet.onnx")
    assert_ok(run("prune", model, "-o", tmp_path / "a.onnx", "--ratio", "0.5", "--round-to", "1",
                  "--plan-out", tmp_path / "plan.json"))
    return json.loads((tmp_path / "plan.json").read_text())


def _apply(tmp_path, doc, model=None):
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    before = snapshot(tmp_path)
    result = run("apply-plan", model or tmp_path / "digits_resnet.onnx", tmp_path / "bad.json", "-o", tmp_path / "out.onnx")
    assert snapshot(tmp_path) == before, "a failed apply-plan must write nothing"
    return result


def test_plan_that_does_not_fit_names_the_first_mismatch(tmp_path):
    doc = _plan_doc(tmp_path)
    first = doc["groups"][1]["places"][0]["weight"]
    renamed = json.loads(json.dumps(doc))
    renamed["groups"][1]["places"][0]["weight"] = "no_such.weight"
    assert_error(_apply(tmp_path, renamed), 1, "plan group 1", "'no_such.weight'", "is not in the model")
    wider = json.loads(json.dumps(doc))
    wider["groups"][1]["channels"] = 40
    assert_error(_apply(tmp_path, wider), 1, "plan group 1", f"'{first}'", "40 channels in the plan, 32 in the model")
    fewer = json.loads(json.dumps(doc))
    del fewer["groups"][2]
    assert_error(_apply(tmp_path, fewer), 1, "has no entry in the plan")
    # another network: other weight names and channel counts
    other, = _copy(tmp_path, "digits_cnn.onnx")
    assert_error(_apply(tmp_path, doc, other), 1, "plan group 0", "is not in the model")


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.update(format="something"), "not an onnxprune plan"),
    (lambda d: d.update(version=99), "plan format version 99"),
    (lambda d: d["groups"][0].update(kept=[5, 3]), "kept indices must be sorted"),
    (lambda d: d["groups"][0].update(kept=[0, 999]), "kept indices must be sorted"),
    (lambda d: d["options"].update(ratio=3), "malformed plan: ratio must be in [0, 1), got 3"),
    (lambda d: d.pop("groups"), "malformed plan"),
])
def test_malformed_plan_is_one_line(tmp_path, edit, needle):
    doc = _plan_doc(tmp_path)
    edit(doc)
    assert_error(_apply(tmp_path, doc), 1, needle)


def test_plan_out_refuses_the_input(tmp_path):
    model, = _copy(tmp_path, "digits_resnet.onnx")
    before = snapshot(tmp_path)
    assert_error(run("prune", model, "-o", tmp_path / "a.onnx", "--plan-out", model), 1, "output is the input model")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("extra, needle", [
    (["--report-bench"], "--report-bench adds a benchmark to the model card"),
    (["--unstructured", "--sparsity", "0.5", "--plan-out", "plan.json"], "for structured pruning"),
])
def test_pipeline_option_errors(tmp_path, extra, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, = _copy(tmp_path, "digits_resnet.onnx")
    before = snapshot(tmp_path)
    assert_error(run("prune", model, "-o", "a.onnx", *extra), 1, needle)
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------------ card

SCHEMA_DOC = ROOT / "docs" / "report-schema.md"
TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list,
         "null": type(None)}


def documented_fields() -> dict[str, list[str]]:
    rows = re.findall(r"^\| `([^`]+)` \| ([a-z\\|]+) \|", SCHEMA_DOC.read_text(), flags=re.M)
    assert len(rows) > 40
    return {path: types.replace("\\", "").split("|") for path, types in rows}


def assert_follows_schema(card: dict) -> None:
    fields = documented_fields()

    def children(path: str) -> list[str]:
        prefix = f"{path}." if path else ""
        return [p for p in fields if p.startswith(prefix) and not re.search(r"\.|\[\]", p[len(prefix):])]

    def check(value, path: str) -> None:
        types = fields[path] if path else ["object"]
        assert any(isinstance(value, TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                   for t in types), f"{path}: {type(value).__name__} is not {'|'.join(types)}"
        if isinstance(value, dict):
            listed = children(path)
            if not listed:
                return  # another command's report, kept whole
            wildcard = f"{path}.*" if path else "*"
            if wildcard in listed:
                for v in value.values():
                    check(v, wildcard)
                return
            names = {p[len(path) + 1 if path else 0:] for p in listed}
            assert set(value) == names, f"{path or 'report'}: written {sorted(set(value) - names)}, " \
                                        f"missing {sorted(names - set(value))}"
            for key, v in value.items():
                check(v, f"{path}.{key}" if path else key)
        elif isinstance(value, list) and f"{path}[]" in fields:
            for v in value:
                check(v, f"{path}[]")

    check(card, "")
    assert card["schema"] == "onnxprune-report" and card["schema_version"] == onnxprune.card.SCHEMA_VERSION


def test_prune_report_follows_the_schema_and_reproduces(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _copy(tmp_path, "digits_resnet.onnx", "digits_calib.npz")
    args = ["prune", "digits_resnet.onnx", "-o", "p.onnx", "--ratio", "0.3", "--round-to", "1", "--calib",
            "digits_calib.npz", "--calib-samples", "16", "--exclude", "/layer3*", "--plan-out", "plan.json",
            "--report", "card", "--report-bench"]
    assert_ok(run(*args))
    card = json.loads((tmp_path / "card" / "report.json").read_text())
    assert_follows_schema(card)
    sha = onnxprune.provenance.model_sha256
    assert card["source"]["sha256"] == sha("digits_resnet.onnx") and card["output"]["sha256"] == sha("p.onnx")
    assert card["output"]["size_bytes"] == os.path.getsize("p.onnx") == card["totals"]["after"]["size_bytes"]
    assert card["plan"]["sha256"] == onnxprune.provenance.file_sha256("plan.json")
    assert card["groups"]["pruned"] and card["groups"]["declined"][0]["reasons"]
    assert card["groups"]["unchanged"][0]["note"].startswith("excluded by")
    assert card["fidelity"]["outputs"][0]["cosine"] > 0.5
    assert card["bench"]["rows"][1]["speedup"] > 0
    assert card["recovery"]["samples"] == 16
    assert set(card["versions"]) >= {"onnxprune", "onnx", "onnxruntime"}
    assert card["command"] == shlex.join(["onnxprune", *args])
    markdown = (tmp_path / "card" / "report.md").read_text()
    for needle in ("# Model card: p.onnx", card["output"]["sha256"], "## Fidelity", "### cpu, 1 thread, batch 1",
                   card["command"], "graph output 'logits' keeps its shape"):
        assert needle in markdown
    # the recorded command reproduces the output, byte for byte
    made = Path("p.onnx").read_bytes()
    os.remove("p.onnx")
    assert_ok(run(*shlex.split(card["command"])[1:]))
    assert Path("p.onnx").read_bytes() == made


def test_api_card_command_is_the_equivalent_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _copy(tmp_path, "c2f_tiny_ts.onnx")
    with pytest.warns(onnxprune.OnnxPruneWarning, match="'nothing\\*' matches no node"):
        result = onnxprune.prune("c2f_tiny_ts.onnx", ratio=0.4, scope="global", round_to=2, exclude=["nothing*"],
                                 shapes={"input": [1, 3, 32, 32]})
    result.save("api.onnx")
    card = onnxprune.model_card(result, "api.onnx", samples=2)
    paths = card.write("card")
    assert [p.name for p in paths] == ["report.json", "report.md"]
    assert_follows_schema(json.loads(paths[0].read_text()))
    assert card.bench is None and "Not measured" in paths[1].read_text()
    assert any(n.startswith("warning: exclude 'nothing*' matches no node") for n in card.to_dict()["notes"])
    command = shlex.split(card.command)
    assert command[:5] == ["onnxprune", "prune", "c2f_tiny_ts.onnx", "-o", "api.onnx"] and "--shape" in command
    made = Path("api.onnx").read_bytes()
    os.remove("api.onnx")
    assert_ok(run(*command[1:]))
    assert Path("api.onnx").read_bytes() == made


def test_api_card_with_calibration_in_memory_says_what_the_command_needs(tmp_path):
    data = np.load(MODELS / "digits_calib.npz")
    feeds = [{name: data[name][i:i + 1] for name in data.files} for i in range(8)]
    result = onnxprune.prune(DIGITS, ratio=0.3, round_to=1, calib=feeds)
    result.save(tmp_path / "p.onnx")
    card = onnxprune.model_card(result, tmp_path / "p.onnx", samples=0)
    assert card.fidelity is None and "--calib-samples 8" in card.command
    assert any("given in memory" in n for n in card.to_dict()["notes"])


def test_api_card_needs_a_source_file():
    result = onnxprune.prune(onnx.load(DIGITS), ratio=0.3)
    with pytest.raises(onnxprune.OnnxPruneError, match="source model's file"):
        onnxprune.model_card(result, "x.onnx")


# ------------------------------------------------------------------------------------------------ gate


@pytest.fixture(scope="module")
def digits_pair(tmp_path_factory):
    """The digits model, pruned 0.3 with recovery (accurate) and 0.6 without (inaccurate)."""
    folder = tmp_path_factory.mktemp("gate")
    for name in ("digits_resnet.onnx", "digits_calib.npz", "digits_test.npz", "digits_test_labels.npy"):
        shutil.copy(MODELS / name, folder / name)
    good = onnxprune.prune(folder / "digits_resnet.onnx", ratio=0.3, round_to=1, calib=folder / "digits_calib.npz",
                           calib_samples=16)
    good.save(folder / "good.onnx")
    onnxprune.prune(folder / "digits_resnet.onnx", ratio=0.6, round_to=1).save(folder / "bad.onnx")
    return folder


def _gate(folder, pruned, *extra):
    return run("check", folder / "digits_resnet.onnx", folder / pruned, *extra)


def test_check_passes_and_fails_with_exit_codes(digits_pair, tmp_path, monkeypatch):
    d = digits_pair
    labelled = ["--data", d / "digits_test.npz", "--labels", d / "digits_test_labels.npy"]
    result = _gate(d, "good.onnx", *labelled, "--max-accuracy-drop", "0.02", "--min-top1", "0.95",
                   "--max-macs-ratio", "0.6", "--max-size-ratio", "0.6")
    assert_ok(result)
    assert "PASSED: 4 threshold(s) met" in result.stdout and "max-accuracy-drop" in result.stdout
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = _gate(d, "bad.onnx", *labelled, "--max-accuracy-drop", "0.02", "--max-macs-ratio", "0.6")
    assert_error(result, 4, "check failed", "max-accuracy-drop fail", "accuracy drop")
    assert "FAILED: 1 of 2" in result.stdout
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "onnxprune check: failed" in text and "| max-accuracy-drop |" in text
    data = json.loads(_gate(d, "bad.onnx", "--max-macs-ratio", "0.5", "--min-cosine", "0.99", "--json").stdout)
    assert data["passed"] is False and data["macs"]["pruned"] < data["macs"]["dense"]
    assert [(c["name"], c["status"]) for c in data["criteria"]] == [("min-cosine", "fail"), ("max-macs-ratio", "pass")]
    assert data["fidelity"]["gates"]["min_cosine"] == 0.99, "fidelity is verify's report"


def test_check_policy_file_and_overrides(digits_pair, tmp_path):
    d = digits_pair
    policy = tmp_path / "gate.toml"
    shutil.copy(d / "digits_test.npz", tmp_path)
    shutil.copy(d / "digits_test_labels.npy", tmp_path)
    policy.write_text('max-accuracy-drop = 0.02\ndata = "digits_test.npz"\nlabels = "digits_test_labels.npy"\n'
                      "max-abs = 1e-9  # any verify gate, by its name\n")
    result = _gate(d, "good.onnx", "--policy", policy)
    assert_error(result, 4, "max-abs fail")
    assert "max-accuracy-drop" in result.stdout
    loaded = load_policy(policy)
    assert loaded.gates.max_abs == 1e-9 and loaded.data == str(tmp_path / "digits_test.npz")
    assert loaded.updated({"max-abs": 100.0}).gates.max_abs == 100.0
    relaxed = _without_max_abs(policy)
    assert_ok(_gate(d, "good.onnx", "--policy", relaxed))
    assert_error(_gate(d, "good.onnx", "--policy", relaxed, "--max-accuracy-drop", "0"), 4, "max-accuracy-drop fail")


def _without_max_abs(policy: Path) -> Path:
    text = "\n".join(line for line in policy.read_text().splitlines() if not line.startswith("max-abs"))
    out = policy.with_name("relaxed.toml")
    out.write_text(text + "\n")
    return out


@pytest.mark.parametrize("text, needle", [
    ("min-cosin = 0.9\n", "unknown setting 'min-cosin'"),
    ("min-cosine = 'high'\n", "'min-cosine' must be a number"),
    ("min-cosine = 0.9\n[speed]\nrounds = 3\n", "[speed] is a table"),
    ("min-cosine = = 0.9\n", "(TOML): not readable"),
    ("min-speedup = 1.2\nrounds = 1\n", "needs --rounds of at least 2"),
    ("max-size-ratio = -1\n", "must be a positive number"),
])
def test_bad_policy_is_one_line_exit_1(digits_pair, tmp_path, text, needle):
    policy = tmp_path / "gate.toml"
    policy.write_text(text)
    assert_error(_gate(digits_pair, "good.onnx", "--policy", policy), 1, needle)


def test_check_without_thresholds_or_with_labels_alone_is_bad_input(digits_pair):
    d = digits_pair
    assert_error(_gate(d, "good.onnx"), 1, "no threshold given")
    assert_error(_gate(d, "good.onnx", "--max-accuracy-drop", "0.1"), 1, "needs --labels")
    assert_error(_gate(d, "missing.onnx", "--min-cosine", "0.5"), 1, "no such file")


def test_check_min_speedup_runs_bench(digits_pair):
    # a threshold any real speedup clears: what is checked is the plumbing; the noise of a loaded machine may
    # still leave it open, and then the exit code must say so
    result = _gate(digits_pair, "good.onnx", "--min-speedup", "0.05", "--rounds", "4", "--runs", "3", "--json")
    data = json.loads(result.stdout)
    speed = data["criteria"][-1]
    assert speed["name"] == "min-speedup" and speed["status"] in ("pass", "open"), speed
    assert result.exit_code == (0 if speed["status"] == "pass" else 4)
    assert "95% interval" in speed["detail"] and "control noise" in speed["detail"]
    assert [r["control"] for r in data["bench"]["rows"]] == [False, False, True]


def _bench(speedup, low, high, control=(1.0, 0.99, 1.01)) -> BenchReport:
    rows = [BenchRow("dense", "d", "cpu", 1, 1, speedup=1.0),
            BenchRow("pruned", "p", "cpu", 1, 1, speedup=speedup, speedup_low=low, speedup_high=high),
            BenchRow("dense (control)", "d", "cpu", 1, 1, control=True, speedup=control[0], speedup_low=control[1],
                     speedup_high=control[2])]
    return BenchReport(rows, BenchConfig())


@pytest.mark.parametrize("bench, threshold, status, words", [
    (_bench(1.5, 1.45, 1.55), 1.2, "pass", ""),
    (_bench(1.5, 1.45, 1.55), 1.6, "fail", ""),
    (_bench(1.25, 1.21, 1.3), 1.2, "open", "interval clears it, but not by the control's noise"),
    (_bench(1.25, 1.21, 1.3, control=(1.0, 0.9, 1.05)), 1.15, "open", "not by the control's noise"),
    (_bench(1.18, 1.15, 1.19), 1.2, "open", "misses it by less than the control's noise"),
    (_bench(1.18, 1.15, 1.19, control=(1.0, 0.999, 1.001)), 1.22, "fail", ""),
])
def test_speed_criterion_pass_fail_open(bench, threshold, status, words):
    criterion = speed_criterion(bench, threshold)
    assert criterion.status == status, criterion.detail
    assert words in criterion.detail


def test_policy_api_round_trip():
    policy = CheckPolicy().updated({"min_cosine": 0.99, "shape": ["x=1x3x8x8"], "rounds": 4})
    assert policy.thresholds == {"min-cosine": 0.99} and policy.shapes == {"x": [1, 3, 8, 8]}
    with pytest.raises(onnxprune.OnnxPruneError, match="unknown setting"):
        policy.updated({"speed": 2})


def test_readme_pipeline_block_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"The pipeline steps return dataclasses too.*?```python\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "models").symlink_to(MODELS)
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "__main__"}  # a fresh namespace: the block imports what it uses
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["gate"].passed, scope["gate"].criteria
    assert scope["again"].model.SerializeToString() == scope["result"].model.SerializeToString()
    assert_follows_schema(json.loads((tmp_path / "card" / "report.json").read_text()))


# ----------------------------------------------------------------------------------- the workflow example


def workflow_commands() -> list[str]:
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((ROOT / "docs" / "github-actions.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    return [s["run"] for s in steps if "run" in s and not s["run"].startswith("pip install")]


def test_github_actions_example_runs(tmp_path):
    commands = workflow_commands()
    assert len(commands) >= 3 and any("apply-plan" in c for c in commands) and any("check" in c for c in commands)
    (tmp_path / "models").mkdir()
    for name in ("digits_resnet.onnx", "digits_calib.npz", "digits_test.npz", "digits_test_labels.npy"):
        shutil.copy(MODELS / name, tmp_path / "models" / name)
    shutil.copy(ROOT / "docs" / "gate.toml", tmp_path / "gate.toml")
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
               GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"))
    env.pop("ONNXPRUNE_DEBUG", None)
    assert shutil.which("onnxprune", path=env["PATH"]), "the onnxprune command is installed with the package"
    for command in commands:
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
    check = json.loads((tmp_path / "out" / "check.json").read_text())
    assert check["passed"] and {c["name"] for c in check["criteria"]} >= {"max-accuracy-drop", "max-macs-ratio"}
    assert "onnxprune check: passed" in (tmp_path / "summary.md").read_text()
    assert_follows_schema(json.loads((tmp_path / "out" / "card" / "report.json").read_text()))


def _sigmoid_model(path, seed):
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((8, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Sigmoid", ["h"], ["y"])], "heat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_check_reports_the_cosine_it_judged_and_says_it_can_be_fooled(tmp_path):
    """An all-positive output (a sigmoid map): the gate's value is the cosine it judged, not left out, and the
    warning that cosine says little there stands beside the verdict."""
    _sigmoid_model(tmp_path / "dense.onnx", 0)
    _sigmoid_model(tmp_path / "other.onnx", 1)  # another function with the same I/O
    done = run("check", tmp_path / "dense.onnx", tmp_path / "other.onnx", "--min-cosine", "0.5", "--json")
    data = json.loads(done.stdout)
    (criterion,) = data["criteria"]
    assert criterion["value"] == pytest.approx(data["fidelity"]["outputs"][0]["cosine"])
    assert any("says little" in note for note in data["notes"])


def test_a_depth_pruned_card_follows_the_schema(tmp_path):
    assert_ok(run("prune", MODELS / "demo_resnet18.onnx", "-o", tmp_path / "d.onnx", "--depth-ratio", "0.25",
                  "--report", tmp_path / "card"))
    card = json.loads((tmp_path / "card" / "report.json").read_text())
    assert card["depth"]["removed"] >= 1 and card["options"]["depth_ratio"] == 0.25
    assert_follows_schema(card)
