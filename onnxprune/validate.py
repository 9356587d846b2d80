"""Is a written model valid and runnable, with the dense model's inputs and outputs?"""

from __future__ import annotations

from typing import Optional

import onnx

from .errors import OnnxPruneError


class InvalidOutputError(OnnxPruneError):
    """The rewrite produced a model that fails a check: a bug in onnxprune, reported without traceback."""

    exit_code = 5


class UncheckableError(OnnxPruneError):
    """The dense model itself fails the same check (custom ops, an invalid input model): --no-check skips it."""


NO_CHECK_HINT = "pass --no-check to write the pruned model without this check"


def io_signature(model: onnx.ModelProto):
    """Names and full types (dtype and shape) of the model's inputs and outputs."""
    inits = {t.name for t in model.graph.initializer}

    def describe(vis):
        return [(vi.name, vi.type.SerializeToString()) for vi in vis if vi.name not in inits]

    return describe(model.graph.input), describe(model.graph.output)


def check_io(dense_io, pruned: onnx.ModelProto) -> None:
    if io_signature(pruned) != dense_io:
        raise InvalidOutputError("the pruned model's inputs or outputs differ from the dense model's; it was not kept")


def check_runnable(dense_path, pruned_path, shapes=None, label=None, feeds=None, io_checked=False) -> None:
    """Checker (full), unchanged I/O names, types and shapes, and one onnxruntime run on random inputs.

    `label` names the pruned model in messages (its final path when `pruned_path` is a staged copy). Callers
    that still hold the models in memory pass `feeds` and `io_checked=True` (see `check_io`), which spares
    loading both files again. A check
    that the dense model fails too raises UncheckableError (exit 1), not InvalidOutputError (exit 5, a bug).
    """
    from .verify import make_inputs

    label = str(label or pruned_path)

    def line(exc: BaseException) -> str:
        return _line(exc).replace(str(pruned_path), label)

    try:
        onnx.checker.check_model(str(pruned_path), full_check=True)
    except Exception as exc:
        dense_failure = _checker_failure(dense_path)
        if dense_failure is not None:
            raise UncheckableError(
                f"the input model fails the ONNX checker too ({dense_failure}); {NO_CHECK_HINT}"
            ) from None
        raise InvalidOutputError(f"the pruned model fails the ONNX checker and was not kept: {line(exc)}") from None
    if not io_checked or feeds is None:
        dense = onnx.load(str(dense_path), load_external_data=False)
        pruned = onnx.load(str(pruned_path), load_external_data=False)
        check_io(io_signature(dense), pruned)
        del dense
        feeds = make_inputs(pruned, shapes=shapes, samples=1, seed=0)[0]
    failure = _run_failure(pruned_path, feeds)
    if failure is None:
        return
    dense_failure = _run_failure(dense_path, feeds)
    if dense_failure is None:
        raise InvalidOutputError(f"the pruned model does not run in onnxruntime and was not kept: {line(failure)}")
    # Dynamic dims drawn as 1 are too small for many models (a 1x1 image): try larger ones the dense model takes.
    for size in RETRY_SIZES:
        retry = _feeds_with_dynamic_dims(dense_path, shapes, size)
        if retry is None or _run_failure(dense_path, retry) is not None:
            continue
        failure = _run_failure(pruned_path, retry)
        if failure is None:
            return
        raise InvalidOutputError(f"the pruned model does not run in onnxruntime and was not kept: {line(failure)}")
    raise UncheckableError(
        f"onnxruntime cannot run the input model either ({dense_failure}); pin the input shapes with --shape, "
        f"or {NO_CHECK_HINT}"
    )


RETRY_SIZES = (64, 256)


def _feeds_with_dynamic_dims(path, shapes, size: int):
    """Random feeds where every dynamic dim but the first is `size` (dims pinned with --shape are kept)."""
    from .cost import model_inputs
    from .verify import make_inputs

    model = onnx.load(str(path), load_external_data=False)
    pinned = dict(shapes or {})
    for spec in model_inputs(model):
        if spec.name in pinned or spec.dims is None:
            continue
        dims = [d if isinstance(d, int) else (1 if axis == 0 else size) for axis, d in enumerate(spec.dims)]
        pinned[spec.name] = dims
    try:
        return make_inputs(model, shapes=pinned, samples=1, seed=0)[0]
    except OnnxPruneError:
        return None


def _checker_failure(path) -> Optional[str]:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        return _line(exc)
    return None


def _run_failure(path, feeds) -> Optional[str]:
    """Why onnxruntime cannot run the model at `path` on `feeds`, or None when it runs."""
    from .verify import open_session, run_session

    try:
        run_session(open_session(str(path)), feeds, str(path))
    except Exception as exc:
        return _line(exc)
    return None


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
