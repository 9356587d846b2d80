"""Calibration-based scores and recovery, on tiny models built in code.

The reference everywhere is the dense model run by onnxruntime on the same calibration samples: recovery
must bring the pruned model closer to it (never further), remove constant channels exactly, and work on
Conv, Gemm, MatMul (with and without a bias Add), BatchNormalization in the graph, and fp16 weights.
"""

import numpy as np
import onnx
import pytest

import onnxprune
from graphs import Builder
from oracle_check import run
from onnxprune.errors import OptionError
from onnxprune.recovery import Moments, error, match_moments, refit

RNG = np.random.default_rng(0)


def cnn(bn: bool = False, dtype=np.float32) -> onnx.ModelProto:
    """conv(3->16) [BN] relu conv(16->16) [BN] relu conv 1x1 (16->16) relu GAP gemm(16->5)."""
    b = Builder(seed=3, dtype=dtype)
    x = b.input("x", ["N", 3, 8, 8])
    y = b.conv(x, 3, 16, name="c1")
    y = b.op("Relu", [b.bn(y, 16, "bn1") if bn else y])
    y = b.conv(y, 16, 16, name="c2", bias=not bn)
    y = b.op("Relu", [b.bn(y, 16, "bn2") if bn else y])
    y = b.op("Relu", [b.conv(y, 16, 16, 1, name="c3")])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    b.output(b.gemm(y, 16, 5, name="fc"))
    return b.build()


def mlp(bias: bool = True) -> onnx.ModelProto:
    """Transformer-style FFN on [N, S, 8]: MatMul (+ bias Add) -> Relu -> MatMul (+ bias Add)."""
    b = Builder(seed=4)
    x = b.input("x", ["N", 4, 8])
    y = b.op("Relu", [b.matmul(x, 8, 32, name="up", bias=bias)])
    b.output(b.matmul(y, 32, 8, name="down", bias=bias))
    return b.build()


