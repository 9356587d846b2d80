"""Removes residual blocks (blocks.py): each branch's nodes go, and the Add's output is read as its skip input.

Consumers of a removed Add read x directly; where the Add's output is a graph output (or is read inside a
subgraph) an Identity keeps that name. A Relu that now reads a Relu's output goes (relu(relu(x)) = relu(x): the
Relu after a ResNet block's Add). Nodes that only the removed branches read (a mask or rotary tables no
block uses any more), initializers and Constant nodes nothing reads are dropped too, and so are the declared
shapes of tensors that are gone. The model is changed in place.
"""

from __future__ import annotations

from typing import Iterable

import onnx
from onnx import helper

from .blocks import Block
from .graph import DEFAULT_DOMAINS, drop_unused, subgraph_outer_names


def remove_blocks(model: onnx.ModelProto, blocks: Iterable[Block]) -> onnx.ModelProto:
    """Remove `blocks` from `model` in place (see the module's docstring); returns `model`."""
    graph = model.graph
    blocks = list(blocks)
    gone = {name for b in blocks for name in b.nodes} | {b.add for b in blocks}
    replaced = {b.output: b.skip for b in blocks}

    def source(name: str) -> str:  # a removed block's skip may itself be a removed block's output
        while name in replaced:
            name = replaced[name]
        return name

    kept_names = {vi.name for vi in graph.output}
    for node in graph.node:
        if node.name not in gone:
            kept_names |= subgraph_outer_names(node)
    by_add = {b.add: b for b in blocks}
    nodes = []
    for node in graph.node:
        b = by_add.get(node.name)
        if b is not None and b.output in kept_names:  # read by the caller or inside a subgraph: keep the name
            nodes.append(helper.make_node("Identity", [source(b.skip)], [b.output], name=f"{b.add}__skip"))
        if node.name in gone:
            continue
        for i, name in enumerate(node.input):
            if name in replaced:
                node.input[i] = source(name)
        nodes.append(node)
    outputs = {vi.name for vi in graph.output}
    del graph.node[:]
    graph.node.extend(_live(_without_repeated_relus(nodes, kept_names), outputs))
    produced = {o for node in graph.node for o in node.output} | {vi.name for vi in graph.input}
    kept_info = [vi for vi in graph.value_info if vi.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    drop_unused(model)
    return model


def _without_repeated_relus(nodes: list[onnx.NodeProto], kept_names: set[str]) -> list[onnx.NodeProto]:
    """`nodes` without a Relu of a Relu's output (relu(relu(x)) = relu(x)): a ResNet block's Add was followed by
    a Relu, which now reads the previous block's Relu. Its readers read the first Relu's output instead."""
    relu_outputs = {n.output[0] for n in nodes if n.op_type == "Relu" and n.domain in DEFAULT_DOMAINS}
    same: dict[str, str] = {}
    kept = []
    for node in nodes:
        for i, name in enumerate(node.input):
            node.input[i] = same.get(name, name)
        if (node.op_type == "Relu" and node.domain in DEFAULT_DOMAINS and node.input[0] in relu_outputs
                and node.output[0] not in kept_names):
            same[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    return kept


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """`nodes` without those whose outputs nothing reads, in order (one backward pass: nodes are sorted)."""
    needed = set(outputs)
    live = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output if o):
            live.append(node)
            needed |= {i for i in node.input if i} | subgraph_outer_names(node)
    return live[::-1]
