"""Where a model came from: content hashes of model files and the versions of the tools that made them.

A model's SHA-256 covers the .onnx file and, for a model with external data, each data file it reads (sorted by
name, each preceded by its name), so that two copies hash alike wherever they lie. An in-memory model hashes its
serialized bytes.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Union

import onnx

from .errors import ModelLoadError
from .io import ModelSource, check_external_paths

CHUNK = 1 << 20


def model_files(path: Union[str, os.PathLike]) -> list[Path]:
    """The model file, then the external data files it reads (sorted); ModelLoadError for a missing file."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        header = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors
        raise ModelLoadError(f"{path}: not a readable ONNX model: {(str(exc).strip().splitlines() or [''])[0]}") from None
    return [path] + sorted(check_external_paths(header, path.parent, label=str(path)))


def model_sha256(source: ModelSource) -> str:
    """The hex SHA-256 of a model: its file and external data files, or a ModelProto's serialized bytes."""
    digest = hashlib.sha256()
    if isinstance(source, onnx.ModelProto):
        digest.update(source.SerializeToString(deterministic=True))
        return digest.hexdigest()
    main, *data = model_files(source)
    _update(digest, main)
    for f in data:
        digest.update(f.name.encode() + b"\0")
        _update(digest, f)
    return digest.hexdigest()


def model_disk_bytes(path: Union[str, os.PathLike]) -> int:
    """Bytes a model takes on disk: its file and its external data."""
    return sum(f.stat().st_size for f in model_files(path))


def file_sha256(path: Union[str, os.PathLike]) -> str:
    digest = hashlib.sha256()
    _update(digest, Path(path))
    return digest.hexdigest()


def _update(digest, path: Path) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)


def versions() -> dict[str, str]:
    """The versions that decide what onnxprune writes: onnxprune, onnx, onnxruntime, numpy and Python."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy
    import onnxruntime

    try:
        own = version("onnxprune")
    except PackageNotFoundError:  # run from a source tree that is not installed
        own = "unknown"
    return {"onnxprune": own, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}
