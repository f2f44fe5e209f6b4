"""The pipelined episode (``max_staleness >= 1``) for people: per device group, the stages'
steady-state segments (shared by the text report, the Chrome trace and the PNG), and the
"no overlap here" warning."""

from __future__ import annotations

from dataclasses import dataclass

from flowrl.ir import PipelinePlan

#: Steady-state episodes drawn in the trace and the PNG.
EPISODES = 3


@dataclass(frozen=True)
class Segment:
    """One bar of the steady-state timeline: ``lane`` (a device group) busy from ``start``
    for ``duration`` seconds with ``label`` (``kind``: rollout, train, push, wait)."""

    lane: str
    kind: str
    label: str
    start: float
    duration: float


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


def lanes(plan: PipelinePlan) -> list[str]:
    """Device-group lane names: one per stage when they overlap, else one shared lane."""
    if not plan.overlap:
        devs = set(plan.stage("rollout").devices) | set(plan.stage("train").devices)
        return [f"devices {fmt_devices(devs)} (rollout + train)"]
    return [f"devices {fmt_devices(s.devices)} ({s.name})" for s in plan.stages]


def segments(plan: PipelinePlan, episodes: int = EPISODES) -> list[Segment]:
    """The steady state's bars over ``episodes`` episodes (episode ``e`` trains while the
    rollout for ``e + k`` runs; the push publishing ``e + 1`` follows both)."""
    k, period = plan.max_staleness, plan.steady_state_time
    r, s = plan.stage("rollout").time, plan.sync_time
    t = plan.stage("train").time - s
    names = lanes(plan)
    out: list[Segment] = []
    for e in range(episodes):
        t0 = e * period
        if not plan.overlap:
            out += [Segment(names[0], "rollout", f"rollout e+{k}", t0, r),
                    Segment(names[0], "train", "train e", t0 + r, t),
                    Segment(names[0], "push", "push v=e+1", t0 + r + t, s)]
            continue
        push = t0 + max(r, t)
        out += [Segment(names[0], "rollout", f"rollout e+{k}", t0, r),
                Segment(names[0], "push", "receive v=e+1", push, s),
                Segment(names[1], "train", "train e", t0, t),
                Segment(names[1], "push", "push v=e+1", push, s)]
        if plan.sync_wait > 0:
            out.append(Segment(names[1], "wait", "sync waits for rollout", t0 + t,
                               plan.sync_wait))
    return out


def overlap_warning(plan: PipelinePlan) -> str | None:
    """The explain warning when staleness buys no overlap (the stages share devices)."""
    if plan.overlap:
        return None
    msg = (f"max_staleness buys no overlap here: rollout and train share devices "
           f"{fmt_devices(plan.shared_devices)}")
    sug = plan.suggestion
    if sug is None:
        reason = "; ".join(plan.notes) or "no disjoint placement was found"
        return f"{msg}; {reason}"
    slower = " (slower on this cluster)" if sug.steady_state_time > plan.steady_state_time \
        else ""
    groups = "".join(f", colocation_group [{', '.join(g)}]" for g in sug.colocation)
    return (f"{msg}; a disaggregated placement (e.g. --strategy {sug.strategy}{groups}) would "
            f"overlap them, predicted {plan.steady_state_time:.3g} s -> "
            f"{sug.steady_state_time:.3g} s per episode{slower}")
