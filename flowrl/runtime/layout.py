"""Which worker processes host which models: the runtime's reading of a schedule's placement.

Models that share devices (same ``colocation_group``, or overlapping device sets in a compiled
placement) share worker processes, so offloading one really frees memory for the other. Each
group has as many replicas (processes) as its largest data-parallel size; a model with
``dp`` replicas lives on the group's first ``dp`` workers. A group is pinned to the Ray nodes
offering its models' ``ray_node_resource`` (unpinned models follow a pinned one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from flowrl.config import ModelConfig
from flowrl.errors import ConfigError


@dataclass
class WorkerGroup:
    """Processes sharing one device mesh."""

    name: str
    models: list[str]
    replicas: int
    devices: list[int]
    dp: dict[str, int] = field(default_factory=dict)
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


def _placed(placement: Any, model: str, field: str) -> Any:
    """A field of the compiled mesh of ``model`` (``Mesh`` or its dict form), if placed."""
    entry = placement.get(model) if isinstance(placement, dict) else None
    if entry is None:
        return None
    return entry.get(field) if isinstance(entry, dict) else getattr(entry, field, None)


def worker_groups(models: list[str], configs: dict[str, ModelConfig],
                  placement: Any = None) -> list[WorkerGroup]:
    """Group models into worker groups from the compiled placement, else from the config."""
    g = nx.Graph()
    g.add_nodes_from(models)
    placed = {m: _placed(placement or {}, m, "devices") for m in models}
    placed = {m: (list(d) if d is not None else None) for m, d in placed.items()}
    if all(d is not None for d in placed.values()):
        for a in models:
            for b in models:
                if a < b and set(placed[a]) & set(placed[b]):
                    g.add_edge(a, b)
    else:
        by_group: dict[str, list[str]] = {}
        for m in models:
            if configs[m].colocation_group:
                by_group.setdefault(configs[m].colocation_group, []).append(m)
        for members in by_group.values():
            nx.add_path(g, members)
    groups, next_device = [], 0
    for comp in sorted(nx.connected_components(g), key=lambda c: min(models.index(m) for m in c)):
        members = sorted(comp, key=models.index)
        # The compiled mesh decides data parallelism (colocate gives a model every device).
        dp = {m: _placed(placement or {}, m, "dp") or configs[m].dp_size for m in members}
        if all(placed[m] is not None for m in members):
            devices = sorted(set().union(*(placed[m] for m in members)))
        else:
            n = max(configs[m].total_devices for m in members)
            devices = list(range(next_device, next_device + n))
            next_device += n
        groups.append(WorkerGroup("+".join(members), members, max(dp.values()), devices, dp,
                                  _pin(members, configs)))
    return groups
