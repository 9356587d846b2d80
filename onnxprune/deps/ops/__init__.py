"""The op rules, one module per op family, each listing its rules in `RULES`; and the default registry of them
all. A new family's module is added to FAMILIES (a test fails for a module with rules that is not listed)."""

from __future__ import annotations

from ..rules import Registry
from . import conv, elementwise, fused, linear, norm, pool, recurrent, reindex, shape

FAMILIES = (conv, elementwise, linear, recurrent, norm, pool, reindex, shape, fused)


def default_registry() -> Registry:
    """A registry of every rule of every op family."""
    return Registry([rule for family in FAMILIES for rule in family.RULES])