def samples(model, n=64, seed=1):
    inp = model.graph.input[0]
    dims = [d.dim_value if d.dim_value else n for d in inp.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    return {inp.name: np.random.default_rng(seed).standard_normal(dims).astype(dtype)}


def rel_error(dense, pruned, feed) -> float:
    a = np.asarray(run(dense, feed)[0], np.float64)
    b = np.asarray(run(pruned, feed)[0], np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def prune(model, feed, **kw):
    kw.setdefault("ratio", 0.5)
    kw.setdefault("round_to", 1)
    return onnxprune.prune(model, calib=[feed], **kw)


@pytest.mark.parametrize("make", [lambda: cnn(), lambda: cnn(bn=True), lambda: mlp(), lambda: mlp(bias=False)],
                         ids=["cnn-folded", "cnn-bn", "mlp-bias-add", "mlp-no-bias"])
def test_recovery_never_worse_than_none_on_calibration_data(make):
    model = make()
    feed = samples(model)
    none = rel_error(model, prune(model, feed, recover="none").model, feed)
    assert none > 0.05  # pruning half the channels really changes this model
    for method in ("lsq", "all"):
        result = prune(model, feed, recover=method)
        onnx.checker.check_model(result.model, full_check=True)
        err = rel_error(model, result.model, feed)
        assert err < none, (method, err, none)
        for layer in result.recovery.layers:  # every refit layer: calibration error not raised
            if layer.step == "lsq":
                assert layer.error_after <= layer.error_before + 1e-9, layer
    assert rel_error(model, prune(model, feed, recover="lsq").model, feed) < 0.5 * none


def test_lsq_recovers_removed_channels_that_kept_ones_span():
    # hidden channels 2 and 3 are small linear combinations of channels 0 and 1: L1 removes them, and the
    # consumer's refit on the kept channels reproduces the dense output (up to the ridge term)
    b = Builder(seed=5)
    x = b.input("x", ["N", 6])
    a = RNG.standard_normal((6, 4)).astype(np.float32)
    a[:, 2] = 0.1 * a[:, 0] + 0.05 * a[:, 1]
    a[:, 3] = -0.1 * a[:, 1]
    b.initializers.append(onnx.numpy_helper.from_array(a, "a.w"))
    h = b.op("Gemm", [x, "a.w"], name="a")
    b.output(b.gemm(h, 4, 3, name="b"))
    model = b.build()
    feed = samples(model, n=200)
    none = rel_error(model, prune(model, feed, recover="none").model, feed)
    result = prune(model, feed, recover="lsq")
    assert none > 0.01 and rel_error(model, result.model, feed) < 1e-3


def constant_channel_model() -> onnx.ModelProto:
    """conv1 (3->8) whose channels 0-3 have zero weights and a positive bias: after Relu they are constant.
    The consumer is a 1x1 conv without padding, so the constant's contribution is the same everywhere."""
    b = Builder(seed=6)
    x = b.input("x", ["N", 3, 6, 6])
    w = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w[:4] = 0.0
    bias = np.abs(RNG.standard_normal(8)).astype(np.float32) + 0.5
    b.initializers.append(onnx.numpy_helper.from_array(w, "c1.w"))
    b.initializers.append(onnx.numpy_helper.from_array(bias, "c1.b"))
    y = b.op("Relu", [b.op("Conv", [x, "c1.w", "c1.b"], name="c1", pads=[1, 1, 1, 1])])
    b.output(b.conv(y, 8, 4, 1, name="c2", pads=[0, 0, 0, 0]))
    return b.build()


def test_bias_compensation_removes_constant_channels_exactly():
    model = constant_channel_model()
    feed = samples(model, n=16)
    plain = prune(model, feed, recover="none")
    kept = plain.plan.decisions[next(iter(plain.plan.decisions))].kept
    assert set(kept.tolist()) == {4, 5, 6, 7}  # the constant channels score lowest (zero producing weights)
    assert rel_error(model, plain.model, feed) > 0.01
    result = prune(model, feed, recover="bias")
    assert rel_error(model, result.model, feed) < 1e-6
    assert [layer.step for layer in result.recovery.layers] == ["bias"]


def test_bias_is_added_where_the_consumer_has_none():
    model = mlp(bias=False)
    feed = samples(model)
    result = prune(model, feed, recover="lsq")
    adds = [n for n in result.model.graph.node if n.op_type == "Add"]
    assert adds and adds[0].name.endswith("__recovery_bias")
    onnx.checker.check_model(result.model, full_check=True)
    # the graph's output name and type are unchanged
    assert [o.name for o in result.model.graph.output] == [o.name for o in model.graph.output]


def test_batchnorm_in_the_graph_is_re_estimated():
    model = cnn(bn=True)
    feed = samples(model)
    result = prune(model, feed, recover="stats")
    steps = {layer.node: layer.step for layer in result.recovery.layers}
    assert steps.get("bn2") == "bn"  # bn2 reads c2, which lost input channels
    assert rel_error(model, result.model, feed) < rel_error(model, prune(model, feed, recover="none").model, feed)


def test_fp16_weights_recover_stably():
    model = cnn(dtype=np.float16)
    feed = samples(model)
    none = rel_error(model, prune(model, feed, recover="none").model, feed)
    result = prune(model, feed, recover="all")
    out = run(result.model, feed)[0]
    assert out.dtype == np.float16 and np.isfinite(out).all()
    assert rel_error(model, result.model, feed) < none


def test_data_aware_criteria_need_data_and_pick_by_activation():
    model = cnn()
    with pytest.raises(OptionError, match="needs calibration data"):
        onnxprune.prune(model, criterion="wanda")
    with pytest.raises(OptionError, match="needs calibration data"):
        onnxprune.prune(model, recover="lsq")
    # channels 0-3 of c1 are dead (large negative bias), but c2 reads them with large weights: L1 keeps them,
    # the data-aware scores see that they are always zero
    b = Builder(seed=7)
    x = b.input("x", ["N", 3, 6, 6])
    w1 = RNG.standard_normal((8, 3, 1, 1)).astype(np.float32)
    bias = np.zeros(8, np.float32)
    bias[:4] = -1e4
    w2 = RNG.standard_normal((4, 8, 1, 1)).astype(np.float32)
    w2[:, :4] *= 100.0
    b.initializers += [onnx.numpy_helper.from_array(a, n) for a, n in ((w1, "c1.w"), (bias, "c1.b"), (w2, "c2.w"))]
    y = b.op("Relu", [b.op("Conv", [x, "c1.w", "c1.b"], name="c1")])
    b.output(b.op("Conv", [y, "c2.w"], name="c2"))
    dead = b.build()
    feed = samples(dead, n=16)
    kept = {}
    for criterion in ("l1", "activation", "wanda"):
        result = onnxprune.prune(dead, ratio=0.5, round_to=1, criterion=criterion, calib=[feed], recover="none")
        kept[criterion] = set(next(iter(result.plan.decisions.values())).kept.tolist())
    assert kept["l1"] == {0, 1, 2, 3}
    assert kept["activation"] == {4, 5, 6, 7}
    assert kept["wanda"] != kept["l1"]  # the reads of dead channels weigh nothing (|w| x ||x|| = 0)
    result = onnxprune.prune(dead, ratio=0.5, round_to=1, criterion="activation", calib=[feed], recover="none")
    assert rel_error(dead, result.model, feed) < 1e-6  # dead channels removed: nothing changes
    # the data was given (and scored the channels): the note says recovery was off, not that data was missing
    assert any(n.startswith("--recover none: the pruned model was not recovered") for n in result.report.notes)
    assert not any("no calibration data was given" in n for n in result.report.notes)


def test_moments_error_and_refit_agree_with_direct_computation():
    x = RNG.standard_normal((300, 5))
    w = RNG.standard_normal((5, 3))
    y = x @ w + 0.5 + 0.01 * RNG.standard_normal((300, 3))
    m = Moments()
    m.add(x[:200], y[:200], 0)
    m.add(x[200:], y[200:], 1)
    old = np.vstack([np.zeros((5, 3)), np.zeros((1, 3))])
    xx, xy, yy = m.total()
    assert np.allclose(error(old, xx, xy, yy), (y * y).sum(0))
    theta, alpha, note = refit(m, old, None)
    assert note == "" and alpha is not None
    assert np.allclose(theta[:-1], w, atol=0.01) and np.allclose(theta[-1], 0.5, atol=0.01)
    direct = ((np.hstack([x, np.ones((300, 1))]) @ theta - y) ** 2).sum(0)
    assert np.allclose(error(theta, xx, xy, yy), direct)
    matched = match_moments(m, theta * 0.5)  # a shrunken layer gets the dense mean and spread back
    out = np.hstack([x, np.ones((300, 1))]) @ matched
    assert np.allclose(out.mean(0), y.mean(0)) and np.allclose(out.std(0), y.std(0))


def test_calibration_input_errors(tmp_path):
    model = cnn()
    few = {"x": np.zeros((3, 3, 8, 8), np.float32)}
    with pytest.raises(OptionError, match="at least 8"):
        onnxprune.prune(model, calib=[few])
    with pytest.raises(OptionError, match="needs dtype float32"):
        onnxprune.prune(model, calib=[{"x": np.zeros((8, 3, 8, 8), np.float64)}])
    with pytest.raises(OptionError, match="the model needs"):
        onnxprune.prune(model, calib=[{"y": np.zeros((8, 3, 8, 8), np.float32)}])
    p = tmp_path / "c.npz"
    np.savez(p, x=np.zeros((16, 3, 9, 8), np.float32))
    with pytest.raises(OptionError, match="needs dim 2 = 8"):
        onnxprune.prune(model, calib=str(p))
    np.savez(p, x=np.zeros((16, 3, 8, 8), np.float32))
    result = onnxprune.prune(model, calib=str(p), calib_samples=12, round_to=1)
    assert result.recovery.samples == 12 and result.report.options["recover"] == "all"


def test_progress_reports_every_pass():
    model = cnn()
    calls = []
    onnxprune.prune(model, calib=[samples(model)], ratio=0.5, round_to=1, criterion="wanda",
                    progress=lambda stage, done, total: calls.append((stage, done, total)))
    stages = {c[0] for c in calls}
    assert stages == {"calibration", "scores", "recovery"}
    last = [c for c in calls if c[0] == "recovery"][-1]
    assert last[1] == last[2] > 0
