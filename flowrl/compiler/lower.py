"""Lowering traced graphs to a schedule with no cluster: calls in topological order.

This is the plan the embedded runtime uses when no cluster is given. :func:`compile` in
``flowrl.compiler`` produces the same op list enriched with placement, memory and offload ops.
"""

from __future__ import annotations

from flowrl.compiler.decouple import insert_proximal_logprobs
from flowrl.config import ModelConfig, RuntimeArgs
from flowrl.ir import FlowGraph, Mesh, Op, Schedule, WorkerGroup, group_workers


def call_ops(graph: FlowGraph) -> list[Op]:
    """One ``call`` op per node, in deterministic topological order."""
    return [Op("call", c.model, node=c.id) for c in graph.calls()]


def sync_ops(sync: list[tuple[str, str]]) -> list[Op]:
    """``sync`` ops for (trainer, inference model) pairs."""
    return [Op("sync", dst, src=src) for src, dst in sync]


def config_worker_groups(configs: dict[str, ModelConfig]) -> list[WorkerGroup]:
    """Worker groups without a cluster: the models of one ``colocation_group`` share
    devices (as many as its largest model needs), every other model gets its own
    ``total_devices``; data parallelism is each model's ``dp_size``."""
    meshes: dict[str, Mesh] = {}
    starts: dict[str, int] = {}  # colocation group -> its first device
    sizes: dict[str, int] = {}
    for m, c in configs.items():
        key = c.colocation_group or f"<{m}>"
        sizes[key] = max(sizes.get(key, 0), c.total_devices)
    next_device = 0
    for m, c in configs.items():
        key = c.colocation_group or f"<{m}>"
        if key not in starts:
            starts[key], next_device = next_device, next_device + sizes[key]
        first = starts[key]
        meshes[m] = Mesh(tuple(range(first, first + max(1, c.total_devices))), dp=c.dp_size)
    return group_workers(meshes, list(configs))  # shared devices -> one group


def lower(graphs: dict[str, FlowGraph], sync: list[tuple[str, str]],
          configs: dict[str, ModelConfig] | None = None, *,
          runtime_args: RuntimeArgs | None = None,
          methods: dict[str, frozenset[str]] | None = None) -> Schedule:
    """A schedule of every role's calls, plus the parameter sync after training; with the
    models' ``configs``, also their worker groups (:func:`config_worker_groups`). With
    ``runtime_args`` asking for decoupled PPO (``off_policy.correction: decoupled``,
    ``max_staleness >= 1``) the train flow gets the ``decoupled`` pass's proximal log-prob
    calls, as in :func:`~flowrl.compiler.compile_schedule` (``methods``: checks them)."""
    if runtime_args is not None:
        graphs = insert_proximal_logprobs(graphs, sync, runtime_args, methods)
    ops = {role: call_ops(g) for role, g in graphs.items()}
    ops["sync"] = sync_ops(sync)
    groups = config_worker_groups(configs) if configs else []
    return Schedule(graphs=dict(graphs), ops=ops, strategy="none", worker_groups=groups)
