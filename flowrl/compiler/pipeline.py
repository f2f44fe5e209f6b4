"""``compile_schedule``: the pass list validate -> decoupled -> resources -> placement ->
memory -> offload -> schedule -> pipeline -> assemble, run by
:func:`~flowrl.compiler.passes.run_passes`.

Placement strategy ``search`` scores each candidate placement by running the same list from
``memory`` to ``schedule`` (:data:`SCORING_PASSES`) on a candidate context; with
``max_staleness >= 1`` the score is the pipelined steady state, so search prefers placements
whose rollout and train overlap.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flowrl.compiler.colocation import colocation_units
from flowrl.compiler.costmodel import call_kind
from flowrl.compiler.decouple import insert_proximal_logprobs
from flowrl.compiler.host_memory import host_report
from flowrl.compiler.summary import summarize_plan
from flowrl.compiler.memory import memory
from flowrl.compiler.offload import offload
from flowrl.compiler.passes import Pass, PipelineAdvice, PlanContext, run_passes
from flowrl.compiler.parallelism import plan_layout, with_layouts
from flowrl.compiler.pipelining import scored_time
from flowrl.compiler.placement import Workload, plan_placement
from flowrl.compiler.resources import ModelResources, model_resources, repeats
from flowrl.compiler.schedule import OpCosts, schedule
from flowrl.compiler.validate import validate
from flowrl.config import ModelConfig, RuntimeArgs
from flowrl.errors import FlowRLError
from flowrl.ir.ops import PlanSummary
from flowrl.ir import (ClusterSpec, FlowGraph, MemoryPoint, MemoryReport, Mesh, PipelinePlan,
                       Schedule, Suggestion, group_workers, parse_cluster)


def default_runtime_args() -> RuntimeArgs:
    """The active config's ``runtime_args`` when ``flowrl.init`` ran, else the defaults."""
    from flowrl import context  # the controller's state: read only when no args are given

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


# ---- the passes -------------------------------------------------------------------------------
def _validate(ctx: PlanContext) -> dict[str, Any]:
    validate(ctx.graphs, ctx.models, ctx.sync, ctx.cluster, ctx.strategy, ctx.methods,
             ctx.colocation)
    return {"validated": True}


def _decoupled(ctx: PlanContext) -> dict[str, Any]:
    return {"graphs": insert_proximal_logprobs(ctx.graphs, ctx.sync, ctx.args, ctx.methods)}


def _resources(ctx: PlanContext) -> dict[str, Any]:
    resources = model_resources(ctx.models, ctx.graphs, ctx.sync, ctx.capabilities)
    return {"resources": resources, "units": colocation_units(resources, ctx.colocation),
            "workload": workload(ctx.graphs, ctx.args, resources)}


def _score(ctx: PlanContext, meshes: dict[str, Mesh], staleness: int | None = None) -> float:
    """Estimated seconds per episode of ``meshes`` (the scoring passes on a candidate), at
    ``staleness`` (default: the config's ``max_staleness``)."""
    args = ctx.args if staleness is None else \
        ctx.args.model_copy(update={"max_staleness": staleness})
    timed = run_passes(replace(ctx, meshes=meshes, args=args, layout=None),
                       SCORING_PASSES).timed
    return scored_time(timed.estimates, timed.pipeline)


def _placement(ctx: PlanContext) -> dict[str, Any]:
    placed = plan_placement(ctx.units, ctx.resources, ctx.cluster, ctx.strategy, ctx.workload,
                            ctx.args, ctx.seed, lambda m: _score(ctx, m),
                            lambda m, k: _score(ctx, m, k))
    return {"meshes": placed.meshes,
            "layout": plan_layout(placed, ctx.graphs, ctx.resources, ctx.workload, ctx.sync,
                                  ctx.cluster, ctx.args),
            "candidates": _runner_up_summaries(ctx, placed.runners_up)}


def _runner_up_summaries(ctx: PlanContext, runners: tuple) -> list[PlanSummary]:
    """What ``flowrl explain`` compares the chosen plan with: each runner-up the strategy
    kept, timed by the scoring passes (one that no longer fits is left out)."""
    out = []
    for label, meshes, k in runners:
        args = ctx.args if k is None else ctx.args.model_copy(update={"max_staleness": k})
        try:
            done = run_passes(replace(ctx, meshes=meshes, args=args, layout=None),
                              SCORING_PASSES)
        except FlowRLError:
            continue
        out.append(summarize_plan(label, done.timed.estimates, done.timed.pipeline, meshes,
                                  ctx.cluster, max(done.offload_plan.peak_after, default=0)))
    return out


