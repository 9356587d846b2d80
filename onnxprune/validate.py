"""Is a written model valid and runnable, with the dense model's inputs and outputs?"""

from __future__ import annotations

import onnx

from .errors import OnnxPruneError


class InvalidOutputError(OnnxPruneError):
    """The rewrite produced a model that fails a check: a bug in onnxprune, reported without traceback."""

    exit_code = 5


def _io(model: onnx.ModelProto):
    inits = {t.name for t in model.graph.initializer}

    def describe(vis):
        return [(vi.name, vi.type.SerializeToString()) for vi in vis if vi.name not in inits]

    return describe(model.graph.input), describe(model.graph.output)


def check_runnable(dense_path, pruned_path, shapes=None) -> None:
    """Checker (full), unchanged I/O names, types and shapes, and one onnxruntime run on random inputs."""
    from .verify import make_inputs, open_session, run_session

    try:
        onnx.checker.check_model(str(pruned_path), full_check=True)
    except Exception as exc:
        raise InvalidOutputError(f"the pruned model fails the ONNX checker and was not kept: {_line(exc)}") from None
    dense = onnx.load(str(dense_path), load_external_data=False)
    pruned = onnx.load(str(pruned_path), load_external_data=False)
    if _io(dense) != _io(pruned):
        raise InvalidOutputError("the pruned model's inputs or outputs differ from the dense model's; it was not kept")
    feeds = make_inputs(pruned, shapes=shapes, samples=1, seed=0)[0]
    try:
        run_session(open_session(str(pruned_path)), feeds, "pruned")
    except Exception as exc:
        raise InvalidOutputError(f"the pruned model does not run in onnxruntime and was not kept: {_line(exc)}") from None


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
