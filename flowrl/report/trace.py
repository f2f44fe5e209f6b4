"""Chrome/Perfetto traces of a schedule's estimated iteration, and the memory series they
(and the PNG plot) draw: every run of every role timed as the estimate assumes. With
``max_staleness >= 1`` a second process shows the pipelined steady state per device group."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from flowrl.compiler.schedule import role_runs
from flowrl.ir import Estimates, MemoryReport, Schedule
from flowrl.ir.episode import ordered_roles
from flowrl.report.pipeline import lanes, segments


def role_run_times(schedule: Schedule) -> dict[str, tuple[float, list[list[tuple[float, float]]]]]:
    """role -> (its start in the iteration, per run each op's (start, duration) in the role),
    with every run of every role timed as the estimate assumes (pipelined rollout overlaps)."""
    est = schedule.estimates if isinstance(schedule.estimates, Estimates) else None
    out, t0 = {}, 0.0
    for role in ordered_roles(schedule.ops):
        ops = [replace(op) for op in schedule.ops[role]]  # role_runs retimes them
        first = [op.duration for op in ops]
        repeat = [d for _, d in est.repeat_ops.get(role, [])] if est else []
        runs = est.repeats.get(role, 1) if est else 1
        total, per_run = role_runs(ops, first, repeat or first, schedule.graphs.get(role),
                                   runs, est is not None and role in est.pipelined)
        out[role] = (t0, per_run)
        t0 += total
    return out


def memory_series(schedule: Schedule) -> dict[int, list[tuple[float, int, int]]]:
    """device -> [(time, bytes before offload, bytes after)] at each op on that device, over
    every run of every role (a device's memory only changes with the ops it runs)."""
    mem = schedule.memory
    runs = role_run_times(schedule)
    series: dict[int, list[tuple[float, int, int]]] = {d: [] for d in range(len(mem.capacity))}
    for p in mem.timeline:
        op = schedule.ops[p.role][p.index]
        offset, per_run = runs[p.role]
        for times in per_run:
            for d in op.devices:
                series[d].append((offset + times[p.index][0], p.before[d], p.after[d]))
    return {d: sorted(v) for d, v in series.items()}


def pipeline_events(schedule: Schedule) -> list[dict[str, Any]]:
    """Trace events (pid 1) of the pipelined steady state: one lane per device group, the
    stages of a few episodes overlapping where their devices are disjoint."""
    plan = schedule.pipeline
    if plan is None:
        return []
    tids = {lane: i for i, lane in enumerate(lanes(plan))}
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": 1,
         "args": {"name": f"flowrl pipelined steady state (max_staleness "
                          f"{plan.max_staleness}, {plan.steady_state_time:.3g} s/episode)"}}]
    events += [{"name": "thread_name", "ph": "M", "pid": 1, "tid": i, "args": {"name": lane}}
               for lane, i in tids.items()]
    for seg in segments(plan):
        events.append({"name": seg.label, "cat": f"pipeline,{seg.kind}", "ph": "X", "pid": 1,
                       "tid": tids[seg.lane], "ts": seg.start * 1e6,
                       "dur": seg.duration * 1e6, "args": {"stage": seg.kind}})
    return events


def chrome_trace(schedule: Schedule) -> dict[str, Any]:
    """Trace events (microseconds) of one estimated iteration: one lane per device, every run
    of every role (pipelined rollout runs overlap as the estimate assumes), and per-device
    memory counters."""
    est = schedule.estimates if isinstance(schedule.estimates, Estimates) else None
    events: list[dict[str, Any]] = [{"name": "process_name", "ph": "M", "pid": 0,
                                     "args": {"name": "flowrl estimated iteration"}}]
    lanes: set[int] = set()
    for role, (t0, per_run) in role_run_times(schedule).items():
        for run, times in enumerate(per_run):
            for op, (start, dur) in zip(schedule.ops[role], times):
                for d in op.devices or (-1,):
                    lanes.add(d)
                    events.append({"name": op.label(), "cat": f"{role},{op.kind}", "ph": "X",
                                   "pid": 0, "tid": d, "ts": (t0 + start) * 1e6,
                                   "dur": dur * 1e6,
                                   "args": {"role": role, "run": run + 1, "bytes": op.bytes}})
    for d in sorted(lanes):
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": d,
                       "args": {"name": f"device {d}" if d >= 0 else "host"}})
    if isinstance(schedule.memory, MemoryReport):
        for d, points in memory_series(schedule).items():
            for t, _, after in points:
                events.append({"name": f"memory GB device {d}", "ph": "C", "pid": 0,
                               "ts": t * 1e6, "args": {"after offload": after / 1e9}})
    events += pipeline_events(schedule)
    other = {"strategy": schedule.strategy,
             "iteration_time_s": est.iteration_time if est else None}
    if schedule.pipeline is not None:
        other["steady_state_time_s"] = schedule.pipeline.steady_state_time
        other["predicted_speedup"] = schedule.pipeline.speedup
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def write_chrome_trace(schedule: Schedule, path: str) -> str:
    with open(path, "w") as f:
        json.dump(chrome_trace(schedule), f)
    return str(path)
