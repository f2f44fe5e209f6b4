"""A PNG of device memory over one estimated iteration (matplotlib, object API) and, with
``max_staleness >= 1``, the pipelined steady state per device group below it.

Devices whose memory follows the same curve form one *device group* (a colocated plan has
one, a disaggregated plan one per block): the top panel draws one line per group (solid:
after offload, dashed: before) against the capacity, and one panel per group (the largest
groups first) stacks what fills a device of the group: each model's resident state and the
running op's working memory. Shaded bands mark the phases (rollout, train, sync).
"""

from __future__ import annotations

from flowrl.ir import Estimates, MemoryReport, PipelinePlan, Schedule
from flowrl.report.pipeline import fmt_devices, lanes, overlap_warning, segments
from flowrl.report.trace import role_run_times

#: Bar colours of the pipeline's segment kinds.
SEGMENT_COLORS = {"rollout": "tab:blue", "train": "tab:orange", "push": "tab:green",
                  "wait": "lightgrey"}
#: Phase bands behind the memory curves.
PHASE_COLORS = {"rollout": "tab:blue", "train": "tab:orange", "sync": "tab:green",
                "eval": "tab:purple"}
#: Stacked panels drawn at most (one per device group, largest groups first).
MAX_GROUP_PANELS = 3
WORKING = "working memory"


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


def device_points(schedule: Schedule) -> dict[int, list[tuple[float, float, int]]]:
    """device -> [(start, end, index into the memory timeline)] of each op on the device,
    over every run of every role."""
    mem, runs = schedule.memory, role_run_times(schedule)
    out: dict[int, list[tuple[float, float, int]]] = {d: [] for d in range(len(mem.capacity))}
    for i, p in enumerate(mem.timeline):
        op = schedule.ops[p.role][p.index]
        offset, per_run = runs[p.role]
        for times in per_run:
            a, dur = times[p.index]
            for d in op.devices:
                out[d].append((offset + a, offset + a + dur, i))
    return {d: sorted(v) for d, v in out.items()}


def _state(schedule: Schedule, i: int, device: int) -> dict[str, int]:
    """model -> bytes of its state resident on ``device`` at timeline point ``i``."""
    mem = schedule.memory
    p = mem.timeline[i]
    return {m: sum(mem.state.get(m, {}).get(k, 0) for k in p.resident.get(m, ()))
            for m, mesh in schedule.placement.items() if device in mesh.devices}


def samples(schedule: Schedule, device: int) -> list[tuple[float, int, int, dict[str, int]]]:
    """(time, bytes after offload, before offload, model -> resident bytes) on ``device``: at
    each op's start (with its working memory) and end (without), from t=0 (the state the
    previous iteration left, as iterations repeat)."""
    mem = schedule.memory
    out = []
    for a, b, i in device_points(schedule)[device]:
        p, state = mem.timeline[i], _state(schedule, i, device)
        work = max(0, p.after[device] - sum(state.values()))
        out += [(a, p.after[device], p.before[device], state),
                (b, p.after[device] - work, p.before[device] - work, state)]
    if out and out[0][0] > 0:
        _, after, before, state = out[-1]
        out.insert(0, (0.0, after, before, state))
    return out


