"""Host memory per node: where offloaded state lives.

Offloaded (and streamed) state sits in the host RAM of the node its devices belong to: a
state item offloaded from ``k`` devices of node ``n`` takes ``k * per_device`` bytes there.
The offload pass checks every moment of the iteration against ``host_memory_gb *
host_memory_utilization`` per node (:class:`~flowrl.ir.cluster.ClusterSpec`); offloading
beyond it is infeasible (:class:`~flowrl.errors.HostMemoryError` naming the node, the bytes
and the models), not a plan that "fits".
"""

from __future__ import annotations

from flowrl.compiler.memory import Key, MemoryModel
from flowrl.compiler.resources import fmt_bytes
from flowrl.errors import HostMemoryError


def host_usage(mem: MemoryModel, resident: frozenset[Key] | set[Key]) -> list[int]:
    """Bytes of offloaded state per node while ``resident`` is on the devices."""
    use = [0] * mem.num_nodes
    for key, it in mem.items.items():
        if key not in resident:
            for d in it.devices:
                use[mem.node_of(d)] += it.per_device
    return use


def host_by_model(mem: MemoryModel, resident: frozenset[Key], node: int) -> dict[str, int]:
    """model -> bytes it has offloaded to ``node``'s host RAM (config order)."""
    out: dict[str, int] = {}
    for (m, _), it in mem.items.items():
        if (m, _) not in resident:
            n = sum(1 for d in it.devices if mem.node_of(d) == node)
            if n:
                out[m] = out.get(m, 0) + n * it.per_device
    return out


def check_host_memory(mem: MemoryModel, residency: list[frozenset[Key]]) -> list[list[int]]:
    """Per moment, per node, the host bytes of offloaded state; raise
    :class:`HostMemoryError` at the first moment a node's host RAM overflows."""
    out = []
    for t, resident in enumerate(residency):
        use = host_usage(mem, resident)
        out.append(use)
        over = [n for n, u in enumerate(use) if mem.host_capacity and u > mem.host_capacity]
        if over:
            node = max(over, key=lambda n: use[n])
            mom = mem.moments[t]
            models = "; ".join(f"{m} {fmt_bytes(b)}"
                               for m, b in host_by_model(mem, resident, node).items())
            raise HostMemoryError(
                f"host memory of node {node} overflows at {mom.role} op '{mom.op.label()}': "
                f"{fmt_bytes(use[node])} of offloaded state > {fmt_bytes(mem.host_capacity)} "
                f"usable host RAM (cluster host_memory_gb x host_memory_utilization); "
                f"offloaded there: {models}. Use more nodes or devices (less to offload per "
                f"node), smaller models, or a cluster with more host RAM")
    return out


def host_report(mem: MemoryModel, residency: list[frozenset[Key]],
                host_after: list[list[int]]) -> tuple[int, list[int], list[dict[str, int]]]:
    """(usable bytes per node, peak per node, model -> bytes at each node's peak): the
    :class:`~flowrl.ir.ops.MemoryReport` host fields."""
    peaks, models = [], []
    for node in range(mem.num_nodes):
        t = max(range(len(host_after)), key=lambda t: host_after[t][node], default=None)
        peaks.append(host_after[t][node] if t is not None else 0)
        models.append(host_by_model(mem, residency[t], node) if t is not None else {})
    return mem.host_capacity, peaks, models
