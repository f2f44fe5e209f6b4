"""Device plans by family and rollout:train split, and strategy ``hybrid``.

A *device plan* gives every unit a block of devices from one of three families, for a split
``r : n - r`` of the cluster into a rollout block ``A = [0, r)`` and a train block
``B = [r, n)``:

* ``colocated``: every unit on all ``n`` devices (no split);
* ``disaggregated``: units of the rollout flow (generators and scorers) on ``A``, trainers on
  ``B``; with ``max_staleness >= 1`` the two stages overlap (``max(R, T) + S``);
* ``hybrid``: generators alone on ``A``, scorers on ``B``, trainers on all devices: in a
  synchronous episode the scorers work on batch ``i`` while the generator samples batch
  ``i + 1``, and training still gets every device.

Within its block every model takes the layout :func:`~flowrl.compiler.parallelism.rank_layouts`
ranks first (a different one from its trainer's, if that is faster: the sync reshards).
Splits are multiples of ``n / 8`` (or of one device below 8 devices): ``4:12`` on 16 GPUs,
``64:64`` on 128.

Strategy ``hybrid`` evaluates the hybrid and disaggregated families at every split (at the
config's staleness) and keeps the best; ``search`` explores these plans and more.
"""

from __future__ import annotations

import math
from typing import Callable

from flowrl.compiler.colocation import Unit
from flowrl.compiler.parallelism import Layout, mesh_at, model_roles, rank_layouts  # noqa: F401
from flowrl.compiler.placement.registry import PlacementRequest, Placed, Workload
from flowrl.compiler.resources import ModelResources
from flowrl.config import RuntimeArgs
from flowrl.errors import CompileError
from flowrl.ir import ClusterSpec, Mesh

FAMILIES = ("colocated", "disaggregated", "hybrid")
#: A device plan: (family, rollout block size r; r == n for colocated).
DevicePlan = tuple[str, int]


def unit_role(unit: Unit, roles: dict[str, str]) -> str:
    """A unit generates if a member does, else scores if a member scores, else trains."""
    mine = {roles.get(m, "score") for m in unit.models}
    return next(r for r in ("generate", "score", "train") if r in mine)


def split_sizes(num_devices: int) -> list[int]:
    """Rollout block sizes ``r`` (``0 < r < n``), multiples of ``max(1, n // 8)``."""
    step = max(1, num_devices // 8)
    return list(range(step, num_devices, step))


def device_plans(num_devices: int) -> list[DevicePlan]:
    """Every (family, r) the planner considers: colocated, then each family per split."""
    return [("colocated", num_devices)] + [(f, r) for r in split_sizes(num_devices)
                                          for f in FAMILIES[1:]]


def unit_blocks(plan: DevicePlan, units: list[Unit], roles: dict[str, str],
                num_devices: int) -> list[tuple[int, ...]]:
    """Each unit's block under ``plan``."""
    family, r = plan
    everything, a, b = tuple(range(num_devices)), tuple(range(r)), tuple(range(r, num_devices))
    out = []
    for u in units:
        role = unit_role(u, roles)
        if family == "colocated":
            out.append(everything)
        elif family == "disaggregated":
            out.append(b if role == "train" else a)
        else:  # hybrid
            out.append(a if role == "generate" else b if role == "score" else everything)
    return out


class LayoutRanker:
    """Cached :func:`rank_layouts` per (model, block size)."""

    def __init__(self, resources: dict[str, ModelResources], workload: Workload,
                 args: RuntimeArgs, cluster: ClusterSpec):
        self.resources, self.workload, self.args, self.cluster = resources, workload, args, \
            cluster
        self._cache: dict[tuple[str, int], list[Layout]] = {}

    def __call__(self, model: str, size: int) -> list[Layout]:
        key = (model, size)
        if key not in self._cache:
            self._cache[key] = rank_layouts(self.resources[model], size,
                                            self.workload.get(model, []), self.args,
                                            self.cluster)
        return self._cache[key]


def plan_meshes(units: list[Unit], blocks: list[tuple[int, ...]],
                resources: dict[str, ModelResources], ranker: LayoutRanker,
                choice: dict[str, int] | None = None) -> dict[str, Mesh] | None:
    """Meshes of a device plan: each model's ``choice``-th ranked layout (default the first)
    on its unit's block (a pinned model: its count from the block's start); ``None`` when a
    model has no layout there."""
    out: dict[str, Mesh] = {}
    for u, block in zip(units, blocks):
        for m in u.models:
            r = resources[m]
            if r.pinned_devices is not None:
                if r.pinned_devices > len(block):
                    return None
                out[m] = Mesh(block[:r.pinned_devices], r.tp, r.pp, r.pinned_devices // r.mp)
                continue
            ranked = ranker(m, len(block))
            i = (choice or {}).get(m, 0)
            if i >= len(ranked):
                return None
            out[m] = mesh_at(block, ranked[i])
    return out


def best_split(req: PlacementRequest, families: tuple[str, ...],
               score: Callable[[dict[str, Mesh]], float]) -> Placed:
    """The best-scoring plan of ``families`` over every split (ties: the smaller ``r``)."""
    roles = model_roles(req.workload)
    ranker = LayoutRanker(req.resources, req.workload, req.args, req.cluster)
    n = req.cluster.num_devices
    best: Placed | None = None
    errors: list[str] = []
    for plan in [p for p in device_plans(n) if p[0] in families]:
        meshes = plan_meshes(req.units, unit_blocks(plan, req.units, roles, n), req.resources,
                             ranker)
        if meshes is None:
            continue
        try:
            s = score(meshes)
        except CompileError as e:
            errors.append(str(e).splitlines()[0])
            continue
        if math.isfinite(s) and (best is None or s < best.score):
            best = Placed(meshes, None, plan[0], s)
    if best is None:
        detail = f": {errors[0]}" if errors else ""
        raise CompileError(f"strategy 'hybrid' found no {'/'.join(families)} plan that fits "
                           f"cluster '{req.cluster.name}'{detail}")
    return best


def hybrid_strategy(req: PlacementRequest) -> Placed:
    """Strategy ``hybrid`` (registered after ``search`` in ``placement/__init__.py``, so the
    strategy list keeps its order)."""
    if req.evaluate is None:
        raise CompileError("strategy 'hybrid' needs an evaluate function")
    return best_split(req, ("disaggregated", "hybrid"), req.evaluate)
