"""Which worker processes host which models: the schedule's worker groups, pinned to nodes.

The compiler (and :func:`flowrl.compiler.lower.lower` for an uncompiled schedule) stores
the worker groups in :attr:`Schedule.worker_groups <flowrl.ir.Schedule.worker_groups>`:
models that share devices share worker processes, so offloading one really frees memory
for the other; a group has as many replicas as its largest data-parallel size and a model
with ``dp`` replicas lives on the group's first ``dp`` workers. The runtime only adds where
each group may run: a group is pinned to the Ray nodes offering its models'
``ray_node_resource`` (unpinned models follow a pinned one).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from flowrl.config import ModelConfig
from flowrl.errors import ConfigError
from flowrl.ir import WorkerGroup as ScheduledGroup


@dataclass
class WorkerGroup(ScheduledGroup):
    """A schedule's worker group (processes sharing one device mesh) and its node pin."""

    node_resource: str | None = None  # Ray custom resource its nodes must offer


def _pin(members: list[str], configs: dict[str, ModelConfig]) -> str | None:
    """The node resource of a group's models; models sharing processes must agree."""
    wanted = {m: configs[m].ray_node_resource for m in members}
    distinct = sorted({r for r in wanted.values() if r})
    if len(distinct) > 1:
        raise ConfigError(
            f"models {', '.join(members)} share worker processes (same devices) but ask for "
            f"different nodes: " + ", ".join(f"models.{m}.ray_node_resource={r!r}"
                                             for m, r in wanted.items()) +
            "; give them the same value")
    return distinct[0] if distinct else None


def worker_groups(groups: list[ScheduledGroup], configs: dict[str, ModelConfig],
                  ) -> list[WorkerGroup]:
    """The schedule's ``groups``, each pinned per its models' ``ray_node_resource``.

    Every model in ``configs`` must be in a group: a schedule without worker groups (built
    by hand, or a JSON file without a placement) is a :class:`ConfigError` naming the
    models left out.
    """
    placed = {m for g in groups for m in g.models}
    missing = [m for m in configs if m not in placed]
    if missing:
        raise ConfigError(f"the schedule has no worker group for models {', '.join(missing)}; "
                          f"build it with Engine.compile() (flowrl.compiler.lower or "
                          f"compile_schedule fill Schedule.worker_groups)")
    return [WorkerGroup(**{f.name: getattr(g, f.name) for f in fields(ScheduledGroup)},
                        node_resource=_pin(g.models, configs)) for g in groups]
