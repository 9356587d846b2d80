"""Every example model, at several ratios and both scopes, matches the masking oracle."""

from pathlib import Path

import numpy as np
import onnx
import pytest

from models import zoo
from onnxprune.oracle import masked
from onnxprune.verify import make_inputs
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
    assert_matches_oracle(zoo.EXAMPLES[name](), ratio=0.5, scope="global", round_to=4, max_ratio=0.8)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_committed_model(path, ratio):
    shapes = {"input": SIZES[0]} if path.name in SPATIAL else None
    result = assert_matches_oracle(onnx.load(str(path)), ratio=ratio, round_to=1, shapes=shapes)
    assert removed_macs(result) > 0.1


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
