"""Pass 5, ``schedule``: durations from the cost model and an estimated timeline.

Each role's ops keep the order the offload pass gave them (calls in topological order with
their transfers); the local executor runs them one by one. The estimate models a
distributed runtime: an op starts when the ops whose outputs it reads have finished and
every device it uses is free (ops on one device run in list order; ops on disjoint devices
overlap, e.g. reference and value scoring on their own devices). Durations come from
:mod:`flowrl.compiler.costmodel`.

Iteration (episode) time: ``k`` rollout runs, ``m`` train runs and one sync, with ``k =
sample_per_episode / generation_batch_size`` and ``m = num_training_epoch *
sample_per_episode / train_global_batch_size``. The first run of a role pays the transfers
that enter it from the previous role; later runs only what a run of the role itself leaves
behind. Rollout batches are submitted together (``run_many``), so a distributed runtime
pipelines them: run ``i+1``'s ops start on a device as soon as run ``i``'s ops there are
done (each device keeps submission order). Train runs are sequential (each optimizer step
needs the previous one). Eval is estimated per run but not included in the iteration.
"""

from __future__ import annotations

from typing import Callable

from flowrl.compiler.cluster import ClusterSpec
from flowrl.compiler.costmodel import call_kind, call_time, sync_time, transfer_time
from flowrl.compiler.ir import Estimates, FlowGraph, Mesh, Op
from flowrl.compiler.memory import MemoryModel
from flowrl.compiler.offload import OffloadPlan, entry_transfer_bytes
from flowrl.compiler.resources import ModelResources, repeats
from flowrl.config import RuntimeArgs


#: Roles whose runs the episode loop submits together, so they overlap across devices.
PIPELINED = ("rollout",)


def timeline(ops: list[Op], durations: list[float], graph: FlowGraph | None,
             free: dict[int, float] | None = None, offset: float = 0.0) -> float:
    """Set ``start``/``duration`` of ``ops`` (list scheduling); returns the end of the last op.

    ``free`` (device -> time it becomes free) is updated in place, so a following run can
    continue from it; ``offset``: the earliest start.
    """
    free = {} if free is None else free
    done: dict[str, float] = {}  # node id -> end time
    end_all = offset
    for op, dur in zip(ops, durations):
        start = offset
        for d in op.devices:
            f = free.get(d, offset)
            if f > start:
                start = f
        if op.kind == "call" and graph is not None:
            for pred in graph.graph.predecessors(op.node):
                start = max(start, done.get(pred, offset))
        op.start, op.duration = start, dur
        end = start + dur
        for d in op.devices:
            free[d] = end
        if op.kind == "call":
            done[op.node] = end
        end_all = max(end_all, end)
    return end_all


def role_runs(ops: list[Op], first: list[float], repeat: list[float], graph: FlowGraph | None,
              runs: int, pipelined: bool) -> tuple[float, list[list[tuple[float, float]]]]:
    """Time ``runs`` runs of a role: total seconds and, per run, each op's (start, duration).

    Pipelined runs share device queues; otherwise each run starts when the previous ended.
    The ops are left holding the first run's times.
    """
    free: dict[int, float] = {}
    per_run, end = [], 0.0
    if not pipelined and runs > 2:  # identical repeats: time two, extrapolate the rest
        end, per_run = role_runs(ops, first, repeat, graph, 2, False)
        step = end - max(a + b for a, b in per_run[0]) if per_run[0] else 0.0
        shifted = [[(a + step * k, b) for a, b in per_run[1]] for k in range(1, runs - 1)]
        return end + step * (runs - 2), per_run[:2] + shifted
    for r in range(runs):
        if not pipelined:
            free = {}
        end = max(end, timeline(ops, first if r == 0 else repeat, graph, free,
                                0.0 if pipelined else end))
        per_run.append([(op.start, op.duration) for op in ops])
    if runs > 1:  # leave the first run's times on the ops
        for op, (st, du) in zip(ops, per_run[0]):
            op.start, op.duration = st, du
    return end, per_run


#: ``op_costs(role, op, analytic_seconds) -> seconds``: replaces the cost model's estimate of
#: an op (profile-guided costs, :mod:`flowrl.compiler.profile`); ``None``: analytic only.
OpCosts = Callable[[str, Op, float], float]


