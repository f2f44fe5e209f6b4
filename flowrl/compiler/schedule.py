"""Pass 5, ``schedule``: durations from the cost model and an estimated timeline.

Each role's ops keep the order the offload pass gave them (calls in topological order with
their transfers); the local executor runs them one by one. The estimate models a
distributed runtime: an op starts when the ops whose outputs it reads have finished and
every device it uses is free (ops on one device run in list order; ops on disjoint devices
overlap, e.g. reference and value scoring on their own devices). Durations come from
:mod:`flowrl.compiler.costmodel`, plus the runtime's dispatch cost per worker an op is sent
to (``ClusterSpec.call_overhead``). Virtual devices that share fewer host cores
(``local:N`` on a machine with fewer than ``N`` cores) slow each other where their ops
overlap in time (:mod:`flowrl.compiler.core_sharing`).

Iteration (episode) time: ``k`` rollout runs, ``m`` train runs and one sync, with ``k =
sample_per_episode / generation_batch_size`` and ``m = num_training_epoch *
sample_per_episode / train_global_batch_size``. The first run of a role pays the transfers
that enter it from the previous role; later runs only what a run of the role itself leaves
behind. Rollout batches are submitted together (``run_many``), so a distributed runtime
pipelines them: run ``i+1``'s ops start on a device as soon as run ``i``'s ops there are
done (each device keeps submission order). Train runs are sequential (each optimizer step
needs the previous one). Eval is estimated per run but not included in the iteration.

With ``runtime_args.max_staleness >= 1`` the same role times also give the pipelined
episode's steady state (:mod:`flowrl.compiler.pipelining`): rollout and train+sync overlap
when their devices are disjoint. Its inputs are these role times, so everything the cost
model counts (TP all-reduces, KV reads, host transfers, CPU-side rewards) reaches it.

Per episode the estimates also count the work done (:func:`episode_work`): samples,
generated tokens, useful model FLOPs, and the device-seconds ops keep devices busy, from
which ``flowrl explain`` reports samples/s, tokens/s, MFU and idle device time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from flowrl.compiler.core_sharing import Job, shared_timeline
from flowrl.compiler.costmodel import (SYNC_DISPATCHES, call_batch, call_kind, call_time,
                                       dispatch_time, sync_time, transfer_time)
from flowrl.compiler.memory import MemoryModel
from flowrl.compiler.offload import OffloadPlan, entry_transfer_bytes
from flowrl.compiler.pipelining import plan_pipeline
from flowrl.compiler.resources import ModelResources
from flowrl.config import RuntimeArgs
from flowrl.ir import (CallNode, ClusterSpec, Estimates, FlowGraph, Mesh, Op, OpInterpreter,
                       PipelinePlan)
from flowrl.ir.episode import PIPELINED


class Timeline(OpInterpreter):
    """List scheduling as an op interpreter: every op starts when its devices are free (and a
    call when the calls it reads from are done); sets ``op.start``/``op.duration``."""

    def __init__(self, durations: list[float], graph: FlowGraph | None,
                 free: dict[int, float], offset: float) -> None:
        super().__init__()
        self.durations, self.graph, self.free, self.offset = durations, graph, free, offset

    def begin(self, role: str, ops: list[Op]) -> None:
        self.done: dict[str, float] = {}  # node id -> end time
        self.end_all = self.offset

    def end(self, role: str, ops: list[Op]) -> float:
        return self.end_all

    def _place(self, op: Op, start: float) -> float:
        for d in op.devices:
            start = max(start, self.free.get(d, self.offset))
        op.start, op.duration = start, self.durations[self.index]
        end = start + op.duration
        for d in op.devices:
            self.free[d] = end
        self.end_all = max(self.end_all, end)
        return end

    def default(self, op: Op) -> float:
        return self._place(op, self.offset)

    def call(self, op: Op, node: CallNode | None) -> float:
        start = self.offset
        if self.graph is not None:
            for pred in self.graph.graph.predecessors(op.node):
                start = max(start, self.done.get(pred, self.offset))
        self.done[op.node] = self._place(op, start)
        return self.done[op.node]


def timeline(ops: list[Op], durations: list[float], graph: FlowGraph | None,
             free: dict[int, float] | None = None, offset: float = 0.0,
             cluster: ClusterSpec | None = None) -> float:
    """Set ``start``/``duration`` of ``ops`` (list scheduling); returns the end of the last op.

    ``free`` (device -> time it becomes free) is updated in place, so a following run can
    continue from it; ``offset``: the earliest start. On a ``cluster`` whose devices share
    host cores (``shares_cores``) ops that overlap slow each other
    (:mod:`flowrl.compiler.core_sharing`).
    """
    free = {} if free is None else free
    if cluster is not None and cluster.shares_cores:
        return _shared_runs(ops, [durations], graph, cluster, free, offset)[0]
    return Timeline(durations, graph, free, offset).run("", ops[:len(durations)])


def _shared_runs(ops: list[Op], durations: list[list[float]], graph: FlowGraph | None,
                 cluster: ClusterSpec, free: dict[int, float], offset: float,
                 ) -> tuple[float, list[list[tuple[float, float]]]]:
    """Runs of ``ops`` (one per durations list, sharing device queues) on shared cores: the
    end and per run each op's (start, duration); the ops keep the last run's times."""
    jobs, index = [], {}
    for r, durs in enumerate(durations):
        for op, work in zip(ops, durs):
            preds = ()
            if op.kind == "call" and graph is not None:
                preds = tuple(index[(r, p)] for p in graph.graph.predecessors(op.node)
                              if (r, p) in index)
                index[(r, op.node)] = len(jobs)
            jobs.append(Job(tuple(op.devices), work, preds))
    times = shared_timeline(jobs, cluster, free, offset)
    per_run, k = [], 0
    for durs in durations:
        run = []
        for op, (st, en) in zip(ops, times[k:k + len(durs)]):
            op.start, op.duration = st, en - st
            run.append((st, en - st))
        per_run.append(run)
        k += len(durs)
    return max([offset] + [en for _, en in times]), per_run


def role_runs(ops: list[Op], first: list[float], repeat: list[float], graph: FlowGraph | None,
              runs: int, pipelined: bool, cluster: ClusterSpec | None = None,
              ) -> tuple[float, list[list[tuple[float, float]]]]:
    """Time ``runs`` runs of a role: total seconds and, per run, each op's (start, duration).

    Pipelined runs share device queues; otherwise each run starts when the previous ended.
    The ops are left holding the first run's times. ``cluster``: see :func:`timeline`.
    """
    free: dict[int, float] = {}
    per_run, end = [], 0.0
    if not pipelined and runs > 2:  # identical repeats: time two, extrapolate the rest
        end, per_run = role_runs(ops, first, repeat, graph, 2, False, cluster)
        step = end - max(a + b for a, b in per_run[0]) if per_run[0] else 0.0
        shifted = [[(a + step * k, b) for a, b in per_run[1]] for k in range(1, runs - 1)]
        return end + step * (runs - 2), per_run[:2] + shifted
    if pipelined and runs > 1 and cluster is not None and cluster.shares_cores:
        # one simulation: a run's ops slow down the next run's that overlap them
        end, per_run = _shared_runs(ops, [first] + [repeat] * (runs - 1), graph, cluster,
                                    free, 0.0)
        for op, (st, du) in zip(ops, per_run[0]):
            op.start, op.duration = st, du
        return end, per_run
    for r in range(runs):
        if not pipelined:
            free = {}
        end = max(end, timeline(ops, first if r == 0 else repeat, graph, free,
                                0.0 if pipelined else end, cluster))
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
    """Estimated seconds of one op; ``moved``: bytes a transfer really moves (default op.bytes).

    The runtime's dispatch (:func:`_dispatch`) is added to the formula, and to a measured
    call or transfer too: workers time those themselves, so their measurement leaves it
    out; a sync is timed by the driver, dispatch included, so ``op_costs`` gets all of it.
    """
    nbytes = op.bytes if moved is None else moved
    d = _analytic_duration(op, role, graphs, resources, placement, cluster, args,
                           nbytes)
    extra = _dispatch(op, placement, cluster, nbytes)
    if op_costs is None:
        return d + extra
    if op.kind == "sync":
        return op_costs(role, op, d + extra)
    return op_costs(role, op, d) + extra


def _dispatch(op: Op, placement: dict[str, Mesh], cluster: ClusterSpec, nbytes: int) -> float:
    """The runtime's per-worker dispatch of ``op``: a call or transfer goes to each of the
    model's ``dp`` replicas (a transfer that moves nothing is not sent), a sync is
    ``SYNC_DISPATCHES`` driver requests plus one import per destination replica."""
    dp = placement[op.model].dp if op.model in placement else 1
    if op.kind == "sync":
        return dispatch_time(cluster, SYNC_DISPATCHES + dp)
    if op.kind == "call" or nbytes:
        return dispatch_time(cluster, dp)
    return 0.0


def _analytic_duration(op: Op, role: str, graphs: dict[str, FlowGraph],
                       resources: dict[str, ModelResources], placement: dict[str, Mesh],
                       cluster: ClusterSpec, args: RuntimeArgs, nbytes: int) -> float:
    """The cost model's seconds of ``op`` (no dispatch)."""
    if op.kind == "call":
        kind = call_kind(graphs[role].call(op.node), role, resources[op.model])
        return call_time(kind, resources[op.model], placement[op.model], args, cluster)
    if op.kind == "sync":
        return sync_time(resources[op.src], placement[op.src], resources[op.model],
                         placement[op.model], cluster)
    return transfer_time(nbytes // max(1, len(op.devices)), cluster)


def call_flops(kind: str, res: ModelResources, args: RuntimeArgs) -> float:
    """Useful model FLOPs of one call: ``2 P`` per token scored or generated (a generate
    processes its prompt and its new tokens), ``6 P`` per token trained."""
    if res.weightless:
        return 0.0
    tokens = call_batch(kind, args) * res.expected_seq_len  # max_seq_len unless lengths are set
    return (6 if kind == "train" else 2) * res.num_params * tokens


def episode_work(graphs: dict[str, FlowGraph], resources: dict[str, ModelResources],
                 args: RuntimeArgs, reps: dict[str, int]) -> tuple[int, float]:
    """(generated tokens, model FLOPs) of one episode's rollout and train runs."""
    tokens, flops = 0, 0.0
    for role in ("rollout", "train"):
        if role not in graphs:
            continue
        for call in graphs[role].calls():
            res = resources[call.model]
            kind = call_kind(call, role, res)
            runs = reps.get(role, 1)
            flops += runs * call_flops(kind, res, args)
            if kind == "generate":
                # the expected response length (max_new_tokens unless the config sets one)
                tokens += round(runs * call_batch(kind, args) * (res.expected_seq_len
                                                                 - res.prompt_len))
    return tokens, flops


def busy_device_seconds(ops: dict[str, list[Op]], est: Estimates, roles: list[str]) -> float:
    """Device-seconds per episode ops occupy devices: the first run's durations plus the
    repeats' (``repeat_ops``), each times the op's device count."""
    busy = 0.0
    for role in roles:
        runs = est.repeats.get(role, 1)
        rep = est.repeat_ops.get(role, [])
        for i, op in enumerate(ops.get(role, [])):
            again = rep[i][1] if i < len(rep) else op.duration
            busy += len(op.devices) * (op.duration + (runs - 1) * again)
    return busy


@dataclass
class TimedPlan:
    """The schedule pass's result: timed copies of the offload plan's ops (the plan's own
    lists are left as they are), the estimates, each memory moment's start time and, for
    ``max_staleness >= 1``, the pipelined episode (without a placement suggestion)."""

    ops: dict[str, list[Op]]
    estimates: Estimates
    moment_times: list[float]
    pipeline: PipelinePlan | None = None


@dataclass
class _RoleTimes:
    total: float  # every run of the role
    first: float  # one run entered from the usual predecessor
    repeat: float  # what each further run adds
    repeat_ops: list[list[float]]
    transfer_bytes: int
    sync_bytes: int


def _time_role(role: str, ops: list[Op], mem: MemoryModel, plan: OffloadPlan, runs: int,
               durations: Callable[[Op, int | None], float], graph: FlowGraph | None,
               cluster: ClusterSpec | None = None) -> _RoleTimes:
    """Time ``runs`` runs of one role's (copied) ops in place."""
    durs = [durations(op, None) for op in ops]
    n_entry = plan.entry_ops.get(role, 0)
    # A repeat is entered from the role's own exit state: its entry ops move (mostly) nothing.
    moved = entry_transfer_bytes(plan, mem, role, plan.exit_state[role])
    rep_durs = [durations(op, b) for op, b in zip(ops[:n_entry], moved)] + durs[n_entry:]
    timeline(ops, rep_durs, graph, cluster=cluster)
    repeat_ops = [[op.start, op.duration] for op in ops]
    total, _ = role_runs(ops, durs, rep_durs, graph, runs, mem.episode.pipelined(role),
                         cluster)
    first = max((op.start + op.duration for op in ops), default=0.0)
    repeat = (total - first) / (runs - 1) if runs > 1 else \
        max((a + b for a, b in repeat_ops), default=0.0)
    body = sum(op.bytes for op in ops[n_entry:] if op.kind in ("offload", "onload"))
    transfers = runs * body + sum(op.bytes for op in ops[:n_entry]) + (runs - 1) * sum(moved)
    return _RoleTimes(total, first, repeat, repeat_ops, transfers,
                      sum(op.bytes for op in ops if op.kind == "sync"))


def schedule(mem: MemoryModel, plan: OffloadPlan, graphs: dict[str, FlowGraph],
             resources: dict[str, ModelResources], placement: dict[str, Mesh],
             cluster: ClusterSpec, args: RuntimeArgs,
             op_costs: OpCosts | None = None) -> TimedPlan:
    """Time copies of the ops in ``plan.ops`` and estimate the iteration.

    ``op_costs`` (optional) replaces op durations, e.g. with measured ones.
    """
    reps = mem.episode.repeats
    ops: dict[str, list[Op]] = {}
    times: dict[str, _RoleTimes] = {}
    for role in mem.roles:
        # Copies: the offload plan owns its ops; this pass owns bytes of syncs and the times.
        ops[role] = [replace(op) for op in plan.ops.get(role, [])]
        for op in ops[role]:
            if op.kind == "sync":
                op.bytes = resources[op.model].weight_bytes * placement[op.model].dp

        def durations(op: Op, moved: int | None, role: str = role) -> float:
            return op_duration(op, role, graphs, resources, placement, cluster, args, moved,
                               op_costs)

        times[role] = _time_role(role, ops[role], mem, plan, reps.get(role, 1), durations,
                                 graphs.get(role), cluster)
    counted = [r for r in reps if r in times]
    offsets, t = {}, 0.0
    for role in mem.roles:
        offsets[role] = t
        t += times[role].total
    moment_times = [offsets[mom.role] + ops[mom.role][plan.moment_index[i]].start
                    for i, mom in enumerate(mem.moments)]
    est = Estimates(iteration_time=sum(times[r].total for r in counted), repeats=dict(reps),
                    role_time={r: x.first for r, x in times.items()},
                    role_repeat_time={r: x.repeat for r, x in times.items()},
                    transfer_bytes=sum(times[r].transfer_bytes for r in counted),
                    sync_bytes=sum(times[r].sync_bytes for r in counted),
                    repeat_ops={r: x.repeat_ops for r, x in times.items()},
                    pipelined=[r for r in PIPELINED if reps.get(r, 1) > 1 and r in times])
    est.samples = args.sample_per_episode
    est.generated_tokens, est.model_flops = episode_work(graphs, resources, args, reps)
    est.busy_device_s = busy_device_seconds(ops, est, counted)
    return TimedPlan(ops, est, moment_times, plan_pipeline(est, ops, graphs, placement,
                                                           mem.episode.max_staleness))
