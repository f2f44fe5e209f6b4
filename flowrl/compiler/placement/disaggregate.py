"""Strategy ``disaggregate``: units get disjoint devices.

Each starts at its fixed count (or one model-parallel group); spare devices then go, one
model-parallel group at a time, first to units whose calls cannot fit their devices even
alone (largest overflow cut per device), then to the unit whose estimated per-iteration time
drops most per device added.
"""

from __future__ import annotations

from flowrl.compiler.colocation import Unit, unit_meshes
from flowrl.compiler.costmodel import call_time
from flowrl.compiler.memory import state_bytes, transient_bytes
from flowrl.compiler.offload import STREAM_CHUNK
from flowrl.compiler.placement.registry import PlacementRequest, Workload, register_strategy
from flowrl.compiler.resources import ModelResources
from flowrl.config import RuntimeArgs
from flowrl.errors import CompileError
from flowrl.ir import ClusterSpec, Mesh


def unit_time(unit: Unit, devices: tuple[int, ...], resources: dict[str, ModelResources],
              workload: Workload, args: RuntimeArgs, cluster: ClusterSpec) -> float:
    """Estimated seconds per iteration of all calls of the unit's models on ``devices``."""
    total = 0.0
    for m, mesh in unit_meshes(unit, devices, resources).items():
        for kind, runs in workload.get(m, []):
            total += runs * call_time(kind, resources[m], mesh, args, cluster)
    return total


def unit_overflow(unit: Unit, devices: tuple[int, ...], resources: dict[str, ModelResources],
                  workload: Workload, args: RuntimeArgs, cluster: ClusterSpec) -> int:
    """Bytes per device by which the unit's biggest call exceeds capacity with nothing else
    resident (a streamed optimizer counts one chunk); 0 when every call fits alone."""
    worst = 0
    for m, mesh in unit_meshes(unit, devices, resources).items():
        r = resources[m]
        st = state_bytes(r, mesh)
        for kind, _ in workload.get(m, []):
            need = st["weights"] + transient_bytes(kind, r, mesh, args)
            if kind == "train":
                opt = st["optimizer"]
                need += st["grads"] + (min(opt, STREAM_CHUNK) if r.offloadable("optimizer")
                                       else opt)
            worst = max(worst, need - cluster.capacity_bytes)
    return worst


def layout(sizes: list[int], cluster: ClusterSpec) -> list[tuple[int, ...]]:
    """Disjoint contiguous device blocks for ``sizes`` (largest first), avoiding blocks that
    straddle a node boundary when a block fits in one node."""
    free = [True] * cluster.num_devices
    out: list[tuple[int, ...] | None] = [None] * len(sizes)
    per_node = cluster.devices_per_node
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        s = sizes[i]
        starts = range(cluster.num_devices - s + 1)
        ok = [st for st in starts if all(free[st:st + s])]
        in_node = [st for st in ok if s > per_node or st // per_node == (st + s - 1) // per_node]
        if in_node or ok:
            st = (in_node or ok)[0]
            block = tuple(range(st, st + s))
        else:  # fragmented: take any free devices
            block = tuple([d for d, f in enumerate(free) if f][:s])
        for d in block:
            free[d] = False
        out[i] = block
    return [b for b in out if b is not None]


def disaggregate(units: list[Unit], resources: dict[str, ModelResources], cluster: ClusterSpec,
                 workload: Workload, args: RuntimeArgs) -> dict[str, Mesh]:
    """Disjoint device blocks per unit, grown greedily (see the module docstring)."""
    sizes = [u.pinned or u.mp for u in units]
    if sum(sizes) > cluster.num_devices:
        asked = ", ".join(f"{u.name} {s}" for u, s in zip(units, sizes))
        raise CompileError(
            f"strategy 'disaggregate' needs {sum(sizes)} devices ({asked}) but cluster "
            f"'{cluster.name}' has {cluster.num_devices}; use 'colocate' or 'search', or "
            f"colocation groups")
    fake = tuple(range(cluster.num_devices))  # device ids do not change the estimates

    def cost(i: int, n: int) -> tuple[int, float]:
        u = units[i]
        return (unit_overflow(u, fake[:n], resources, workload, args, cluster),
                unit_time(u, fake[:n], resources, workload, args, cluster))

    costs = [cost(i, s) for i, s in enumerate(sizes)]
    spare = cluster.num_devices - sum(sizes)
    while True:
        best, best_gain, best_cost = None, (0.0, 0.0), None
        for i, u in enumerate(units):
            if u.pinned is not None or u.mp > spare:
                continue
            c = cost(i, sizes[i] + u.mp)
            gain = ((costs[i][0] - c[0]) / u.mp, (costs[i][1] - c[1]) / u.mp)
            if gain > best_gain and (gain[0] > 0 or gain[1] > best_gain[1] * (1 + 1e-9)):
                best, best_gain, best_cost = i, gain, c
        if best is None:
            break
        sizes[best] += units[best].mp
        costs[best] = best_cost
        spare -= units[best].mp
    meshes: dict[str, Mesh] = {}
    for u, block in zip(units, layout(sizes, cluster)):
        meshes.update(unit_meshes(u, block, resources))
    return meshes


@register_strategy("disaggregate")
def _disaggregate(req: PlacementRequest) -> dict[str, Mesh]:
    return disaggregate(req.units, req.resources, req.cluster, req.workload, req.args)