def op_duration(op: Op, role: str, graphs: dict[str, FlowGraph],
                resources: dict[str, ModelResources], placement: dict[str, Mesh],
                cluster: ClusterSpec, args: RuntimeArgs, moved: int | None = None,
                op_costs: OpCosts | None = None) -> float:
    """Estimated seconds of one op; ``moved``: bytes a transfer really moves (default op.bytes)."""
    d = _analytic_duration(op, role, graphs, resources, placement, cluster, args, moved)
    return d if op_costs is None else op_costs(role, op, d)


def _analytic_duration(op: Op, role: str, graphs: dict[str, FlowGraph],
                       resources: dict[str, ModelResources], placement: dict[str, Mesh],
                       cluster: ClusterSpec, args: RuntimeArgs, moved: int | None) -> float:
    if op.kind == "call":
        kind = call_kind(graphs[role].call(op.node), role, resources[op.model])
        return call_time(kind, resources[op.model], placement[op.model], args, cluster)
    if op.kind == "sync":
        return sync_time(resources[op.src], placement[op.src], resources[op.model],
                         placement[op.model], cluster)
    nbytes = op.bytes if moved is None else moved
    return transfer_time(nbytes // max(1, len(op.devices)), cluster)


def schedule(mem: MemoryModel, plan: OffloadPlan, graphs: dict[str, FlowGraph],
             resources: dict[str, ModelResources], placement: dict[str, Mesh],
             cluster: ClusterSpec, args: RuntimeArgs,
             op_costs: OpCosts | None = None) -> tuple[Estimates, list[float]]:
    """Time every op in ``plan.ops`` (in place) and estimate the iteration.

    Returns the estimates and, per memory moment, its start within the iteration.
    ``op_costs`` (optional) replaces op durations, e.g. with measured ones.
    """
    reps = repeats(args)
    role_time: dict[str, float] = {}
    repeat_time: dict[str, float] = {}
    repeat_ops: dict[str, list[list[float]]] = {}
    total: dict[str, float] = {}
    transfer_bytes = sync_bytes = 0
    for role in mem.roles:
        ops = plan.ops.get(role, [])
        for op in ops:
            if op.kind == "sync":
                op.bytes = resources[op.model].weight_bytes * placement[op.model].dp
        durs = [op_duration(op, role, graphs, resources, placement, cluster, args,
                            op_costs=op_costs) for op in ops]
        n_entry = plan.entry_ops.get(role, 0)
        # A repeat is entered from the role's own exit state: its entry ops move (mostly) nothing.
        moved = entry_transfer_bytes(plan, mem, role, plan.exit_state[role])
        rep_durs = [op_duration(op, role, graphs, resources, placement, cluster, args, b,
                                op_costs)
                    for op, b in zip(ops[:n_entry], moved)] + durs[n_entry:]
        n = reps.get(role, 1)
        timeline(ops, rep_durs, graphs.get(role))
        repeat_ops[role] = [[op.start, op.duration] for op in ops]
        total[role], _ = role_runs(ops, durs, rep_durs, graphs.get(role), n, role in PIPELINED)
        role_time[role] = max((op.start + op.duration for op in ops), default=0.0)
        repeat_time[role] = (total[role] - role_time[role]) / (n - 1) if n > 1 else \
            max((a + b for a, b in repeat_ops[role]), default=0.0)
        body = sum(op.bytes for op in ops[n_entry:] if op.kind in ("offload", "onload"))
        if role in reps:
            transfer_bytes += n * body + sum(op.bytes for op in ops[:n_entry]) + \
                (n - 1) * sum(moved)
            sync_bytes += sum(op.bytes for op in ops if op.kind == "sync")
    iteration = sum(total[r] for r in reps if r in total)
    offsets, t = {}, 0.0
    for role in mem.roles:
        offsets[role] = t
        t += total[role]
    times = []
    for i, mom in enumerate(mem.moments):
        op = plan.ops[mom.role][plan.moment_index[i]]
        times.append(offsets[mom.role] + op.start)
    est = Estimates(iteration_time=iteration, repeats=dict(reps), role_time=role_time,
                    role_repeat_time=repeat_time, transfer_bytes=transfer_bytes,
                    sync_bytes=sync_bytes, repeat_ops=repeat_ops,
                    pipelined=[r for r in PIPELINED if reps.get(r, 1) > 1 and r in total])
    return est, times