def device_groups(schedule: Schedule) -> list[tuple[int, ...]]:
    """Devices holding the same models with identical memory curves (after and before
    offload), largest group first."""
    groups: dict[tuple, list[int]] = {}
    for d in range(len(schedule.memory.capacity)):
        owners = tuple(m for m, mesh in schedule.placement.items() if d in mesh.devices)
        curve = tuple((round(t, 9), a, b) for t, a, b, _ in samples(schedule, d))
        groups.setdefault((owners, curve), []).append(d)
    return sorted((tuple(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def stacked(schedule: Schedule, device: int) -> tuple[list[float], dict[str, list[float]]]:
    """(times, layer -> GB) of what fills ``device``: each model's resident state and the
    running op's working memory (after offload minus resident state)."""
    points = samples(schedule, device)
    owners = [m for m, mesh in schedule.placement.items() if device in mesh.devices]
    layers: dict[str, list[float]] = {m: [] for m in owners + [WORKING]}
    for _, after, _, state in points:
        for m in owners:
            layers[m].append(state.get(m, 0) / 1e9)
        layers[WORKING].append(max(0, after - sum(state.values())) / 1e9)
    return [t for t, *_ in points], {k: v for k, v in layers.items() if any(v)}


def phases(schedule: Schedule) -> list[tuple[str, float, float]]:
    """(role, start, end) of every role in the estimated iteration."""
    out = []
    for role, (t0, per_run) in role_run_times(schedule).items():
        end = max((a + b for run in per_run for a, b in run), default=0.0)
        if end > 0:
            out.append((role, t0, t0 + end))
    return out


def _mark_phases(ax, spans: list[tuple[str, float, float]], label: bool) -> None:
    for role, a, b in spans:
        ax.axvspan(a, b, color=PHASE_COLORS.get(role, "grey"), alpha=0.08, linewidth=0)
        if label:
            ax.text((a + b) / 2, 0.97, role, transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize="x-small", color="dimgrey")


def _step(xs: list[float], ys: list[float], end: float) -> tuple[list[float], list[float]]:
    return xs + [max(xs[-1], end)], ys + ys[-1:]


def _plot_groups(ax, schedule: Schedule, groups, end: float, colors) -> None:
    mem = schedule.memory
    for g, devs in enumerate(groups):
        c, pts = colors[g % len(colors)], samples(schedule, devs[0])
        if not pts:
            continue
        xs = [t for t, *_ in pts]
        after = [a / 1e9 for _, a, _, _ in pts]
        before = [b / 1e9 for _, _, b, _ in pts]
        ax.step(*_step(xs, after, end), where="post", color=c,
                label=f"devices {fmt_devices(devs)}")
        ax.step(*_step(xs, before, end), where="post", color=c, linestyle="--", alpha=0.5)
    if mem.capacity:
        ax.axhline(mem.capacity[0] / 1e9, color="red", linewidth=1, label="capacity")
    ax.set_ylabel("GB per device")
    ax.set_title(f"memory per device group, strategy {schedule.strategy} (dashed: before "
                 f"offload)", fontsize="small")
    ax.legend(fontsize="x-small", ncol=3, loc="upper right")


def _plot_stack(ax, schedule: Schedule, devs: tuple[int, ...], end: float, colors) -> None:
    times, layers = stacked(schedule, devs[0])
    if not times:
        return
    models = list(schedule.placement)
    xs = times + [max(times[-1], end)]
    base = [0.0] * len(xs)
    for name, ys in layers.items():
        ys = ys + ys[-1:]
        top = [b + y for b, y in zip(base, ys)]
        c = "lightgrey" if name == WORKING else colors[models.index(name) % len(colors)]
        ax.fill_between(xs, base, top, step="post", color=c, alpha=0.8, label=name,
                        linewidth=0)
        base = top
    ax.axhline(schedule.memory.capacity[0] / 1e9, color="red", linewidth=1)
    ax.set_ylabel("GB")
    ax.set_title(f"devices {fmt_devices(devs)}: resident state per model + working memory",
                 fontsize="small")
    ax.legend(fontsize="x-small", ncol=4, loc="upper right")


def plot_memory(schedule: Schedule, path: str) -> str:
    """Memory per device group over one iteration with phases marked, a stacked panel per
    group, and the pipelined steady state when the schedule has one."""
    # The object API (no pyplot): no global backend switch, nothing left open.
    import matplotlib
    from matplotlib.figure import Figure

    mem = schedule.memory
    if not isinstance(mem, MemoryReport):
        raise ValueError("this schedule has no memory report (compile it with a cluster)")
    plan = schedule.pipeline
    groups = device_groups(schedule)
    shown = groups[:MAX_GROUP_PANELS]
    ratios = [2.5] + [1.6] * len(shown) + ([1.4] if plan is not None else [])
    fig = Figure(figsize=(11, 1.6 + 1.7 * len(ratios)))
    axes = fig.subplots(len(ratios), 1, height_ratios=ratios, squeeze=False)[:, 0]
    end = schedule.estimates.iteration_time if isinstance(schedule.estimates, Estimates) else 0
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    spans = phases(schedule)
    _plot_groups(axes[0], schedule, groups, end, colors)
    for k, devs in enumerate(shown):
        _plot_stack(axes[1 + k], schedule, devs, end, colors)
    for k, ax in enumerate(axes[:1 + len(shown)]):
        _mark_phases(ax, spans, label=k == 0)
    axes[len(shown)].set_xlabel("estimated time in the iteration (s)")
    if plan is not None:
        _plot_pipeline(axes[-1], plan)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)
