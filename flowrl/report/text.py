"""The text report ``flowrl explain`` prints (rich tables): the headline (samples/s,
generated tokens/s, MFU), the chosen plan against the search's runner-ups and why it wins,
DAG, meshes, ops, device and host memory with warnings and, for ``max_staleness >= 1``, the
pipelined episode."""

from __future__ import annotations

import io

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowrl.compiler.resources import fmt_bytes
from flowrl.compiler.summary import plan_time, summarize, why_better
from flowrl.ir import FLOW_INPUT, Estimates, FlowGraph, MemoryReport, PipelinePlan, Schedule
from flowrl.ir.episode import ordered_roles
from flowrl.report.pipeline import fmt_devices, lanes, overlap_warning, segments


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def _dag_lines(role: str, g: FlowGraph) -> list[str]:
    lines = [f"[bold]{role}[/bold] ({g.name}):"]
    for c in g.calls():
        ins = ", ".join("batch" if i == FLOW_INPUT else i for i in c.inputs) or "-"
        # Nodes a compiler pass inserted say so (their source names the pass).
        added = f"  [inserted by {c.source[1:-1]}]" if c.source.startswith("<compiler") \
            else ""
        lines.append(f"  {c.id}  <-  {ins}{escape(added)}")
    if g.outputs:
        lines.append(f"  returns {', '.join(g.outputs)}")
    return lines


def _header(con: Console, schedule: Schedule) -> None:
    cluster, est = schedule.cluster, schedule.estimates
    con.print(f"[bold]flowrl schedule: strategy {schedule.strategy}[/bold]")
    if cluster is not None:
        con.print(f"cluster {cluster.describe() if hasattr(cluster, 'describe') else cluster}")
    if isinstance(est, Estimates) and cluster is not None:
        _headline(con, schedule)
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
        plan = schedule.pipeline
        if plan is not None:  # the episode above, pipelined (section at the end)
            con.print(f"[bold]pipelined (max_staleness {plan.max_staleness}): "
                      f"{fmt_time(plan.steady_state_time)} per episode in the steady state, "
                      f"{plan.speedup:.2f}x[/bold]"
                      + ("" if plan.overlap else " (no overlap: rollout and train share "
                         "devices)"))
    con.print("\n[bold]DAG[/bold]")
    for role, g in schedule.graphs.items():
        for line in _dag_lines(role, g):
            con.print(line)


def _headline(con: Console, schedule: Schedule) -> None:
    """Throughput first: what a run on this cluster buys per second."""
    est, time = schedule.estimates, plan_time(schedule)
    if est.samples == 0 or time <= 0:
        return
    me = summarize(schedule)
    how = "pipelined steady state" if time != est.iteration_time else "synchronous episode"
    con.print(f"[bold]estimated throughput: {me.samples_per_s:.3g} samples/s, "
              f"{me.tokens_per_s:,.0f} generated tokens/s, MFU {100 * me.mfu:.1f}%[/bold] "
              f"({est.samples} samples per episode in {fmt_time(time)}, {how}; "
              f"{fmt_time(me.idle_device_s)} of idle device time per episode)")


def _candidates_section(con: Console, schedule: Schedule) -> None:
    """The chosen plan next to the search's runner-ups, and why it wins."""
    est = schedule.estimates
    if not isinstance(est, Estimates) or not est.candidates or schedule.cluster is None:
        return
    layout = getattr(schedule, "layout", None)  # the planner's choice, named by its family
    searched = layout is not None and schedule.strategy == "search"
    me = summarize(schedule, schedule.strategy + (f": {layout.family} {layout.split}"
                                                  if searched else ""))
    t = Table(title="chosen plan and runner-ups (per episode)", title_justify="left")
    for col in ("plan", "time", "samples/s", "tokens/s", "MFU", "idle device-s", "bubbles",
                "offload", "sync"):
        t.add_column(col, justify="left" if col == "plan" else "right")
    for i, c in enumerate([me] + list(est.candidates)):
        t.add_row(escape(("* " if i == 0 else "  ") + c.strategy), fmt_time(c.time),
                  f"{c.samples_per_s:.3g}", f"{c.tokens_per_s:,.0f}", f"{100 * c.mfu:.1f}%",
                  f"{c.idle_device_s:,.0f}", f"{c.bubble_s:,.0f}", fmt_bytes(c.transfer_bytes),
                  fmt_time(c.sync_s))
    con.print(t)
    for c in est.candidates:
        con.print(escape(f"why {me.strategy} wins: {why_better(me, c)}"))
        changed = {m: v for m, v in c.layout.items() if me.layout.get(m) != v}
        if changed:
            con.print(escape("  " + c.strategy + " differs in: " + "; ".join(
                f"{m} {v}" for m, v in changed.items())))


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


def _moves_nothing(op) -> bool:
    """An entry transfer that moves nothing when the role follows its usual predecessor."""
    return op.kind in ("offload", "onload") and not op.bytes


def _ops_table(role: str, ops: list, timed: bool) -> Table:
    t = Table(title=f"ops: {role}", title_justify="left")
    for col in ("#", "op", "devices", "start", "duration", "bytes"):
        t.add_column(col, justify="right" if col in ("#", "start", "duration", "bytes")
                     else "left")
    for i, op in enumerate(ops):
        if _moves_nothing(op):
            continue
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


