"""Lowering traced graphs to a schedule with no cluster: calls in topological order.

This is the plan the embedded runtime uses when no cluster is given. :func:`compile` in
``flowrl.compiler`` produces the same op list enriched with placement, memory and offload ops.
"""

from __future__ import annotations

from flowrl.ir import FlowGraph, Op, Schedule


def call_ops(graph: FlowGraph) -> list[Op]:
    """One ``call`` op per node, in deterministic topological order."""
    return [Op("call", c.model, node=c.id) for c in graph.calls()]


def sync_ops(sync: list[tuple[str, str]]) -> list[Op]:
    """``sync`` ops for (trainer, inference model) pairs."""
    return [Op("sync", dst, src=src) for src, dst in sync]


def lower(graphs: dict[str, FlowGraph], sync: list[tuple[str, str]]) -> Schedule:
    """A schedule of every role's calls, plus the parameter sync after training."""
    ops = {role: call_ops(g) for role, g in graphs.items()}
    ops["sync"] = sync_ops(sync)
    return Schedule(graphs=dict(graphs), ops=ops, strategy="none")
