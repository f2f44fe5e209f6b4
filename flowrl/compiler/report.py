"""Rendering a :class:`~flowrl.compiler.ir.Schedule`: text (rich), JSON, Chrome trace, PNG.

The JSON object (``schema: "flowrl.schedule/1"``) is documented in ``docs/compiler.md``;
:func:`schedule_from_json` inverts :func:`schedule_to_json` exactly.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowrl.compiler.ir import (FLOW_INPUT, CallNode, Estimates, FlowGraph, MemoryReport, Mesh, Op,
                                Schedule)
from flowrl.compiler.resources import fmt_bytes

SCHEMA = "flowrl.schedule/1"
ROLES = ("rollout", "train", "sync", "eval")


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def fmt_devices(devices) -> str:
    """``0-3,6`` style."""
    ds = sorted(devices)
    if not ds:
        return "-"
    parts, start, prev = [], ds[0], ds[0]
    for d in ds[1:] + [None]:
        if d is not None and d == prev + 1:
            prev = d
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if d is not None:
            start = prev = d
    return ",".join(parts)


def _roles(schedule: Schedule) -> list[str]:
    return [r for r in ROLES if r in schedule.ops] + [r for r in schedule.ops if r not in ROLES]


# ---- JSON -----------------------------------------------------------------------------------
def _graph_to_json(g: FlowGraph) -> dict[str, Any]:
    d = g.to_dict()
    d["source"] = g.source
    d["edges"] = [[u, v] for u, v in sorted(g.graph.edges)]
    return d


def _graph_from_json(d: dict[str, Any]) -> FlowGraph:
    g = FlowGraph(d["name"], outputs=tuple(d.get("outputs", ())), source=d.get("source", ""))
    for i, n in enumerate(d["nodes"]):  # listed in topological order: keep it as trace order
        outs = frozenset(n["outputs"]) if n.get("outputs") is not None else None
        g.add_call(CallNode(n["id"], n["model"], n["method"], tuple(n["inputs"]), outs,
                            n.get("source", ""), i))
    return g


def schedule_to_json(schedule: Schedule) -> dict[str, Any]:
    """The ``flowrl.schedule/1`` object (plain JSON types only)."""
    cluster = schedule.cluster
    return {
        "schema": SCHEMA,
        "strategy": schedule.strategy,
        "cluster": cluster.model_dump() if hasattr(cluster, "model_dump") else cluster,
        "graphs": {r: _graph_to_json(g) for r, g in schedule.graphs.items()},
        "placement": {m: (mesh.to_dict() if isinstance(mesh, Mesh) else mesh)
                      for m, mesh in schedule.placement.items()},
        "ops": {r: [op.to_dict() for op in ops] for r, ops in schedule.ops.items()},
        "memory": schedule.memory.to_dict() if isinstance(schedule.memory, MemoryReport) else None,
        "estimates": (schedule.estimates.to_dict() if isinstance(schedule.estimates, Estimates)
                      else None),
    }


def schedule_from_json(data: dict[str, Any]) -> Schedule:
    """Rebuild a :class:`Schedule` from :func:`schedule_to_json` output."""
    from flowrl.compiler.cluster import ClusterSpec

    if data.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} object (schema: {data.get('schema')!r})")
    cluster = data.get("cluster")
    return Schedule(
        graphs={r: _graph_from_json(g) for r, g in data["graphs"].items()},
        ops={r: [Op.from_dict(o) for o in ops] for r, ops in data["ops"].items()},
        placement={m: Mesh.from_dict(v) for m, v in data["placement"].items()},
        memory=MemoryReport.from_dict(data["memory"]) if data.get("memory") else {},
        estimates=Estimates.from_dict(data["estimates"]) if data.get("estimates") else {},
        cluster=ClusterSpec.model_validate(cluster) if isinstance(cluster, dict) else cluster,
        strategy=data["strategy"])


# ---- text -----------------------------------------------------------------------------------
def _dag_lines(role: str, g: FlowGraph) -> list[str]:
    lines = [f"[bold]{role}[/bold] ({g.name}):"]
    for c in g.calls():
        ins = ", ".join("batch" if i == FLOW_INPUT else i for i in c.inputs) or "-"
        lines.append(f"  {c.id}  <-  {ins}")
    if g.outputs:
        lines.append(f"  returns {', '.join(g.outputs)}")
    return lines


def explain_text(schedule: Schedule, width: int = 120) -> str:
    """The report ``flowrl explain`` prints."""
    buf = io.StringIO()
    con = Console(file=buf, width=width, record=False, force_terminal=False, color_system=None)
    cluster = schedule.cluster
    title = f"flowrl schedule: strategy {schedule.strategy}"
    con.print(f"[bold]{title}[/bold]")
    if cluster is not None:
        con.print(f"cluster {cluster.describe() if hasattr(cluster, 'describe') else cluster}")
    est = schedule.estimates
    if isinstance(est, Estimates):
        parts = []
        for r, n in est.repeats.items():
            first = fmt_time(est.role_time.get(r, 0.0))
            parts.append(f"{r} {first}" if n == 1 else
                         f"{r} {first} + {n - 1} x {fmt_time(est.role_repeat_time.get(r, 0.0))}")
        con.print(f"[bold]estimated iteration time: {fmt_time(est.iteration_time)}[/bold]  = "
                  + " + ".join(parts))
        con.print(f"offload/onload traffic per iteration {fmt_bytes(est.transfer_bytes)}, "
                  f"parameter sync {fmt_bytes(est.sync_bytes)}")
    con.print("\n[bold]DAG[/bold]")
    for role, g in schedule.graphs.items():
        for line in _dag_lines(role, g):
            con.print(line)

    mem = schedule.memory if isinstance(schedule.memory, MemoryReport) else None
    if schedule.placement:
        t = Table(title="placement", title_justify="left")
        for col in ("model", "devices", "tp", "pp", "dp", "weights/dev", "grads/dev",
                    "optimizer/dev"):
            t.add_column(col, justify="left" if col in ("model", "devices") else "right")
        for m, mesh in schedule.placement.items():
            st = mem.state.get(m, {}) if mem else {}
            t.add_row(m, fmt_devices(mesh.devices), str(mesh.tp), str(mesh.pp), str(mesh.dp),
                      *(fmt_bytes(st[k]) if k in st else "-"
                        for k in ("weights", "grads", "optimizer")))
        con.print(t)

    for role in _roles(schedule):
        ops = schedule.ops[role]
        t = Table(title=f"ops: {role}", title_justify="left")
        for col in ("#", "op", "devices", "start", "duration", "bytes"):
            t.add_column(col, justify="right" if col in ("#", "start", "duration", "bytes")
                         else "left")
        timed = isinstance(est, Estimates)
        for i, op in enumerate(ops):
            label = escape(op.label() + (" (streamed)" if op.streamed else ""))
            t.add_row(str(i), label, fmt_devices(op.devices),
                      fmt_time(op.start) if timed else "-",
                      fmt_time(op.duration) if timed else "-",
                      fmt_bytes(op.bytes) if op.bytes else "-")
        if not ops:
            t.add_row("-", "(no ops)", "", "", "", "")
        con.print(t)

    if any(op.kind in ("offload", "onload") for ops in schedule.ops.values() for op in ops):
        con.print("Transfers before a role's first op bring whatever state the previous role "
                  "left to what this role needs; they move nothing when it is already there.")
    if mem is not None:
        t = Table(title="memory per device (peak over the iteration)", title_justify="left")
        for col in ("device", "capacity", "peak before offload", "peak after offload", "fits"):
            t.add_column(col, justify="right")
        for d, cap in enumerate(mem.capacity):
            before, after = mem.peak_before[d], mem.peak_after[d]
            t.add_row(str(d), fmt_bytes(cap), fmt_bytes(before), fmt_bytes(after),
                      "yes" if after <= cap else "NO")
        con.print(t)
    return buf.getvalue()


# ---- Chrome trace ---------------------------------------------------------------------------
def role_run_times(schedule: Schedule) -> dict[str, tuple[float, list[list[tuple[float, float]]]]]:
    """role -> (its start in the iteration, per run each op's (start, duration) in the role),
    with every run of every role timed as the estimate assumes (pipelined rollout overlaps)."""
    from flowrl.compiler.schedule import role_runs

    est = schedule.estimates if isinstance(schedule.estimates, Estimates) else None
    out, t0 = {}, 0.0
    for role in _roles(schedule):
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
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"strategy": schedule.strategy,
                          "iteration_time_s": est.iteration_time if est else None}}


def write_chrome_trace(schedule: Schedule, path: str) -> str:
    with open(path, "w") as f:
        json.dump(chrome_trace(schedule), f)
    return str(path)


# ---- PNG ------------------------------------------------------------------------------------
def plot_memory(schedule: Schedule, path: str) -> str:
    """Per-device memory over one iteration: dashed before offload, solid after, and capacity."""
    # The object API (no pyplot): no global backend switch, nothing left open.
    import matplotlib
    from matplotlib.figure import Figure

    mem = schedule.memory
    if not isinstance(mem, MemoryReport):
        raise ValueError("this schedule has no memory report (compile it with a cluster)")
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    end = schedule.estimates.iteration_time if isinstance(schedule.estimates, Estimates) else 0
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for d, points in memory_series(schedule).items():
        if not points:
            continue
        c = colors[d % len(colors)]
        xs = [t for t, _, _ in points] + [max(points[-1][0], end)]
        after = [a / 1e9 for _, _, a in points]
        before = [b / 1e9 for _, b, _ in points]
        ax.step(xs, after + after[-1:], where="post", color=c, label=f"device {d}")
        ax.step(xs, before + before[-1:], where="post", color=c, linestyle="--", alpha=0.5)
    if mem.capacity:
        ax.axhline(mem.capacity[0] / 1e9, color="red", linewidth=1, label="capacity")
    ax.set_xlabel("estimated time in the iteration (s)")
    ax.set_ylabel("device memory (GB)")
    ax.set_title(f"memory per device, strategy {schedule.strategy} (dashed: before offload)")
    ax.legend(fontsize="small", ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)
