"""The timeline of devices that share host cores (virtual devices of a ``local`` cluster).

A ``local:N`` cluster on a machine with ``C`` cores (``ClusterSpec.host_cores``) runs each
virtual device's work on those cores: while ``b`` devices are busy at once, each runs at
``min(1, C / b)`` of one core's speed (``ClusterSpec.speed``). An op's duration from the cost
model is its *work* at full speed; here it stretches only over the stretches of time where
more devices than cores are busy, so the slow-down follows the overlap in the timeline (a
scorer alone on its device runs at full speed; three scorers at once on two cores run at
two thirds).

The rules of :class:`flowrl.compiler.schedule.Timeline` are kept: an op waits for the ops
before it (in list order) on each of its devices, for the calls whose outputs it reads, for
``offset`` and for the times in ``free`` (device -> when it becomes free). It is an
event-driven simulation: between two events (an op starts or ends) the busy devices and
hence every running op's speed are constant.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowrl.ir import ClusterSpec

_EPS = 1e-12


@dataclass
class Job:
    """One op to simulate: its devices, its seconds at full speed and the jobs it waits for
    (indices of earlier jobs: its graph predecessors)."""

    devices: tuple[int, ...]
    work: float
    preds: tuple[int, ...] = ()


def _waits(jobs: list[Job]) -> list[set[int]]:
    """Per job: the earlier jobs it waits for (its predecessors, and the previous job on each
    of its devices: ops on one device run in list order)."""
    last: dict[int, int] = {}
    out = []
    for i, job in enumerate(jobs):
        waits = set(job.preds)
        for d in job.devices:
            if d in last:
                waits.add(last[d])
            last[d] = i
        out.append(waits)
    return out


def shared_timeline(jobs: list[Job], cluster: ClusterSpec, free: dict[int, float],
                    offset: float = 0.0) -> list[tuple[float, float]]:
    """(start, end) of every job on devices sharing ``cluster.host_cores`` (module
    docstring); ``free`` is updated in place with each device's last end."""
    waits = _waits(jobs)
    earliest = [max([offset] + [free.get(d, offset) for d in job.devices]) for job in jobs]
    left = [job.work for job in jobs]
    start: list[float | None] = [None] * len(jobs)
    end: list[float | None] = [None] * len(jobs)
    pending, running, t = list(range(len(jobs))), [], offset
    while pending or running:
        ready = [j for j in pending if all(end[w] is not None for w in waits[j])]
        for j in [j for j in ready if earliest[j] <= t + _EPS]:
            start[j] = t
            pending.remove(j)
            running.append(j)
        arrivals = [earliest[j] for j in ready if start[j] is None]
        busy = len({d for j in running for d in jobs[j].devices})
        rate = cluster.speed(busy)
        steps = [left[j] / rate for j in running] + [a - t for a in arrivals]
        if not steps:  # cannot happen: every wait is an earlier job
            raise RuntimeError("core-sharing timeline stalled")
        step = max(0.0, min(steps))
        t += step
        for j in list(running):
            left[j] -= rate * step
            if left[j] <= _EPS * max(1.0, jobs[j].work):
                end[j] = t
                running.remove(j)
    for job, e in zip(jobs, end):
        for d in job.devices:
            free[d] = max(free.get(d, offset), e)
    return [(s, e) for s, e in zip(start, end)]
