"""Per-model parallel layouts: which tp x pp x dp a model may take on a block of devices.

The search space of :mod:`flowrl.compiler.placement.search` per model:

* tensor-parallel size ``tp``: a power of two within one node (tensor parallelism
  all-reduces every layer, so it never crosses the network);
* pipeline stages ``pp``: a power of two, only once ``tp`` fills a node (or the block), and
  at most the model's layers;
* data-parallel replicas ``dp``: what the block leaves, ``n / (tp * pp)``.

A model whose config pins its devices (``num_devices``, ``data_parallel_size`` or
``devices``) keeps its config's tp and pp, and so does a dimension the model's module cannot
run: the engine passes each module class's declared ``parallelism`` (``BaseModule``: none;
``MegatronModule``: tp and pp; ``VLLMModule``: tp) and :attr:`ModelResources.parallelism`
holds the dimensions the planner may choose (all when compiling from configs alone).

A generator (the policy a trainer syncs into) picks its layout independently of its
trainer: e.g. TP2 x DP4 generating while the trainer runs TP8. The sync then reshards the
weights; :func:`reshards` lists those syncs with the cost model's time for them.

:func:`rank_layouts` orders a model's layouts on a block by the cost model's time for the
model's own calls (those that fit alone first), so the search evaluates the promising ones
with the full pass list; :func:`with_layouts` gives the resources the later passes plan
with (a mesh's tp and pp replace the config's).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from flowrl.compiler.colocation import Unit
from flowrl.compiler.costmodel import CallKind, call_time, sync_time
from flowrl.compiler.resources import ModelResources
from flowrl.config import RuntimeArgs
from flowrl.ir import ClusterSpec, FlowGraph, Mesh
from flowrl.ir.layout import ModelLayout, PlanLayout, Reshard

if TYPE_CHECKING:  # types only: placement imports this module
    from flowrl.compiler.placement.registry import Placed, Workload

Layout = tuple[int, int]  # (tp, pp)


def _powers_of_two(limit: int) -> list[int]:
    out, x = [], 1
    while x <= limit:
        out.append(x)
        x *= 2
    return out


def layout_options(res: ModelResources, num_devices: int, cluster: ClusterSpec) -> list[Layout]:
    """(tp, pp) pairs ``res`` may take on a block of ``num_devices`` (see module docstring);
    a pinned model, or one too small to shard (fewer layers than stages, under 1 M
    parameters), has only its config's. A dimension its module cannot run
    (``res.parallelism``) stays at the config's size."""
    config = (res.tp, res.pp)
    if res.pinned_devices is not None or res.manual_devices is not None or \
            not res.parallelism:
        return [config] if num_devices % res.mp == 0 else []
    if res.num_params < 1_000_000:  # a rule reward or a toy: sharding only adds traffic
        toy = (1 if "tp" in res.parallelism else res.tp, 1 if "pp" in res.parallelism else res.pp)
        return [toy] if num_devices % (toy[0] * toy[1]) == 0 else []
    node = min(cluster.devices_per_node, num_devices)
    free_tp = "tp" in res.parallelism
    out = []
    for tp in _powers_of_two(node) if free_tp else [res.tp]:
        if num_devices % tp:
            continue
        for pp in _powers_of_two(num_devices // tp) if "pp" in res.parallelism else [res.pp]:
            # pipeline stages only once tensor parallelism fills the node (when tp is free)
            if (pp > 1 and tp < node and free_tp) or pp > res.num_layers or \
                    num_devices % (tp * pp):
                continue
            out.append((tp, pp))
    return out


def with_layout(res: ModelResources, layout: Layout) -> ModelResources:
    """``res`` planned at ``layout`` (itself when unchanged)."""
    return res if (res.tp, res.pp) == layout else replace(res, tp=layout[0], pp=layout[1])


def with_layouts(resources: dict[str, ModelResources],
                 meshes: dict[str, Mesh]) -> dict[str, ModelResources]:
    """The resources the passes after placement plan with: each mesh's tp and pp."""
    return {m: with_layout(r, (meshes[m].tp, meshes[m].pp)) if m in meshes else r
            for m, r in resources.items()}


def layout_cost(res: ModelResources, layout: Layout, num_devices: int,
                calls: list[tuple[CallKind, int]], args: RuntimeArgs,
                cluster: ClusterSpec) -> tuple[int, float]:
    """(bytes per device by which the model's biggest call overflows alone, seconds of its
    calls per episode) at ``layout`` on ``num_devices`` devices."""
    from flowrl.compiler.placement.disaggregate import unit_overflow  # placement imports us

    r = with_layout(res, layout)
    devices = tuple(range(num_devices))
    mesh = Mesh(devices, r.tp, r.pp, num_devices // r.mp)
    seconds = sum(runs * call_time(kind, r, mesh, args, cluster) for kind, runs in calls)
    unit = Unit(r.name, (r.name,), r.mp, num_devices)
    over = unit_overflow(unit, devices, {r.name: r}, {r.name: calls}, args, cluster)
    return max(0, over), seconds


def rank_layouts(res: ModelResources, num_devices: int, calls: list[tuple[CallKind, int]],
                 args: RuntimeArgs, cluster: ClusterSpec) -> list[Layout]:
    """:func:`layout_options` ordered best first: layouts whose calls fit alone, fastest
    first, then the rest by overflow (the offload pass may still make them fit)."""
    scored = [(layout_cost(res, lay, num_devices, calls, args, cluster), lay)
              for lay in layout_options(res, num_devices, cluster)]
    scored.sort(key=lambda x: (x[0][0], x[0][1], x[1]))
    return [lay for _, lay in scored]


def mesh_at(devices: tuple[int, ...], layout: Layout) -> Mesh:
    """The mesh of ``layout`` on ``devices`` (all of them)."""
    tp, pp = layout
    return Mesh(devices, tp, pp, len(devices) // (tp * pp))


def reshards(resources: dict[str, ModelResources], meshes: dict[str, Mesh],
             sync: list[tuple[str, str]], cluster: ClusterSpec) -> tuple[Reshard, ...]:
    """Syncs whose trainer and generator layouts (or devices) differ, with their seconds."""
    out = []
    planned = with_layouts(resources, meshes)
    for src, dst in sync:
        a, b = meshes[src], meshes[dst]
        if (a.tp, a.pp, a.devices) == (b.tp, b.pp, b.devices):
            continue
        seconds = sync_time(planned[src], a, planned[dst], b, cluster)
        out.append(Reshard(src, dst, _describe(a), _describe(b), seconds))
    return tuple(out)


def _describe(mesh: Mesh) -> str:
    pp = f"xPP{mesh.pp}" if mesh.pp > 1 else ""
    return f"TP{mesh.tp}{pp}xDP{mesh.dp}"


def model_roles(workload: "Workload") -> dict[str, str]:
    """model -> ``generate`` (samples), ``score`` (a rollout forward) or ``train``."""
    out = {}
    for m, calls in workload.items():
        kinds = {k for k, _ in calls}
        out[m] = "generate" if "generate" in kinds else "score" if "forward" in kinds else \
            "train"
    return out


def model_layouts(resources: dict[str, ModelResources], meshes: dict[str, Mesh],
                  roles: dict[str, str]) -> tuple[ModelLayout, ...]:
    """Each placed model's :class:`ModelLayout` (``from_config``: tp and pp as configured)."""
    return tuple(ModelLayout(m, roles.get(m, "score"), mesh.tp, mesh.pp, mesh.dp, mesh.devices,
                             (mesh.tp, mesh.pp) == (resources[m].tp, resources[m].pp))
                 for m, mesh in meshes.items() if m in resources)


def unhonoured(layouts: tuple[ModelLayout, ...]) -> tuple[str, ...]:
    """Notes for layouts the runtime can honour only partly: data parallelism and device
    counts are what the runtimes run; tensor and pipeline sharding inside a replica are up
    to the module (vLLM and Megatron modules read ``models.<name>.parallel``)."""
    notes = []
    for m in layouts:
        if not m.from_config:
            notes.append(f"model '{m.model}': the plan chose {m.describe()}; set "
                         f"models.{m.model}.parallel.tp={m.tp}"
                         + (f" and parallel.pp={m.pp}" if m.pp > 1 else "")
                         + " for a module that shards (the built-in HF modules run each "
                           "replica unsharded on its devices)")
    return tuple(notes)


def _family(placed_family: str, rollout: tuple[int, ...], train: tuple[int, ...],
            num_devices: int) -> str:
    """The strategy's family, or the one the devices show (every device shared by both
    stages: colocated; none shared: disaggregated; else custom)."""
    if placed_family != "custom":
        return placed_family
    shared = set(rollout) & set(train)
    if not shared:
        return "disaggregated"
    return "colocated" if len(shared) == len(set(rollout) | set(train)) == num_devices \
        else "custom"


def plan_layout(placed: "Placed", graphs: dict[str, FlowGraph],
                resources: dict[str, ModelResources], workload: "Workload",
                sync: list[tuple[str, str]], cluster: ClusterSpec,
                args: RuntimeArgs) -> PlanLayout:
    """The :class:`PlanLayout` the placement pass records for a strategy's answer."""
    from flowrl.compiler.pipelining import flow_devices

    meshes = placed.meshes
    rollout = flow_devices(graphs.get("rollout"), meshes)
    train = flow_devices(graphs.get("train"), meshes)
    k = args.max_staleness if placed.staleness is None else placed.staleness
    layouts = model_layouts(resources, meshes, model_roles(workload))
    notes = unhonoured(layouts)
    if k < args.max_staleness:
        notes += (f"the plan needs staleness {k} (runtime_args.max_staleness is "
                  f"{args.max_staleness}: the runtime runs what the config says; set it to "
                  f"{k} for fresher samples at the same estimated speed)",)
    return PlanLayout(_family(placed.family, rollout, train, cluster.num_devices), rollout,
                      train, k, args.max_staleness, layouts,
                      reshards(resources, meshes, sync, cluster),
                      placed.score if math.isfinite(placed.score) else None, notes)
