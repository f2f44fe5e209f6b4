"""A PNG of per-device memory over one estimated iteration (matplotlib, object API)."""

from __future__ import annotations

from flowrl.ir import Estimates, MemoryReport, Schedule
from flowrl.report.trace import memory_series


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
