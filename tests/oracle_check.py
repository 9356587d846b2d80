"""Shared assertions: a pruned model is valid, keeps its I/O, and matches the masking oracle numerically."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

import onnxprune
from onnxprune.inputs import make_inputs
from onnxprune.oracle import masked, zeroed_branches


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, feeds) -> list[np.ndarray]:
    return session(model).run(None, feeds)


def io_signature(model: onnx.ModelProto):
    inits = {t.name for t in model.graph.initializer}
    return (
        [(vi.name, vi.type.SerializeToString()) for vi in model.graph.input if vi.name not in inits],
        [(vi.name, vi.type.SerializeToString()) for vi in model.graph.output],
    )


def assert_matches_oracle(model: onnx.ModelProto, *, shapes=None, samples: int = 2, rtol: float = 1e-4,
                          run_shapes=None, **options):
    """Prune `model` (dynamic dims pinned by `shapes`), then check: checker (full), I/O unchanged, and
    run(pruned) == run(masked dense) on random inputs of `run_shapes` (default `shapes`), with error relative to
    the output scale. Returns the PruneResult.

    The masked dense model has its removed blocks' branches multiplied by zero (depth options) and the
    weight slices that read removed channels zeroed (width options)."""
    original = model.SerializeToString()
    result = onnxprune.prune(model, shapes=shapes, **options)
    assert model.SerializeToString() == original, "prune() must not modify its input model"
    pruned = result.model
    onnx.checker.check_model(pruned, full_check=True)
    assert io_signature(pruned) == io_signature(model)
    reference = session(masked(zeroed_branches(model, result.removed_blocks), result.masked_reads))
    checked = session(pruned)  # one session each for every sample
    for feeds in make_inputs(model, shapes=run_shapes or shapes, samples=samples, seed=1):
        expected, got = reference.run(None, feeds), checked.run(None, feeds)
        for e, g in zip(expected, got):
            assert e.shape == g.shape
            e64, g64 = e.astype(np.float64), g.astype(np.float64)
            scale = max(float(np.max(np.abs(e64))), 1e-6)
            tol = rtol * (50 if e.dtype == np.float16 else 1)
            assert float(np.max(np.abs(e64 - g64))) <= tol * scale, f"pruned differs from the masking oracle"
    return result


def removed_macs(result) -> float:
    return 1.0 - result.report.after.macs / result.report.before.macs
