"""Plans of depth-pruned models: the removed residual blocks are recorded by the weights their branch reads, and
apply-plan removes the same blocks (then the same channels) on the same model, a re-export with other node names,
and refuses, in one line, a model without them."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxprune
from onnxprune.errors import PlanMismatchError
from cli_run import assert_error, assert_ok, run

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "demo_resnet18.onnx"


def _outputs(model, x):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan_depth")
    assert_ok(run("prune", MODEL, "-o", folder / "pruned.onnx", "--depth-ratio", "0.25", "--ratio", "0.3",
                  "--plan-out", folder / "plan.json", "--report", folder / "card"))
    return folder


def test_the_plan_records_the_removed_blocks_and_the_card_lists_them(planned):
    from onnxprune.planfile import PlanFile

    plan = PlanFile.load(planned / "plan.json")
    assert plan.blocks and all(b["weights"] for b in plan.blocks) and plan.groups
    card = (planned / "card" / "report.md").read_text()
    assert "## Blocks" in card and "--depth-ratio 0.25" in card
    assert all(b["add"] in card for b in plan.blocks)


def test_apply_plan_gives_the_same_bytes(planned, tmp_path):
    assert_ok(run("apply-plan", MODEL, planned / "plan.json", "-o", tmp_path / "again.onnx"))
    assert (tmp_path / "again.onnx").read_bytes() == (planned / "pruned.onnx").read_bytes()


def test_apply_plan_on_a_re_export_with_other_node_names(planned, tmp_path):
    model = onnx.load(str(MODEL))
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}"
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    result = onnxprune.apply_plan(tmp_path / "renamed.onnx", planned / "plan.json")
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32)
    np.testing.assert_allclose(_outputs(result.model, x), _outputs(planned / "pruned.onnx", x), rtol=1e-5, atol=1e-5)
    assert len(result.removed_blocks) == len(onnxprune.apply_plan(MODEL, planned / "plan.json").removed_blocks)


def test_a_model_without_the_planned_blocks_is_refused_in_one_line(planned, tmp_path):
    with pytest.raises(PlanMismatchError, match="removes the residual block with weights"):
        onnxprune.apply_plan(ROOT / "models" / "digits_resnet.onnx", planned / "plan.json")
    done = run("apply-plan", ROOT / "models" / "digits_resnet.onnx", planned / "plan.json", "-o", tmp_path / "x.onnx")
    assert_error(done, 1, "the plan does not fit")
