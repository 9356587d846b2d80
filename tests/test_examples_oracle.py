"""Every example model, at several ratios and both scopes, matches the masking oracle."""

from pathlib import Path

import onnx
import pytest

from models import zoo
from oracle_check import assert_matches_oracle, removed_macs

COMMITTED = sorted(Path(__file__).resolve().parent.parent.joinpath("models").glob("*.onnx"))


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
    result = assert_matches_oracle(onnx.load(str(path)), ratio=ratio, round_to=1)
    assert removed_macs(result) > 0.1


def test_uniform_ratio_removes_about_the_right_share_of_macs():
    # two convs in a row lose half their channels each: MACs between them drop to about a quarter
    result = assert_matches_oracle(zoo.EXAMPLES["vgg"](), ratio=0.5, round_to=1)
    assert 0.6 < removed_macs(result) < 0.8
