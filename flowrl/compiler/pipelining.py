"""The pipelined episode's timeline (``runtime_args.max_staleness = k >= 1``).

The schedule pass times one synchronous episode (rollout runs, train runs, sync); this module
turns those role times into the two-stage pipeline of :mod:`flowrl.ir.pipeline`: the rollout
stage and the train stage (train runs + the versioned push), joined by a buffer of depth
``k``. Whether the stages overlap depends only on their devices:

* disjoint: steady state ``max(R, T) + S`` per episode. Train ``T`` runs while rollout
  ``e + k`` (``R``) runs; the push (``S``) waits for that rollout, since it still reads
  version ``e`` (the sync's wait ``max(0, R - T)``), and holds both groups.
* shared: ``R + T + S``, exactly the synchronous episode.

Every ``k >= 1`` has the same steady state in this deterministic model; a larger ``k`` only
absorbs variation in stage times.

The long tail (``generation.expected_new_tokens``/``p99_new_tokens``): each generate call
lasts until its longest response (:func:`flowrl.compiler.costmodel.decode_time`), so ``R``
holds the tail. Synchronously every device waits through it (``R + T + S``); pipelined, the
rollout group's tail runs while the trainers train, hidden wherever ``R <= T``. Partial
rollout (interrupting unfinished responses at a sync and resuming them under the new weights,
veRL's ``partial_rollout``) would cut the tail itself; flowrl's runtime does not do it, so
it is not modelled. Bubbles are per device group: the seconds per episode a
stage's devices are idle or held by the other stage.
"""

from __future__ import annotations

from flowrl.ir import Estimates, FlowGraph, Mesh, Op, PipelinePlan, Stage

#: The stages and the roles each runs, in order.
STAGES = (("rollout", ("rollout",)), ("train", ("train", "sync")))


def role_total(est: Estimates, role: str) -> float:
    """Seconds of every run of ``role`` in one episode (as ``Estimates.iteration_time`` sums)."""
    if role not in est.role_time:
        return 0.0
    runs = est.repeats.get(role, 1)
    return est.role_time[role] + (runs - 1) * est.role_repeat_time.get(role, 0.0)


def flow_devices(graph: FlowGraph | None, placement: dict[str, Mesh]) -> tuple[int, ...]:
    """Devices of the models a flow calls. (Not of its ops: a role's entry transfers may
    touch another stage's models, e.g. a trainer's optimizer leaving before a rollout.)"""
    models = graph.models() if graph is not None else []
    return tuple(sorted({d for m in models if m in placement for d in placement[m].devices}))


def plan_pipeline(est: Estimates, ops: dict[str, list[Op]], graphs: dict[str, FlowGraph],
                  placement: dict[str, Mesh], max_staleness: int) -> PipelinePlan | None:
    """The pipelined episode of a timed schedule (``None`` when ``max_staleness == 0``).

    Args:
        est: the synchronous episode's estimates (the schedule pass's).
        ops: the timed ops per role (the sync ops become the versioned pushes).
        graphs, placement: the flows and where their models run: whether the stages overlap.
        max_staleness: ``runtime_args.max_staleness``.
    """
    if max_staleness < 1:
        return None
    r, t, s = (role_total(est, role) for role in ("rollout", "train", "sync"))
    r_dev = flow_devices(graphs.get("rollout"), placement)
    t_dev = flow_devices(graphs.get("train"), placement)
    shared = tuple(sorted(set(r_dev) & set(t_dev)))
    synchronous = r + t + s
    if shared:
        period, wait = synchronous, 0.0
        stages = (Stage("rollout", ("rollout",), r_dev, r, r, t + s),
                  Stage("train", ("train", "sync"), t_dev, t + s, t + s, r))
    else:
        wait = max(0.0, r - t)
        period = t + wait + s  # == max(r, t) + s
        # The push runs on both groups: the rollout group receives the new weights.
        stages = (Stage("rollout", ("rollout",), r_dev, r, r + s, period - r - s),
                  Stage("train", ("train", "sync"), t_dev, t + s, t + s, wait))
    pushes = tuple((op.src, op.model) for op in ops.get("sync", []) if op.kind == "sync")
    return PipelinePlan(
        max_staleness=max_staleness, buffer_depth=max_staleness, stages=stages, pushes=pushes,
        overlap=not shared, shared_devices=shared, sync_time=s, sync_wait=wait,
        steady_state_time=period, synchronous_time=synchronous,
        speedup=synchronous / period if period > 0 else 1.0)


def scored_time(est: Estimates, pipeline: PipelinePlan | None) -> float:
    """What placement search minimises: the steady state when pipelined, else the episode."""
    return pipeline.steady_state_time if pipeline is not None else est.iteration_time
