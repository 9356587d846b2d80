"""Channel spaces and layouts: how the channel indices of many tensors are tied together.

A *space* is one index space of size `size` (say, the output channels of one Conv). A *layout* describes
one tensor axis as a sequence of segments; `Seg(space, inner)` covers `space.size * inner` consecutive
positions and maps position `p` (within the segment) to index `p // inner` of the space. So:

- identity:        [Seg(S)]
- Concat:          [Seg(A), Seg(B)]           (offsets are implicit in the order)
- Flatten of CxHxW:[Seg(S, H*W)]              (channel i owns H*W consecutive positions)
- attention heads: [Seg(Heads, head_dim)]     (head h owns head_dim consecutive positions)

Spaces change in three ways, all recorded, never undone, so every layout built earlier stays valid:
- *union*: two spaces become one (a residual Add ties its operands' channels);
- *refine*: a space splits into consecutive parts (a Split or Slice cuts through it);
- *coarsen*: a space becomes a space of blocks (a Reshape to [heads, head_dim] or a grouped Conv).
`resolve` follows these records and returns a layout made of *leaf* spaces: the groups of the model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np


@dataclass(eq=False)
class Space:
    size: int
    id: int
    origin: str = ""
    parent: Optional["Space"] = field(default=None, repr=False)
    children: Optional[tuple["Seg", ...]] = field(default=None, repr=False)
    blocks: list[str] = field(default_factory=list, repr=False)

    def __hash__(self) -> int:
        return self.id


@dataclass(frozen=True)
class Seg:
    space: Space
    inner: int = 1

    @property
    def length(self) -> int:
        return self.space.size * self.inner


Layout = tuple[Seg, ...]


def length(layout: Layout) -> int:
    return sum(seg.length for seg in layout)


class Spaces:
    """Creates spaces and keeps the union / refine / coarsen records between them."""

    def __init__(self) -> None:
        self._ids = itertools.count()

    def new(self, size: int, origin: str = "", blocks: Iterable[str] = ()) -> Space:
        if size <= 0:
            raise ValueError(f"a channel space needs a positive size, got {size}")
        return Space(size=size, id=next(self._ids), origin=origin, blocks=list(blocks))

    def layout(self, size: int, origin: str = "") -> Layout:
        return (Seg(self.new(size, origin)),)

    # ---- following the records ---------------------------------------------------------------------
    @staticmethod
    def find(space: Space) -> Space:
        root = space
        while root.parent is not None:
            root = root.parent
        while space.parent is not None:  # path compression
            space.parent, space = root, space.parent
        return root

    def resolve(self, layout: Layout) -> Layout:
        out: list[Seg] = []
        for seg in layout:
            root = self.find(seg.space)
            if root.children is None:
                out.append(Seg(root, seg.inner))
            else:
                out.extend(self.resolve(tuple(Seg(c.space, c.inner * seg.inner) for c in root.children)))
        return tuple(out)

    def leaves(self, layout: Layout) -> list[Space]:
        return [seg.space for seg in self.resolve(layout)]

    # ---- changing the records ----------------------------------------------------------------------
    def _split_leaf(self, leaf: Space, at: int) -> None:
        a = self.new(at, leaf.origin, leaf.blocks)
        b = self.new(leaf.size - at, leaf.origin, leaf.blocks)
        leaf.children = (Seg(a), Seg(b))

    def _coarsen_leaf(self, leaf: Space, factor: int) -> Space:
        block = self.new(leaf.size // factor, leaf.origin, leaf.blocks)
        leaf.children = (Seg(block, factor),)
        return block

    def cut(self, layout: Layout, position: int) -> bool:
        """Make `position` a segment boundary of `layout`. False where a block of `inner` would be cut."""
        offset = 0
        for seg in self.resolve(layout):
            if offset < position < offset + seg.length:
                local = position - offset
                if local % seg.inner:
                    return False
                self._split_leaf(seg.space, local // seg.inner)
                return True
            offset += seg.length
        return 0 <= position <= offset

    def sub(self, layout: Layout, start: int, stop: int) -> Optional[Layout]:
        """The part of `layout` covering positions [start, stop), cutting spaces as needed."""
        if not (self.cut(layout, start) and self.cut(layout, stop)):
            return None
        out, offset = [], 0
        for seg in self.resolve(layout):
            if start <= offset and offset + seg.length <= stop:
                out.append(seg)
            offset += seg.length
        return tuple(out)

    def union(self, a: Space, b: Space) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra is rb:
            return True
        if ra.size != rb.size:
            return False
        if ra.children is not None or rb.children is not None:  # changed since it was resolved
            return self.align((Seg(ra),), (Seg(rb),))
        rb.parent = ra
        ra.blocks.extend(r for r in rb.blocks if r not in ra.blocks)
        return True

    def align(self, a: Layout, b: Layout) -> bool:
        """Tie two layouts of one axis together position by position. False if they cannot match."""
        if length(a) != length(b):
            return False
        for x, y in ((a, b), (b, a)):
            for boundary in _boundaries(self.resolve(x)):
                if not self.cut(y, boundary):
                    return False
        ra, rb = self.resolve(a), self.resolve(b)
        if _boundaries(ra) != _boundaries(rb):
            return False
        for sa, sb in zip(ra, rb):
            if sa.inner != sb.inner:
                small, big = (sa, sb) if sa.inner < sb.inner else (sb, sa)
                factor = big.inner // small.inner
                if big.inner % small.inner or small.space.size % factor:
                    return False
                if self.find(small.space).children is not None:
                    return False
                small = Seg(self._coarsen_leaf(self.find(small.space), factor), big.inner)
                sa, sb = small, big
            if not self.union(sa.space, sb.space):
                return False
        return True

    def coarsen(self, layout: Layout, blocks: int) -> Optional[Space]:
        """A new space of `blocks` indices, each owning length(layout)/blocks consecutive positions of `layout`."""
        total = length(layout)
        if blocks <= 0 or total % blocks:
            return None
        space = self.new(blocks)
        if not self.align(layout, (Seg(space, total // blocks),)):
            return None
        return space

    def block(self, layout: Layout, reason: str) -> None:
        for leaf in self.leaves(layout):
            if reason not in leaf.blocks:
                leaf.blocks.append(reason)

    # ---- positions after pruning ---------------------------------------------------------------------
    def positions(self, layout: Layout, keep: dict[Space, np.ndarray]) -> np.ndarray:
        """Positions along the axis that survive when each leaf keeps the indices in `keep` (default: all)."""
        parts, offset = [], 0
        for seg in self.resolve(layout):
            kept = keep.get(seg.space)
            if kept is None:
                parts.append(np.arange(offset, offset + seg.length))
            else:
                idx = (np.asarray(kept, dtype=np.int64)[:, None] * seg.inner + np.arange(seg.inner)).reshape(-1)
                parts.append(offset + idx)
            offset += seg.length
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def new_length(self, layout: Layout, keep: dict[Space, np.ndarray]) -> int:
        return sum(
            (len(keep[seg.space]) if seg.space in keep else seg.space.size) * seg.inner
            for seg in self.resolve(layout)
        )


def _boundaries(layout: Sequence[Seg]) -> list[int]:
    out, offset = [], 0
    for seg in layout:
        offset += seg.length
        out.append(offset)
    return out