def _planned(ctx: PlanContext) -> dict[str, ModelResources]:
    """The resources at the placement's per-model layouts (a mesh's tp/pp may differ from
    the config's when ``search`` chose them)."""
    return with_layouts(ctx.resources, ctx.meshes)


def _memory(ctx: PlanContext) -> dict[str, Any]:
    return {"memory": memory(ctx.graphs, ctx.sync, _planned(ctx), ctx.meshes, ctx.cluster,
                             ctx.args)}


def _offload(ctx: PlanContext) -> dict[str, Any]:
    return {"offload_plan": offload(ctx.memory, _planned(ctx))}


def _schedule(ctx: PlanContext) -> dict[str, Any]:
    return {"timed": schedule(ctx.memory, ctx.offload_plan, ctx.graphs, _planned(ctx),
                              ctx.meshes, ctx.cluster, ctx.args, ctx.op_costs)}


#: The placement the "no overlap" advice proposes: disjoint devices for rollout and train.
ADVISED_STRATEGY = "disaggregate"


def _stage_groups(ctx: PlanContext) -> list[list[str]]:
    """Colocation groups that keep each stage's models together: the rollout flow's models
    and the train flow's (models called in both stay with the rollout)."""
    ro = ctx.graphs["rollout"].models()
    tr = [m for m in ctx.graphs["train"].models() if m not in ro]
    return [g for g in (ro, tr) if len(g) > 1]


def _advice(ctx: PlanContext, plan: PipelinePlan) -> PipelinePlan:
    """``plan`` with, when its stages share devices, the best disaggregated placement that
    overlaps them (compiled with the same passes; first with the config's colocation, then
    with one group per stage), or notes saying why there is none."""
    notes, best = list(plan.notes), None
    options = [ctx.colocation, (ctx.colocation or []) + _stage_groups(ctx)]
    for groups in [g for i, g in enumerate(options) if (g or []) not in
                   [o or [] for o in options[:i]]]:  # without repeats
        try:
            alt = replace(ctx, strategy=ADVISED_STRATEGY, colocation=groups, meshes=None)
            # resources again: it forms the placement units from the colocation groups
            other = run_passes(alt, [RESOURCES, PLACEMENT] + SCORING_PASSES).timed.pipeline
        except FlowRLError as e:
            notes.append(f"no {ADVISED_STRATEGY} placement fits cluster "
                         f"'{ctx.cluster.name}': {str(e).splitlines()[0]}")
            continue
        if not other.overlap:
            notes.append(f"a {ADVISED_STRATEGY} placement still shares devices "
                         f"{list(other.shared_devices)}")
        elif best is None or other.steady_state_time < best[0].steady_state_time:
            best = (other, tuple(tuple(g) for g in groups or ()))
    if best is None:
        return replace(plan, notes=tuple(notes))
    other, groups = best
    return replace(plan, suggestion=Suggestion(
        ADVISED_STRATEGY, other.steady_state_time,
        plan.steady_state_time / other.steady_state_time if other.steady_state_time else 1.0,
        groups))


def _pipeline(ctx: PlanContext) -> dict[str, Any]:
    plan = ctx.timed.pipeline
    if plan is not None and not plan.overlap:
        plan = _advice(ctx, plan)
    return {"pipeline": PipelineAdvice(plan)}


def _assemble(ctx: PlanContext) -> dict[str, Any]:
    mem, plan, timed = ctx.memory, ctx.offload_plan, ctx.timed
    timeline = []
    for t, mom in enumerate(mem.moments):
        resident: dict[str, list[str]] = {}
        for m, k in mem.items:  # config order, kinds in canonical order
            if (m, k) in plan.residency[t]:
                resident.setdefault(m, []).append(k)
        timeline.append(MemoryPoint(mom.role, plan.moment_index[t], mom.op.label(),
                                    timed.moment_times[t], mem.before[t], plan.after[t],
                                    resident))
    state = {m: {k: it.per_device for (mm, k), it in mem.items.items() if mm == m}
             for m in ctx.resources}
    report = MemoryReport([mem.capacity] * mem.num_devices, mem.peak_before, plan.peak_after,
                          timeline, state, *host_report(mem, plan.residency, plan.host_after))
    ops = {role: timed.ops.get(role, []) for role in mem.roles}
    timed.estimates.candidates = list(ctx.candidates or [])
    return {"schedule": Schedule(
        graphs=dict(ctx.graphs), ops=ops, placement=dict(ctx.meshes), memory=report,
        estimates=timed.estimates, cluster=ctx.cluster, strategy=ctx.strategy,
        worker_groups=group_workers(ctx.meshes, list(ctx.resources)),
        pipeline=ctx.pipeline.plan, layout=ctx.layout)}


