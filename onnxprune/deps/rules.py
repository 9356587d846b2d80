"""The op-rule protocol and the registry that maps op types to rules (the rules themselves, and the default
registry of them all, live in deps/ops).

A rule is a function `apply(node, ctx)` that, for one node, says how the channel axes of its inputs and
outputs tie together, using the `Context` methods (track, new_space, param, align, block, on_rewrite).
Rules never touch the model; the rewriter applies what they recorded.

Contract every rule keeps: a tracked input must be either passed on to an output (same channel index ->
same channel index, nothing mixed across channels), consumed through a constant weight (`param` with
role "in"), or blocked. Anything else would make pruning change the model's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Optional

import onnx

if TYPE_CHECKING:
    from .context import Context

ApplyFn = Callable[[onnx.NodeProto, "Context"], None]


@dataclass(frozen=True)
class OpRule:
    op_types: tuple[str, ...]
    apply: ApplyFn
    domain: str = ""
    reads_shapes: bool = False  # may read Shape outputs of tracked tensors (and decides itself)


class Registry:
    def __init__(self, rules: Iterable[OpRule]):
        self._rules: dict[tuple[str, str], OpRule] = {}
        for rule in rules:
            for op_type in rule.op_types:
                key = (rule.domain, op_type)
                if key in self._rules:
                    raise ValueError(f"two rules for {rule.domain or 'ai.onnx'}::{op_type}")
                self._rules[key] = rule

    def get(self, node: onnx.NodeProto) -> Optional[OpRule]:
        domain = "" if node.domain == "ai.onnx" else node.domain
        return self._rules.get((domain, node.op_type))

    def op_types(self) -> list[str]:
        return sorted(op for _, op in self._rules)

