"""The default registry holds every rule that an op-family module defines, and only those."""

import importlib
import pkgutil

from onnx import helper

import onnxprune.deps.ops as ops
from onnxprune.deps.ops import default_registry
from onnxprune.deps.rules import OpRule


def _rules_defined_in(module) -> list[OpRule]:
    """Every OpRule a module holds at its top level, alone or in a list or tuple."""
    found = []
    for value in vars(module).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        found += [item for item in items if isinstance(item, OpRule)]
    return found


def _family_modules():
    return [importlib.import_module(f"{ops.__name__}.{info.name}") for info in pkgutil.iter_modules(ops.__path__)]


def test_every_rule_of_every_op_family_is_in_the_default_registry():
    registry = default_registry()
    defined = {module.__name__: _rules_defined_in(module) for module in _family_modules()}
    with_rules = sorted(name for name, rules in defined.items() if rules)
    assert len(with_rules) >= 8, with_rules  # conv, elementwise, fused, linear, norm, pool, reindex, shape
    missing = [
        f"{name}: {rule.domain or 'ai.onnx'}::{op}"
        for name, rules in defined.items() for rule in rules for op in rule.op_types
        if registry.get(helper.make_node(op, [], [], domain=rule.domain)) is not rule
    ]
    assert not missing, f"rules defined but not in the default registry: {missing}"
    assert {m.__name__ for m in ops.FAMILIES} == set(with_rules)


def test_the_default_registry_holds_no_rule_defined_outside_the_op_families():
    defined = {id(rule) for module in _family_modules() for rule in _rules_defined_in(module)}
    registry = default_registry()
    assert registry.op_types() and all(id(rule) in defined for rule in registry._rules.values())
