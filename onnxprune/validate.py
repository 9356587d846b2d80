"""Is a written model valid and runnable, with the dense model's inputs and outputs?"""

from __future__ import annotations

from typing import Optional

import onnx

from .errors import InvalidOutputError, OnnxPruneError

__all__ = ["InvalidOutputError", "UncheckableError", "check_io", "check_runnable", "io_signature"]


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


def check_runnable(dense_path, pruned_path, shapes=None, label=None, feeds=None, io_checked=False) -> list[str]:
    """Checker (full), unchanged I/O names, types and shapes, and one onnxruntime run on random inputs;
    returns warnings, one line each.

    `label` names the pruned model in messages (its final path when `pruned_path` is a staged copy). Callers
    that still hold the models in memory pass `feeds` and `io_checked=True` (see `check_io`), which spares
    loading both files again. A check that the dense model fails too raises UncheckableError (exit 1), not
    InvalidOutputError (exit 5, a bug). An input model that the checker refuses but onnxruntime loads (a graph
    output declared without a shape, ...) is accepted: the pruned model must then fail the checker the same way
    and no other, and pass the rest; a warning says so.
    """
    from .inputs import make_inputs

    label = str(label or pruned_path)
    warnings: list[str] = []

    def line(exc: BaseException) -> str:
        return _line(exc).replace(str(pruned_path), label)

    pruned_failure = _checker_failure(pruned_path)
    if pruned_failure is not None:
        dense_failure = _checker_failure(dense_path)
        if dense_failure is None:
            raise InvalidOutputError(
                f"the pruned model fails the ONNX checker and was not kept: {pruned_failure.replace(str(pruned_path), label)}"
            )
        load_failure = _load_failure(dense_path)
        if load_failure is not None:
            raise UncheckableError(
                f"the input model fails the ONNX checker ({dense_failure}) and onnxruntime cannot load it "
                f"({load_failure}); {NO_CHECK_HINT}"
            )
        warnings.append(_checked_like_the_input(dense_path, pruned_path, dense_failure, label))
    if not io_checked or feeds is None:
        dense = onnx.load(str(dense_path), load_external_data=False)
        pruned = onnx.load(str(pruned_path), load_external_data=False)
        check_io(io_signature(dense), pruned)
        del dense
        feeds = make_inputs(pruned, shapes=shapes, samples=1, seed=0)[0]
    failure = _run_failure(pruned_path, feeds)
    if failure is None:
        return warnings
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
            return warnings
        raise InvalidOutputError(f"the pruned model does not run in onnxruntime and was not kept: {line(failure)}")
    raise UncheckableError(
        f"onnxruntime cannot run the input model either ({dense_failure}); pin the input shapes with --shape, "
        f"or {NO_CHECK_HINT}"
    )


RETRY_SIZES = (64, 256)


def _feeds_with_dynamic_dims(path, shapes, size: int):
    """Random feeds where every dynamic dim but the first is `size` (dims pinned with --shape are kept)."""
    from .inputs import make_inputs, model_inputs

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


def _checked_like_the_input(dense_path, pruned_path, dense_failure: str, label: str) -> str:
    """For an input model that fails the checker but loads in onnxruntime: check both models again with the
    types of their graph inputs and outputs completed by shape inference (the checker stops at a graph output
    declared without a shape before it looks at any node), and require of the pruned model what the input model
    passes, or else the same failure. Returns the warning to show; raises InvalidOutputError."""
    dense_again = _checker_failure(dense_path, complete_io=True)
    pruned_again = _checker_failure(pruned_path, complete_io=True)
    if dense_again is None and pruned_again is None:
        return (f"the input model fails the ONNX checker ({dense_failure}), but onnxruntime runs it; the pruned "
                "model was held to the checks the input model passes: the checker once shape inference completes "
                "the graph inputs' and outputs' types, the same inputs and outputs, and an onnxruntime run")
    if pruned_again is not None and (
            dense_again is None or _unplaced(pruned_again, pruned_path) != _unplaced(dense_again, dense_path)):
        raise InvalidOutputError(
            "the pruned model fails the ONNX checker where the input model does not and was not kept: "
            f"{pruned_again.replace(str(pruned_path), label)} (the input model fails it with: {dense_failure})"
        )
    return (f"the input model fails the ONNX checker ({dense_again}), but onnxruntime runs it; the pruned model "
            "fails the checker the same way and was held to the rest: the same inputs and outputs, and an "
            "onnxruntime run")


def _checker_failure(path, complete_io: bool = False) -> Optional[str]:
    try:
        if complete_io:
            onnx.checker.check_model(_with_io_shapes(onnx.load(str(path))), full_check=True)
        else:
            onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        return _line(exc)
    return None


def _with_io_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` whose graph inputs and outputs declared without a shape get the one shape inference finds."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # the checker, run next, says what is wrong
        return model
    types = {vi.name: vi.type for vi in list(inferred.graph.input) + list(inferred.graph.output)}
    for vi in list(model.graph.input) + list(model.graph.output):
        tensor = vi.type.tensor_type
        found = types.get(vi.name)
        if vi.type.HasField("tensor_type") and not tensor.HasField("shape") and found is not None \
                and found.tensor_type.HasField("shape"):
            tensor.shape.CopyFrom(found.tensor_type.shape)
    return model


def _load_failure(path) -> Optional[str]:
    """Why onnxruntime cannot load the model at `path`, or None when it loads."""
    from .session import open_session

    try:
        open_session(str(path))
    except OnnxPruneError as exc:
        return _line(exc).split("onnxruntime cannot load it: ", 1)[-1]
    return None


def _unplaced(message: str, path) -> str:
    """A checker message without the model's path, to compare two models' findings."""
    return message.replace(str(path), "<model>")


def _run_failure(path, feeds) -> Optional[str]:
    """Why onnxruntime cannot run the model at `path` on `feeds`, or None when it runs."""
    from .session import open_session, run_session

    try:
        run_session(open_session(str(path)), feeds, str(path))
    except Exception as exc:
        return _line(exc)
    return None


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
