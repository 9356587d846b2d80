"""`channel_scores` and `make_plan` on their own, with values worked out by hand on tiny weights."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.deps.context import Group, Place, analyze
from onnxprune.deps.ops import default_registry
from onnxprune.graph import Graph
from onnxprune.importance import channel_scores
from onnxprune.plan import PlanOptions, make_plan


def two_convs(w1, w2, b1=(0.5, 0.5)) -> onnx.ModelProto:
    """x[1,1,2,2] -> Conv c1 (1x1, 2 channels, bias b1) -> Relu -> Conv c2 (1x1, 1 channel) -> y: one group of two
    channels, produced by c1's weight rows and read by c2's weight columns."""
    inits = [
        numpy_helper.from_array(np.array(w1, np.float32).reshape(2, 1, 1, 1), "c1.w"),
        numpy_helper.from_array(np.array(b1, np.float32), "c1.b"),
        numpy_helper.from_array(np.array(w2, np.float32).reshape(1, 2, 1, 1), "c2.w"),
    ]
    nodes = [helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["h"], name="c1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "c2.w"], ["y"], name="c2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def scores_of(model, criterion):
    analysis = analyze(Graph(model), default_registry())
    (group,) = [g for g in analysis.groups if g.prunable]
    assert group.size == 2 and group.members == ["c1", "c2"]
    return channel_scores(analysis, [group], criterion)[group.id]


# Channel 0: c1 row 3, c2 column 3; channel 1: c1 row -5, c2 column 0.5. The bias (0.5 each) never counts.
W1, W2 = (3.0, -5.0), (3.0, 0.5)


def test_l1_sums_the_absolute_weights_that_produce_and_read_a_channel():
    np.testing.assert_allclose(scores_of(two_convs(W1, W2), "l1"), [3 + 3, 5 + 0.5])


def test_l2_is_the_root_of_the_summed_squares_over_the_same_weights():
    np.testing.assert_allclose(scores_of(two_convs(W1, W2), "l2"), [np.sqrt(9 + 9), np.sqrt(25 + 0.25)])


def test_the_bias_does_not_count():
    np.testing.assert_allclose(scores_of(two_convs(W1, W2, b1=(100.0, -7.0)), "l1"), [6.0, 5.5])


@pytest.mark.parametrize("criterion, kept_row", [("l1", 3.0), ("l2", -5.0)])
def test_l1_and_l2_keep_different_channels_here(criterion, kept_row):
    """l1 ranks channel 0 first (6 > 5.5), l2 channel 1 (5.02 > 4.24): pruning half keeps that channel's row."""
    result = onnxprune.prune(two_convs(W1, W2), ratio=0.5, round_to=1, criterion=criterion)
    (w,) = [numpy_helper.to_array(t) for t in result.model.graph.initializer if t.name.startswith("c1.w")]
    assert w.reshape(-1).tolist() == [kept_row]


def test_an_unknown_criterion_is_refused():
    analysis = analyze(Graph(two_convs(W1, W2)), default_registry())
    with pytest.raises(onnxprune.errors.OptionError, match="unknown criterion 'l3'"):
        channel_scores(analysis, analysis.groups, "l3")


# ---- make_plan: groups without places (one channel per index), scores given


def group(gid: int, size: int, members=(), reasons=()) -> Group:
    places = [Place(f"{m}.w", 1, None, "in", m) for m in members]  # "in" places: unit_of needs no layout
    return Group(gid, None, size, places, list(reasons))


def plan_of(groups, scores, **options):
    plan = make_plan(groups, {g.id: np.array(s, float) for g, s in zip(groups, scores)}, PlanOptions(**options),
                     spaces=None)
    return {gid: d.kept.tolist() for gid, d in plan.decisions.items()}, plan


def test_uniform_keeps_the_highest_scores_in_their_order():
    kept, _ = plan_of([group(0, 8)], [[5, 1, 7, 3, 8, 2, 6, 4]], ratio=0.5, round_to=1)
    assert kept == {0: [0, 2, 4, 6]}  # scores 5, 7, 8, 6


def test_ties_keep_the_earlier_channel():
    kept, _ = plan_of([group(0, 4)], [[1, 1, 1, 1]], ratio=0.5, round_to=1)
    assert kept == {0: [0, 1]}


def test_kept_counts_round_up_to_round_to():
    # 10 channels at ratio 0.3 keep ceil(7) = 7, rounded up to 8; at ratio 0.5 keep 5 -> 8
    for ratio in (0.3, 0.5):
        kept, _ = plan_of([group(0, 10)], [list(range(10))], ratio=ratio, round_to=4)
        assert kept == {0: [2, 3, 4, 5, 6, 7, 8, 9]}


def test_rounding_never_keeps_more_than_the_group_has():
    kept, _ = plan_of([group(0, 6)], [list(range(6))], ratio=0.1, round_to=16)
    assert kept == {0: [0, 1, 2, 3, 4, 5]}


def test_min_channels_is_a_floor():
    kept, _ = plan_of([group(0, 4)], [[4, 3, 2, 1]], ratio=0.9, round_to=1, min_channels=2)
    assert kept == {0: [0, 1]}  # ceil(4 * 0.1) = 1, raised to 2


def test_blocked_groups_get_no_decision_and_excluded_ones_keep_everything():
    groups = [group(0, 4, reasons=["some reason"]), group(1, 4, members=["backbone.conv"]), group(2, 4)]
    kept, plan = plan_of(groups, [[1, 2, 3, 4]] * 3, ratio=0.5, round_to=1, exclude=("backbone.*",))
    assert kept == {1: [0, 1, 2, 3], 2: [2, 3]}
    assert plan.decisions[1].note == "excluded by backbone.*" and [d.group for d in plan.pruned] == [2]


def test_global_compares_scores_divided_by_their_group_mean():
    # A: [1, 1, 1, 1] (mean 1); B: [0.1, 0.1, 3.9, 3.9] (mean 2 -> 0.05, 0.05, 1.95, 1.95). A quarter of the
    # 8 channels (2) go: B's two lowest, though A's raw scores are lower than B's top ones.
    kept, _ = plan_of([group(0, 4), group(1, 4)], [[1, 1, 1, 1], [0.1, 0.1, 3.9, 3.9]], ratio=0.25, scope="global",
                      round_to=1)
    assert kept == {0: [0, 1, 2, 3], 1: [2, 3]}


def test_global_stops_each_group_at_max_ratio():
    # budget 4 of 8, but no group may lose more than int(4 * 0.25) = 1: B0 goes, B1 is capped, A0 goes (A's
    # ties keep the earlier channels), the rest are capped; 2 removed in all
    kept, _ = plan_of([group(0, 4), group(1, 4)], [[1, 1, 1, 1], [0.1, 0.1, 3.9, 3.9]], ratio=0.5, scope="global",
                      max_ratio=0.25, round_to=1)
    assert kept == {0: [0, 1, 2], 1: [0, 2, 3]}
