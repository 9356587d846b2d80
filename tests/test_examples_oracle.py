"""Every example model, at several ratios and both scopes, matches the masking oracle; and prunes to the same plan
whatever sizes its dynamic dims are pinned to, or none."""

from pathlib import Path

import numpy as np
import onnx
import pytest

from models import transformers, zoo
from onnxprune.inputs import make_inputs, model_inputs
from onnxprune.oracle import masked
from oracle_check import assert_matches_oracle, removed_macs, run

COMMITTED = sorted(Path(__file__).resolve().parent.parent.joinpath("models").glob("*.onnx"))
# exports with dynamic height and width, at a size where the computed pads are uneven (and a second size)
SPATIAL = {"unet_tiny_ts.onnx", "effnet_same_tiny_ts.onnx", "effnet_same_tiny_dynamo.onnx"}
SIZES = ([2, 3, 37, 45], [1, 3, 64, 48])


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("name", sorted(zoo.EXAMPLES))
def test_example_uniform(name, ratio):
    result = assert_matches_oracle(zoo.EXAMPLES[name](), ratio=ratio, round_to=1)
    assert result.report.pruned_groups, f"{name}: nothing was pruned"
    assert removed_macs(result) > 0.1


@pytest.mark.parametrize("name", sorted(zoo.EXAMPLES))
def test_example_global_rounded(name):
    result = assert_matches_oracle(zoo.EXAMPLES[name](), ratio=0.5, scope="global", round_to=4, max_ratio=0.8)
    assert result.report.pruned_groups, f"{name}: nothing was pruned"
    assert removed_macs(result) > 0.3  # 0.37 to 0.72 across the examples
    # the channels a tensor keeps (kept indices times channels per index) are a multiple of round_to
    assert all(g.kept * g.unit % 4 == 0 for g in result.report.pruned_groups), "a kept count is not rounded"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_model(path):
    shapes = {"input": SIZES[0]} if path.name in SPATIAL else None
    result = assert_matches_oracle(onnx.load(str(path)), ratio=0.25, round_to=1, shapes=shapes)
    # the fused com.microsoft Attention of the onnxruntime-optimized BERT is not pruned: only its FFN is
    assert removed_macs(result) > (0.05 if path.name == "tx_bert_ts_ortopt.onnx" else 0.1)


def _pinned(model: onnx.ModelProto, batch: int, seq: int, image: tuple[int, int]) -> dict[str, list[int]]:
    """Every input pinned: a dynamic axis 0 to `batch`, the dynamic last two axes of an input of rank 4 to
    `image`, any other dynamic dim to `seq`."""
    shapes = {}
    for spec in model_inputs(model):
        rank = len(spec.dims)
        shapes[spec.name] = [
            d if isinstance(d, int) and d > 0 else batch if axis == 0
            else image[axis - rank + 2] if rank >= 4 and axis >= rank - 2 else seq
            for axis, d in enumerate(spec.dims)
        ]
    return shapes


def _plan(result) -> list:
    """What a plan decides, group by group: members, size, and the channels kept (or why it is blocked)."""
    return sorted((tuple(g.members), g.size, g.prunable, tuple(int(i) for i in result.plan.decisions[g.id].kept)
                   if g.id in result.plan.decisions else ()) for g in result.analysis.groups)


EVERY_MODEL = {
    **{p.name: (lambda p=p: onnx.load(str(p))) for p in COMMITTED},
    **{name: build for name, build in zoo.EXAMPLES.items()},
    # the attention mask of recent transformers releases: Expand to [B, 1, S, S] behind TorchScript's shape guard
    "bert_expanded_mask": lambda: transformers.bert(2, 32, 4, 48, 50, max_pos=32, expanded_mask=True),
}


@pytest.mark.parametrize("name", sorted(EVERY_MODEL))
def test_plan_does_not_depend_on_pinned_sizes(name):
    """Unpinned, pinned at batch 1, and at batch 3 (other sizes differ too): the same groups keep the same
    channels, and each pruned model matches the masking oracle at its sizes. A size of 1 must not decide the
    plan (broadcasting hides axes at that size)."""
    model = EVERY_MODEL[name]()
    small, large = _pinned(model, 1, 5, (37, 45)), _pinned(model, 3, 11, (64, 48))
    plans = [_plan(assert_matches_oracle(model, shapes=shapes, run_shapes=run, ratio=0.5, round_to=1))
             for shapes, run in ((None, large), (small, small), (large, large))]  # some models do not run at 1x1
    assert plans[0] == plans[1] == plans[2]
    assert any(prunable for _, _, prunable, _ in plans[0])


@pytest.mark.parametrize("name", sorted(SPATIAL))
def test_pads_and_sizes_computed_from_the_image_size_hold_at_other_sizes(name):
    """Pruned once (analysis at one size), the model matches the oracle at another: nothing was fixed to a size."""
    model = onnx.load(str(COMMITTED[0].parent / name))
    result = assert_matches_oracle(model, ratio=0.5, round_to=1, shapes={"input": SIZES[1]})
    assert not [g for g in result.report.groups if not g.prunable and g.channels > 1 and g.kept == g.channels
                and "graph output" not in " ".join(g.reasons)], "a group is blocked"
    for feeds in make_inputs(model, shapes={"input": SIZES[0]}, samples=1, seed=3):
        expected, got = run(masked(model, result.masked_reads), feeds), run(result.model, feeds)
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * float(np.abs(e).max()))


def test_uniform_ratio_removes_about_the_right_share_of_macs():
    # two convs in a row lose half their channels each: MACs between them drop to about a quarter
    result = assert_matches_oracle(zoo.EXAMPLES["vgg"](), ratio=0.5, round_to=1)
    assert 0.6 < removed_macs(result) < 0.8
