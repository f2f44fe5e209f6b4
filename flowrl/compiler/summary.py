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
from flowrl.ir import Estimates, MemoryReport, Schedule
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


def plan_time(schedule: Schedule) -> float:
    """Seconds per episode the plan sustains (steady state when pipelined)."""
    est, plan = schedule.estimates, schedule.pipeline
    if plan is not None and plan.overlap:
        return plan.steady_state_time
    return est.iteration_time if isinstance(est, Estimates) else 0.0


def summarize(schedule: Schedule, strategy: str | None = None) -> PlanSummary:
    """The :class:`PlanSummary` of a compiled schedule (``strategy``: a label, default the
    schedule's strategy)."""
    est, cluster = schedule.estimates, schedule.cluster
    if not isinstance(est, Estimates) or cluster is None:
        raise ValueError("summarize needs a schedule compiled with a cluster")
    time = plan_time(schedule)
    n = cluster.num_devices
    per_s = (lambda x: x / time) if time > 0 else (lambda x: 0.0)
    plan = schedule.pipeline
    busy = est.busy_device_s
    bubble = 0.0
    if plan is not None and plan.overlap:
        bubble = sum(s.bubble * len(s.devices) for s in plan.stages)
    peak = cluster.device_tflops * 1e12 * n
    mem = schedule.memory
    return PlanSummary(
        strategy=strategy or schedule.strategy, time=time,
        samples_per_s=per_s(est.samples), tokens_per_s=per_s(est.generated_tokens),
        mfu=est.model_flops / (time * peak) if time > 0 else 0.0,
        idle_device_s=_idle(n * time, busy), bubble_s=bubble,
        transfer_bytes=est.transfer_bytes, sync_s=role_total(est, "sync"),
        peak_memory=max(mem.peak_after) if isinstance(mem, MemoryReport) and mem.peak_after
        else 0,
        layout={m: f"devices {_devices(mesh.devices)} TP{mesh.tp}"
                   + (f"xPP{mesh.pp}" if mesh.pp > 1 else "") + f"xDP{mesh.dp}"
                for m, mesh in schedule.placement.items()})


def why_better(win: PlanSummary, other: PlanSummary) -> str:
    """Why ``win`` beats ``other``: the differences that account for its lower time, largest
    first (idle device-seconds, pipeline bubbles, offload traffic, sync time)."""
    diffs = [("idle device-seconds", other.idle_device_s - win.idle_device_s, "s"),
             ("bubbles", other.bubble_s - win.bubble_s, "s"),
             ("offload traffic", other.transfer_bytes - win.transfer_bytes, "B"),
             ("sync time", other.sync_s - win.sync_s, "s")]
    parts = []
    for name, d, unit in diffs:
        if abs(d) < 1e-9:
            continue
        amount = fmt_bytes(abs(d)) if unit == "B" else f"{abs(d):.3g} s"
        parts.append(f"{amount} {'less' if d > 0 else 'more'} {name}")
    speed = other.time / win.time if win.time > 0 else 1.0
    head = f"{speed:.2f}x faster than {other.strategy}"
    return head + (": " + ", ".join(parts) if parts else "")
