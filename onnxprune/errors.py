"""The two error families: the user's input (OnnxPruneError) and onnxprune's own bugs (InternalError).

The CLI prints either's message on one line and exits with its `exit_code`; a caller that handles bad input
catches OnnxPruneError and never swallows an InternalError by accident.
"""

import re
from typing import Sequence


class OnnxPruneError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""

    exit_code = 1


class ModelLoadError(OnnxPruneError):
    """The model file is missing, is not ONNX, is truncated, or uses an unsupported opset."""


class UnsafePathError(OnnxPruneError):
    """An external-data location leaves the model's folder, or an output would overwrite the input."""


class OptionError(OnnxPruneError):
    """An option value is out of range or inconsistent with the model.

    `params`: the parameters the message names, in the API's words ("ratio must be in [0, 1), got 2"); the
    command line names each by its option instead (`on_command_line`: "--ratio must be in [0, 1), got 2")."""

    def __init__(self, message: str = "", params: Sequence[str] = ()):
        super().__init__(message)
        self.params = tuple(params)

    def on_command_line(self) -> str:
        return on_command_line(str(self), self.params)


def on_command_line(text: str, params: Sequence[str]) -> str:
    """`text` with the first mention of each of `params` said as its option: max_ratio -> --max-ratio."""
    for param in params:
        option = "--" + param.replace("_", "-")
        text = re.sub(rf"(?<![\w-]){re.escape(param)}(?![\w-])", lambda _m: option, text, count=1)
    return text


class NothingToPruneError(OnnxPruneError):
    """No channel group of the model can be pruned."""

    exit_code = 3


class VerificationError(OnnxPruneError):
    """A fidelity gate failed: the pruned model differs from the dense one more than allowed."""

    exit_code = 4


class OnnxPruneWarning(UserWarning):
    """Something the user asked for had no effect (an exclude pattern that matches no node ...); the CLI prints
    it as a 'warning:' line on stderr, the API also lists it in the report's `warnings`. Its messages name the
    API's parameters (`params`), which the CLI says as options (on_command_line)."""

    params = ("exclude",)


class PlanMismatchError(OnnxPruneError):
    """A pruning plan does not fit the model it is applied to (a weight is missing, channel counts differ, ...)."""


class InternalError(Exception):
    """Base class of errors that reveal a bug in onnxprune, found by its own checks: not an OnnxPruneError, so
    that nothing which handles bad input catches one."""

    exit_code = 5


class InvalidOutputError(InternalError):
    """The rewrite produced a model that fails a check (the checker, unchanged I/O, an onnxruntime run)."""
