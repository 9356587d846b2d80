"""Integrations behind optional extras: an MLflow model registry (`onnxprune[mlflow]`) and Ray (`onnxprune[ray]`).

The core package never imports this package; each module here imports its extra inside the functions that need
it, and says which extra is missing in one line (see `require`).
"""

from __future__ import annotations

import importlib

from ..errors import OptionError


def require(module: str, extra: str):
    """Import `module`, or raise a one-line OptionError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise OptionError(f"needs onnxprune[{extra}]: pip install 'onnxprune[{extra}]'") from None
