"""prune --within POLICY: the highest ratio whose model passes a check policy's fidelity thresholds."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.errors import OptionError, VerificationError
from onnxprune.gate import CheckPolicy, check, load_policy
from onnxprune.policy_search import bisect, grid, prune_within

from cli_run import ROOT, assert_error, assert_ok, exit_code, run
from test_pipeline import assert_follows_schema

MODELS = ROOT / "models"


def test_grid_steps_up_to_the_max_ratio():
    assert grid(0.9) == [round(0.05 * k, 6) for k in range(1, 19)]
    assert grid(0.3, 0.1) == [0.1, 0.2, 0.3]


@pytest.mark.parametrize("limit", [-1, 0, 5, 16, 17])
def test_bisect_finds_the_last_passing_ratio_in_log_probes(limit):
    ratios = grid(0.9)[:18]
    probed = []

    def passes(r):
        probed.append(r)
        return ratios.index(r) <= limit

    found = bisect(ratios, passes)
    assert found == (None if limit < 0 else limit)
    assert len(probed) <= math.ceil(math.log2(len(ratios) + 1))
    assert len(set(probed)) == len(probed), "no ratio is probed twice"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("within")
    for name in ("digits_cnn.onnx", "digits_calib.npz", "digits_test.npz", "digits_test_labels.npy"):
        shutil.copy(MODELS / name, folder / name)
    return folder


def _policy(folder: Path, text: str) -> Path:
    path = folder / "gate.toml"
    path.write_text(text + 'data = "digits_test.npz"\nlabels = "digits_test_labels.npy"\n')
    return path


def test_search_keeps_the_highest_passing_ratio_and_its_model_is_the_plain_prune(digits):
    policy = load_policy(_policy(digits, "max-rel-error = 0.6\n"))
    model = digits / "digits_cnn.onnx"
    result = prune_within(model, policy, policy_label="gate.toml", round_to=1)
    search = result.search
    ratio = search.ratio
    probes = {p.ratio: p for p in search.probes}
    assert probes[ratio].passed and all(p.passed == (p.ratio <= ratio) for p in search.probes)
    above = round(ratio + 0.05, 6)
    assert above in probes and not probes[above].passed, "the next ratio up was probed and failed"
    plain = onnxprune.prune(model, ratio=ratio, round_to=1)
    assert plain.model.SerializeToString() == result.model.SerializeToString()
    out = digits / "within.onnx"
    result.save(out)
    judged = check(model, out, policy)  # `check` agrees with the search, on the same data
    assert judged.passed
    assert result.report.to_dict()["search"]["ratio"] == ratio
    assert result.report.notes[-1].startswith("gate.toml: ratio")


def test_search_recovers_on_calibration_data_and_warns_when_judged_on_it(digits):
    policy = load_policy(_policy(digits, "max-accuracy-drop = 0.01\n"))
    result = prune_within(digits / "digits_cnn.onnx", policy, calib=digits / "digits_calib.npz", calib_samples=64)
    assert result.recovery is not None and result.search.ratio >= 0.3
    assert not any("optimistic" in n for n in result.search.notes)
    on_calib = CheckPolicy(data=str(digits / "digits_calib.npz")).updated({"max_rel_error": 0.5})
    result = prune_within(digits / "digits_cnn.onnx", on_calib, calib=digits / "digits_calib.npz", calib_samples=64)
    assert any("optimistic" in n for n in result.search.notes)


def test_search_refuses_what_it_cannot_search(digits):
    model = digits / "digits_cnn.onnx"
    with pytest.raises(OptionError, match="no fidelity threshold"):
        prune_within(model, CheckPolicy(max_macs_ratio=0.5))
    with pytest.raises(OptionError, match="ratio"):
        prune_within(model, CheckPolicy().updated({"max_rel_error": 0.1}), ratio=0.5)
    with pytest.raises(VerificationError, match="even --ratio 0.05 fails"):
        prune_within(model, CheckPolicy().updated({"max_rel_error": 0.0}), round_to=1)


def test_cli_within_writes_the_model_and_checks_the_rest_of_the_policy(digits, monkeypatch):
    monkeypatch.chdir(digits)
    _policy(digits, "max-rel-error = 0.6\n")
    result = run("prune", "digits_cnn.onnx", "--within", "gate.toml", "--round-to", "1", "-o", "w.onnx",
                 "--report", "card")
    assert_ok(result)
    assert "is the highest that passes max-rel-error 0.6" in result.stdout and "FAIL" in result.stdout
    assert onnx.load("w.onnx").graph.input[0].name == "input"
    card = json.loads(Path("card/report.json").read_text())
    assert_follows_schema(card)
    assert card["search"]["thresholds"] == {"max-rel-error": 0.6} and len(card["search"]["probes"]) >= 3
    assert "## Search within the policy" in Path("card/report.md").read_text()
    # a policy that also asks for fewer MACs than fidelity allows: the model is written, check says why it fails
    _policy(digits, "max-rel-error = 0.6\nmax-macs-ratio = 0.01\n")
    result = run("prune", "digits_cnn.onnx", "--within", "gate.toml", "--round-to", "1", "-o", "w2.onnx", "--json")
    assert exit_code(result) == 4 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: wrote w2.onnx") and Path("w2.onnx").is_file()
    data = json.loads(result.stdout)
    assert data["search"]["ratio"] > 0 and data["check"]["passed"] is False
    assert [c["name"] for c in data["check"]["criteria"]] == ["max-rel-error", "max-macs-ratio"]


@pytest.mark.parametrize("extra, code, needle", [
    (["--ratio", "0.3"], 1, "--ratio and --within"),
    (["--latency-target", "0.5"], 1, "--latency-target and --within"),
    (["--finetune-epochs", "1"], 1, "onnxprune finetune"),
])
def test_cli_within_option_conflicts_are_one_line(digits, monkeypatch, extra, code, needle):
    monkeypatch.chdir(digits)
    _policy(digits, "max-rel-error = 0.5\n")
    assert_error(run("prune", "digits_cnn.onnx", "--within", "gate.toml", "-o", "x.onnx", *extra), code, needle)
    assert not Path("x.onnx").exists()


def test_cli_within_nothing_passes_writes_nothing(digits, monkeypatch):
    monkeypatch.chdir(digits)
    _policy(digits, "max-rel-error = 0.0\n")
    result = run("prune", "digits_cnn.onnx", "--within", "gate.toml", "--round-to", "1", "-o", "none.onnx")
    assert exit_code(result) == 4 and "Traceback" not in result.stderr
    assert "no pruning passes --within gate.toml" in result.stderr.strip().splitlines()[-1]
    assert not Path("none.onnx").exists()