#: Host RAM use (of the usable part) above which explain warns.
HOST_WARN_FRACTION = 0.9


def _host_section(con: Console, schedule: Schedule, mem: MemoryReport) -> None:
    """Offloaded state per node against its host RAM, with warnings."""
    if not mem.host_peak or not any(mem.host_peak):
        return
    t = Table(title="host memory per node (offloaded state, peak over the iteration)",
              title_justify="left")
    for col in ("node", "usable", "peak offloaded", "models at the peak"):
        t.add_column(col, justify="left" if col == "models at the peak" else "right")
    for n, peak in enumerate(mem.host_peak):
        models = ", ".join(f"{m} {fmt_bytes(b)}" for m, b in mem.host_models[n].items())
        t.add_row(str(n), fmt_bytes(mem.host_capacity) if mem.host_capacity else "unknown",
                  fmt_bytes(peak), escape(models) or "-")
    con.print(t)
    top = max(mem.host_peak)
    if not mem.host_capacity:
        con.print(f"warning: host memory is not checked (the cluster gives no host_memory_gb): "
                  f"a node holds up to {fmt_bytes(top)} of offloaded state")
    elif top > HOST_WARN_FRACTION * mem.host_capacity:
        node = mem.host_peak.index(top)
        con.print(f"warning: host memory of node {node} is {100 * top / mem.host_capacity:.0f}% "
                  f"full ({fmt_bytes(top)} of {fmt_bytes(mem.host_capacity)} usable) at its "
                  f"peak: workers, datasets and pinned buffers leave little headroom")


def _gantt(plan: PipelinePlan, width: int = 60) -> list[str]:
    """Two steady-state episodes per device group as text bars (R rollout, T train, S push,
    . idle or waiting)."""
    marks = {"rollout": "R", "train": "T", "push": "S", "wait": "."}
    span = 2 * plan.steady_state_time or 1.0
    rows = {lane: [" "] * width for lane in lanes(plan)}
    for seg in segments(plan, episodes=2):
        a = int(seg.start / span * width)
        b = max(a + 1, int((seg.start + seg.duration) / span * width))
        for i in range(a, min(b, width)):
            rows[seg.lane][i] = marks[seg.kind]
    pad = max(len(lane) for lane in rows)
    return [f"  {lane:<{pad}} |{''.join(r).replace(' ', '.')}|" for lane, r in rows.items()]


def _pipeline_section(con: Console, plan: PipelinePlan) -> None:
    con.print(f"\n[bold]pipelined episode (max_staleness {plan.max_staleness}): rollout stage "
              f"-> buffer of {plan.buffer_depth} episode(s) -> train stage; syncs are "
              f"versioned pushes[/bold]")
    t = Table(title="stages per device group (seconds per steady-state episode)",
              title_justify="left")
    for col in ("stage", "roles", "devices", "time", "busy", "bubble"):
        t.add_column(col, justify="left" if col in ("stage", "roles", "devices") else "right")
    for s in plan.stages:
        t.add_row(s.name, " + ".join(s.roles), fmt_devices(s.devices), fmt_time(s.time),
                  fmt_time(s.busy), fmt_time(s.bubble))
    con.print(t)
    pushes = ", ".join(f"{a} -> {b}" for a, b in plan.pushes) or "none"
    con.print(f"versioned pushes: {escape(pushes)} (sync {fmt_time(plan.sync_time)}, waits "
              f"{fmt_time(plan.sync_wait)} for the rollout in flight)")
    con.print(f"[bold]steady-state time per episode: {fmt_time(plan.steady_state_time)}"
              f"[/bold] (synchronous {fmt_time(plan.synchronous_time)}; predicted speedup "
              f"{plan.speedup:.2f}x)")
    con.print("steady state, two episodes (R rollout, T train, S push, . idle/waiting):")
    for line in _gantt(plan):
        con.print(escape(line))
    warning = overlap_warning(plan)
    if warning:
        con.print(f"warning: {escape(warning)}")


def explain_text(schedule: Schedule, width: int = 120) -> str:
    """The report ``flowrl explain`` prints."""
    buf = io.StringIO()
    con = Console(file=buf, width=width, record=False, force_terminal=False, color_system=None)
    _header(con, schedule)
    _candidates_section(con, schedule)
    mem = schedule.memory if isinstance(schedule.memory, MemoryReport) else None
    if schedule.placement:
        con.print(_placement_table(schedule, mem))
    for role in ordered_roles(schedule.ops):
        con.print(_ops_table(role, schedule.ops[role], isinstance(schedule.estimates, Estimates)))
    hidden = sum(_moves_nothing(op) for ops in schedule.ops.values() for op in ops)
    if any(op.kind in ("offload", "onload") for ops in schedule.ops.values() for op in ops):
        con.print("Transfers before a role's first op bring whatever state the previous role "
                  "left to what this role needs; they move nothing when it is already there"
                  + (f" ({hidden} such transfer(s) that move nothing after the usual previous "
                     f"role are not listed)." if hidden else "."))
    if mem is not None:
        con.print(_memory_table(mem))
        _host_section(con, schedule, mem)
    if schedule.pipeline is not None:
        _pipeline_section(con, schedule.pipeline)
    return buf.getvalue()
