"""``compile_schedule``: validate -> placement (+colocation) -> memory -> offload -> schedule."""

from __future__ import annotations

from flowrl.compiler.cluster import ClusterSpec, parse_cluster
from flowrl.compiler.colocation import colocation_units
from flowrl.compiler.costmodel import call_kind
from flowrl.compiler.ir import FlowGraph, MemoryPoint, MemoryReport, Mesh, Schedule
from flowrl.compiler.memory import memory
from flowrl.compiler.offload import offload
from flowrl.compiler.placement import Workload, placement
from flowrl.compiler.resources import ModelResources, model_resources, repeats
from flowrl.compiler.schedule import OpCosts, schedule
from flowrl.compiler.validate import validate
from flowrl.config import ModelConfig, RuntimeArgs


def default_runtime_args() -> RuntimeArgs:
    """The active config's ``runtime_args`` when ``flowrl.init`` ran, else the defaults."""
    from flowrl import context

    return context.get_args().runtime_args if context.is_initialized() else RuntimeArgs()


def workload(graphs: dict[str, FlowGraph], args: RuntimeArgs,
             resources: dict[str, ModelResources]) -> Workload:
    """model -> [(call kind, runs per iteration)] over the rollout and train flows."""
    reps = repeats(args)
    out: Workload = {}
    for role in ("rollout", "train"):
        for call in graphs[role].calls():
            kind = call_kind(call, role, resources[call.model])
            out.setdefault(call.model, []).append((kind, reps[role]))
    return out


def plan_placement(graphs: dict[str, FlowGraph], sync: list[tuple[str, str]],
                   resources: dict[str, ModelResources], meshes: dict[str, Mesh],
                   cluster: ClusterSpec, args: RuntimeArgs, strategy: str,
                   op_costs: OpCosts | None = None) -> Schedule:
    """Run memory -> offload -> schedule for a fixed placement and assemble the Schedule."""
    mem = memory(graphs, sync, resources, meshes, cluster, args)
    plan = offload(mem, resources)
    est, times = schedule(mem, plan, graphs, resources, meshes, cluster, args, op_costs)
    timeline = []
    for t, mom in enumerate(mem.moments):
        resident: dict[str, list[str]] = {}
        for m, k in mem.items:  # config order, kinds in canonical order
            if (m, k) in plan.residency[t]:
                resident.setdefault(m, []).append(k)
        timeline.append(MemoryPoint(mom.role, plan.moment_index[t], mom.op.label(), times[t],
                                    mem.before[t], plan.after[t], resident))
    state = {m: {k: it.per_device for (mm, k), it in mem.items.items() if mm == m}
             for m in resources}
    report = MemoryReport([mem.capacity] * mem.num_devices, mem.peak_before, plan.peak_after,
                          timeline, state)
    ops = {role: plan.ops.get(role, []) for role in mem.roles}
    return Schedule(graphs=dict(graphs), ops=ops, placement=dict(meshes), memory=report,
                    estimates=est, cluster=cluster, strategy=strategy)


def compile_schedule(graphs: dict[str, FlowGraph], models: dict[str, ModelConfig],
                     sync: list[tuple[str, str]], cluster: str | ClusterSpec,
                     strategy: str = "colocate",
                     methods: dict[str, frozenset[str]] | None = None, seed: int = 0, *,
                     runtime_args: RuntimeArgs | None = None,
                     colocation: list[list[str]] | None = None,
                     op_costs: OpCosts | None = None) -> Schedule:
    """Compile traced flows onto a cluster.

    Args:
        graphs: flow role (``rollout``, ``train``, optionally ``eval``) -> traced graph.
        models: model_name -> its config section.
        sync: (trainer, inference model) pairs synced after training.
        cluster: ``"8xH100-80GB"``, ``"2x8xA100-40GB"``, ``"local"``, ``"local:N"`` or a
            :class:`ClusterSpec`.
        strategy: ``colocate``, ``disaggregate``, ``manual`` or ``search``.
        methods: public methods each model's class implements (validation).
        seed: makes ``search`` reproducible.
        runtime_args: batch sizes and repetition counts; default: the active config's
            (``flowrl.init``), else :class:`RuntimeArgs` defaults.
        colocation: extra groups of model names that must share devices.
        op_costs: ``(role, op, analytic seconds) -> seconds`` replacing the cost model's op
            durations (profile-guided costs, see :mod:`flowrl.compiler.profile`); placement
            search scores candidates with it too.

    Raises:
        CompileError: invalid flow/config/cluster (names the model and field).
        OutOfMemoryAtCompileError: a device overflows and offload policies forbid a fix.
    """
    spec = parse_cluster(cluster)
    args = runtime_args if runtime_args is not None else default_runtime_args()
    validate(graphs, models, sync, spec, strategy, methods, colocation)
    resources = model_resources(models, graphs, sync)
    units = colocation_units(resources, colocation)
    work = workload(graphs, args, resources)

    def evaluate(meshes: dict[str, Mesh]) -> float:
        mem = memory(graphs, sync, resources, meshes, spec, args)
        est, _ = schedule(mem, offload(mem, resources), graphs, resources, meshes, spec, args,
                          op_costs)
        return est.iteration_time

    meshes = placement(units, resources, spec, strategy, work, args, seed, evaluate)
    return plan_placement(graphs, sync, resources, meshes, spec, args, strategy, op_costs)
