"""The text report ``flowrl explain`` prints (rich tables): DAG, meshes, ops, memory."""

from __future__ import annotations

import io

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowrl.compiler.resources import fmt_bytes
from flowrl.ir import FLOW_INPUT, Estimates, FlowGraph, MemoryReport, Schedule
from flowrl.ir.episode import ordered_roles


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


def _dag_lines(role: str, g: FlowGraph) -> list[str]:
    lines = [f"[bold]{role}[/bold] ({g.name}):"]
    for c in g.calls():
        ins = ", ".join("batch" if i == FLOW_INPUT else i for i in c.inputs) or "-"
        lines.append(f"  {c.id}  <-  {ins}")
    if g.outputs:
        lines.append(f"  returns {', '.join(g.outputs)}")
    return lines


def _header(con: Console, schedule: Schedule) -> None:
    cluster, est = schedule.cluster, schedule.estimates
    con.print(f"[bold]flowrl schedule: strategy {schedule.strategy}[/bold]")
    if cluster is not None:
        con.print(f"cluster {cluster.describe() if hasattr(cluster, 'describe') else cluster}")
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


def _placement_table(schedule: Schedule, mem: MemoryReport | None) -> Table:
    t = Table(title="placement", title_justify="left")
    for col in ("model", "devices", "tp", "pp", "dp", "weights/dev", "grads/dev",
                "optimizer/dev"):
        t.add_column(col, justify="left" if col in ("model", "devices") else "right")
    for m, mesh in schedule.placement.items():
        st = mem.state.get(m, {}) if mem else {}
        t.add_row(m, fmt_devices(mesh.devices), str(mesh.tp), str(mesh.pp), str(mesh.dp),
                  *(fmt_bytes(st[k]) if k in st else "-" for k in ("weights", "grads", "optimizer")))
    return t


def _ops_table(role: str, ops: list, timed: bool) -> Table:
    t = Table(title=f"ops: {role}", title_justify="left")
    for col in ("#", "op", "devices", "start", "duration", "bytes"):
        t.add_column(col, justify="right" if col in ("#", "start", "duration", "bytes")
                     else "left")
    for i, op in enumerate(ops):
        label = escape(op.label() + (" (streamed)" if op.streamed else ""))
        t.add_row(str(i), label, fmt_devices(op.devices),
                  fmt_time(op.start) if timed else "-",
                  fmt_time(op.duration) if timed else "-",
                  fmt_bytes(op.bytes) if op.bytes else "-")
    if not ops:
        t.add_row("-", "(no ops)", "", "", "", "")
    return t


def _memory_table(mem: MemoryReport) -> Table:
    t = Table(title="memory per device (peak over the iteration)", title_justify="left")
    for col in ("device", "capacity", "peak before offload", "peak after offload", "fits"):
        t.add_column(col, justify="right")
    for d, cap in enumerate(mem.capacity):
        before, after = mem.peak_before[d], mem.peak_after[d]
        t.add_row(str(d), fmt_bytes(cap), fmt_bytes(before), fmt_bytes(after),
                  "yes" if after <= cap else "NO")
    return t


def explain_text(schedule: Schedule, width: int = 120) -> str:
    """The report ``flowrl explain`` prints."""
    buf = io.StringIO()
    con = Console(file=buf, width=width, record=False, force_terminal=False, color_system=None)
    _header(con, schedule)
    mem = schedule.memory if isinstance(schedule.memory, MemoryReport) else None
    if schedule.placement:
        con.print(_placement_table(schedule, mem))
    for role in ordered_roles(schedule.ops):
        con.print(_ops_table(role, schedule.ops[role], isinstance(schedule.estimates, Estimates)))
    if any(op.kind in ("offload", "onload") for ops in schedule.ops.values() for op in ops):
        con.print("Transfers before a role's first op bring whatever state the previous role "
                  "left to what this role needs; they move nothing when it is already there.")
    if mem is not None:
        con.print(_memory_table(mem))
    return buf.getvalue()
