"""Text and Markdown tables for the commands' reports: one way to format a number and to align a table."""

from __future__ import annotations

import math
from typing import Collection, Optional, Sequence


def num(value: Optional[float], spec: str, suffix: str = "") -> str:
    """`value` formatted with `spec` (and `suffix`), or "-" when it is missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def shorten(text: str, width: int = 56) -> str:
    """`text` cut in the middle to at most `width` characters (exporters' fused layer names run to hundreds)."""
    if len(text) <= width:
        return text
    head = (width - 3) // 2
    return text[:head] + "..." + text[len(text) - (width - 3 - head):]


def plain(rows: Sequence[Sequence[str]], left: Collection[int]) -> list[str]:
    """Rows (the header first) as aligned text lines: the columns in `left` left-aligned, the others right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]], left: Collection[int]) -> list[str]:
    """A Markdown table: the columns in `left` left-aligned, the others right; "|" inside cells escaped."""
    align = ["---" if i in left else "---:" for i in range(len(header))]
    return (["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
            + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows])
