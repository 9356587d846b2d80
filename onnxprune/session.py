"""onnxruntime sessions: one opened from a path or a ModelProto (a load failure is a ModelLoadError), a run, and
one readable line for a run that failed (the input that does not fit, when that is the cause).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx

from .errors import ModelLoadError, OnnxPruneError
from .inputs import Feed
from .io import ModelSource


def first_line(exc: BaseException) -> str:
    """The first line of `exc`'s message (its type's name where it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def source_label(source: ModelSource, default: str = "model") -> str:
    """How messages name a model: its path, or a ModelProto's graph name (`default` where it has none)."""
    if isinstance(source, onnx.ModelProto):
        return source.graph.name or default
    return str(source)


def open_session(source: ModelSource, options=None, providers: Sequence = ("CPUExecutionProvider",)):
    """An onnxruntime.InferenceSession from a path or a ModelProto; load failures raise ModelLoadError."""
    import onnxruntime as ort

    if options is None:
        options = ort.SessionOptions()
        options.log_severity_level = 4
    label = source_label(source)
    if isinstance(source, onnx.ModelProto):
        try:
            payload = source.SerializeToString()
        except ValueError as exc:  # protobuf's 2 GiB limit
            raise ModelLoadError(f"{label}: too large to pass in memory, save it to a file first ({first_line(exc)})")
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such file")
        payload = str(path)
    try:
        return ort.InferenceSession(payload, sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own pybind exception classes
        raise ModelLoadError(f"{label}: onnxruntime cannot load it: {first_line(exc)}") from None


def run_session(session, feeds: Feed, label: str) -> list[np.ndarray]:
    try:
        return session.run(None, feeds)
    except Exception as exc:
        raise run_failure(session, feeds, label, exc) from None


def _dims_text(dims) -> str:
    return "x".join(str(d) if isinstance(d, int) else (d or "?") for d in dims) or "a scalar"


def feed_mismatch(session, feeds: Feed) -> Optional[str]:
    """Why `feeds` does not fit `session`'s inputs (names, element types, fixed dims), or None when it fits."""
    wanted = session.get_inputs()
    names = [i.name for i in wanted]
    missing = [n for n in names if n not in feeds]
    if missing:
        return f"it takes inputs {names}, but is given {sorted(feeds)}"
    for info in wanted:
        value = np.asarray(feeds[info.name])
        given = f"{_dims_text(value.shape)} {value.dtype}"
        onnx_type = info.type[len("tensor("):-1] if info.type.startswith("tensor(") else info.type
        type_name = {"float": "float32", "double": "float64"}.get(onnx_type, onnx_type)
        expected = f"{_dims_text(info.shape or ())} {type_name}"
        wrong_type = onnx_type != "string" and type_name != str(value.dtype)
        shape = info.shape  # None where the model does not state the rank
        wrong_shape = shape is not None and (
            len(shape) != value.ndim or any(isinstance(d, int) and d != v for d, v in zip(shape, value.shape)))
        if wrong_type or wrong_shape:
            return f"input {info.name!r} is {expected}, but is given {given}"
    return None


def run_failure(session, feeds: Feed, label: str, exc: BaseException, hint: str = "") -> OnnxPruneError:
    """One readable line for a failed run: the input that does not fit when that is the cause (plus `hint`),
    else all of onnxruntime's message on one line (its first line alone often names no index or shape)."""
    mismatch = feed_mismatch(session, feeds)
    if mismatch is not None:
        return OnnxPruneError(f"{label}: {mismatch}" + (f" ({hint})" if hint else ""))
    text = " ".join(str(exc).split()) or type(exc).__name__
    return OnnxPruneError(f"{label}: onnxruntime failed to run: {text}")
