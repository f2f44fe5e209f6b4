"""A compiled plan in the numbers plans are compared by (:class:`~flowrl.ir.ops.PlanSummary`)
and the reasons one plan beats another.

Throughput is per episode of the plan's estimates: ``samples / time`` and ``generated
tokens / time``, where ``time`` is the pipelined steady state when the schedule is pipelined
(``max_staleness >= 1`` with overlapping stages), else the synchronous episode. MFU: useful
model FLOPs per episode over ``time x devices x peak FLOP/s`` (the spec sheet's peak, not
the ``flops_efficiency`` the cost model assumes, as MFU is usually quoted).
"""

from __future__ import annotations

from flowrl.compiler.pipelining import role_total
from flowrl.compiler.resources import fmt_bytes
from flowrl.ir import ClusterSpec, Estimates, MemoryReport, Mesh, PipelinePlan, Schedule
from flowrl.ir.ops import PlanSummary


def _devices(devices: tuple[int, ...]) -> str:
    ds = sorted(devices)
    if ds and ds == list(range(ds[0], ds[-1] + 1)) and len(ds) > 1:
        return f"{ds[0]}-{ds[-1]}"
    return ",".join(map(str, ds))


def _idle(capacity_s: float, busy_s: float) -> float:
    """Idle device-seconds; float noise of a fully busy plan reads as 0."""
    idle = capacity_s - busy_s
    return idle if idle > 1e-9 * capacity_s else 0.0


def steady_time(est: Estimates, pipeline: PipelinePlan | None) -> float:
    """Seconds per episode a plan sustains: the steady state when its stages overlap."""
    if pipeline is not None and pipeline.overlap:
        return pipeline.steady_state_time
    return est.iteration_time


def plan_time(schedule: Schedule) -> float:
    """:func:`steady_time` of a compiled schedule (0 without estimates)."""
    est = schedule.estimates
    return steady_time(est, schedule.pipeline) if isinstance(est, Estimates) else 0.0


def summarize_plan(strategy: str, est: Estimates, pipeline: PipelinePlan | None,
                   placement: dict[str, Mesh], cluster: ClusterSpec,
                   peak_memory: int = 0) -> PlanSummary:
    """A :class:`PlanSummary` from the schedule pass's results (what a placement search
    holds for a candidate: ``TimedPlan.estimates``/``pipeline``, the meshes, and
    ``max(OffloadPlan.peak_after)``), without assembling a schedule."""
    time = steady_time(est, pipeline)
    n = cluster.num_devices
    bubble = 0.0
    if pipeline is not None and pipeline.overlap:
        bubble = sum(s.bubble * len(s.devices) for s in pipeline.stages)
    peak = cluster.device_tflops * 1e12 * n
    return PlanSummary(
        strategy=strategy, time=time,
        samples_per_s=est.samples / time if time > 0 else 0.0,
        tokens_per_s=est.generated_tokens / time if time > 0 else 0.0,
        mfu=est.model_flops / (time * peak) if time > 0 else 0.0,
        idle_device_s=_idle(n * time, est.busy_device_s), bubble_s=bubble,
        transfer_bytes=est.transfer_bytes, sync_s=role_total(est, "sync"),
        peak_memory=peak_memory,
        layout={m: f"devices {_devices(mesh.devices)} TP{mesh.tp}"
                   + (f"xPP{mesh.pp}" if mesh.pp > 1 else "") + f"xDP{mesh.dp}"
                for m, mesh in placement.items()})


def summarize(schedule: Schedule, strategy: str | None = None) -> PlanSummary:
    """The :class:`PlanSummary` of a compiled schedule (``strategy``: a label, default the
    schedule's strategy)."""
    est, cluster, mem = schedule.estimates, schedule.cluster, schedule.memory
    if not isinstance(est, Estimates) or cluster is None:
        raise ValueError("summarize needs a schedule compiled with a cluster")
    peak = max(mem.peak_after) if isinstance(mem, MemoryReport) and mem.peak_after else 0
    return summarize_plan(strategy or schedule.strategy, est, schedule.pipeline,
                          schedule.placement, cluster, peak)


def why_better(win: PlanSummary, other: PlanSummary) -> str:
    """Why ``win`` beats ``other``: its speed-up, then the differences in idle
    device-seconds, pipeline bubbles, offload traffic and sync time (those that differ)."""
    diffs = [("idle device time", other.idle_device_s - win.idle_device_s, "device-s"),
             ("pipeline bubbles", other.bubble_s - win.bubble_s, "device-s"),
             ("offload traffic", other.transfer_bytes - win.transfer_bytes, "B"),
             ("sync time", other.sync_s - win.sync_s, "s")]
    parts = []
    for name, d, unit in diffs:
        if abs(d) < 1e-9:
            continue
        amount = fmt_bytes(abs(d)) if unit == "B" else f"{abs(d):.3g} {unit}"
        parts.append(f"{amount} {'less' if d > 0 else 'more'} {name}")
    speed = other.time / win.time if win.time > 0 else 1.0
    head = f"{speed:.2f}x faster than {other.strategy}"
    return head + (": " + ", ".join(parts) if parts else "")
