"""A PNG of per-device memory over one estimated iteration (matplotlib, object API) and, with
``max_staleness >= 1``, the pipelined steady state per device group below it."""

from __future__ import annotations

from flowrl.ir import Estimates, MemoryReport, PipelinePlan, Schedule
from flowrl.report.pipeline import lanes, overlap_warning, segments
from flowrl.report.trace import memory_series

#: Bar colours of the pipeline's segment kinds.
SEGMENT_COLORS = {"rollout": "tab:blue", "train": "tab:orange", "push": "tab:green",
                  "wait": "lightgrey"}


def _plot_pipeline(ax, plan: PipelinePlan) -> None:
    """Gantt bars of the steady state, one row per device group."""
    names = lanes(plan)
    for seg in segments(plan):
        y = names.index(seg.lane)
        ax.broken_barh([(seg.start, seg.duration)], (y - 0.4, 0.8),
                       color=SEGMENT_COLORS[seg.kind], edgecolor="black", linewidth=0.5)
    ax.set_yticks(range(len(names)), names, fontsize="small")
    ax.set_xlabel("steady-state time (s)")
    title = (f"pipelined episodes, max_staleness {plan.max_staleness}: "
             f"{plan.steady_state_time:.3g} s/episode vs {plan.synchronous_time:.3g} s "
             f"synchronous ({plan.speedup:.2f}x)")
    warning = overlap_warning(plan)
    ax.set_title(title + ("\nno overlap: devices shared" if warning else ""), fontsize="small")


def plot_memory(schedule: Schedule, path: str) -> str:
    """Per-device memory over one iteration: dashed before offload, solid after, and capacity;
    below it the pipelined steady state when the schedule has one."""
    # The object API (no pyplot): no global backend switch, nothing left open.
    import matplotlib
    from matplotlib.figure import Figure

    mem = schedule.memory
    if not isinstance(mem, MemoryReport):
        raise ValueError("this schedule has no memory report (compile it with a cluster)")
    plan = schedule.pipeline
    fig = Figure(figsize=(10, 4.5 if plan is None else 7))
    if plan is None:
        ax = fig.subplots()
    else:
        ax, pax = fig.subplots(2, 1, height_ratios=(3, 1.4))
        _plot_pipeline(pax, plan)
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