VALIDATE = Pass("validate", (), ("validated",), _validate)
DECOUPLED = Pass("decoupled", ("validated",), ("graphs",), _decoupled)
RESOURCES = Pass("resources", ("validated",), ("resources", "units", "workload"), _resources)
PLACEMENT = Pass("placement", ("resources", "units", "workload"),
                 ("meshes", "layout", "candidates"),
                 _placement)
MEMORY = Pass("memory", ("resources", "meshes"), ("memory",), _memory)
OFFLOAD = Pass("offload", ("memory", "resources"), ("offload_plan",), _offload)
SCHEDULE = Pass("schedule", ("memory", "offload_plan", "meshes"), ("timed",), _schedule)
PIPELINE = Pass("pipeline", ("timed",), ("pipeline",), _pipeline)
ASSEMBLE = Pass("assemble", ("memory", "offload_plan", "timed", "pipeline"), ("schedule",),
                _assemble)

#: The compile pipeline, in order.
PASSES = [VALIDATE, DECOUPLED, RESOURCES, PLACEMENT, MEMORY, OFFLOAD, SCHEDULE, PIPELINE,
          ASSEMBLE]
#: What scores a candidate placement: the same list from ``memory`` up to the estimate.
SCORING_PASSES = PASSES[PASSES.index(MEMORY):PASSES.index(SCHEDULE) + 1]


def compile_schedule(graphs: dict[str, FlowGraph], models: dict[str, ModelConfig],
                     sync: list[tuple[str, str]], cluster: str | ClusterSpec,
                     strategy: str = "colocate",
                     methods: dict[str, frozenset[str]] | None = None, seed: int = 0, *,
                     runtime_args: RuntimeArgs | None = None,
                     colocation: list[list[str]] | None = None,
                     op_costs: OpCosts | None = None,
                     capabilities: dict[str, dict[str, bool]] | None = None) -> Schedule:
    """Compile traced flows onto a cluster.

    Args:
        graphs: flow role (``rollout``, ``train``, optionally ``eval``) -> traced graph.
        models: model_name -> its config section.
        sync: (trainer, inference model) pairs synced after training.
        cluster: ``"8xH100-80GB"``, ``"2x8xA100-40GB"``, ``"local"``, ``"local:N"`` or a
            :class:`ClusterSpec`.
        strategy: a registered placement strategy (``colocate``, ``disaggregate``,
            ``manual``, ``search``).
        methods: public methods each model's class implements (validation).
        seed: makes ``search`` reproducible.
        runtime_args: batch sizes and repetition counts; default: the active config's
            (``flowrl.init``), else :class:`RuntimeArgs` defaults.
        colocation: extra groups of model names that must share devices.
        op_costs: ``(role, op, analytic seconds) -> seconds`` replacing the cost model's op
            durations (profile-guided costs, see :mod:`flowrl.compiler.profile`); placement
            search scores candidates with it too.
        capabilities: per model, the parallel dimensions its module class runs
            (``{"tp": bool, "pp": bool}``, :attr:`flowrl.models.base.BaseModule.parallelism`);
            the planner chooses only those (a model missing: its config's tp/pp); None:
            every dimension (planning from configs alone). A model's
            ``"continuous_batching": True`` (its module's
            :attr:`~flowrl.models.base.BaseModule.generation_batching`) makes its decode
            continuous unless its config sets ``generation.batching``.

    Raises:
        CompileError: invalid flow/config/cluster (names the model and field).
        OutOfMemoryAtCompileError: a device overflows and offload policies forbid a fix.
    """
    args = runtime_args if runtime_args is not None else default_runtime_args()
    ctx = PlanContext(graphs=graphs, models=models, sync=list(sync),
                      cluster=parse_cluster(cluster), args=args, strategy=strategy,
                      methods=methods, seed=seed, colocation=colocation, op_costs=op_costs,
                      capabilities=capabilities)
    return run_passes(ctx, PASSES).schedule
