"""The JSON form of a :class:`~flowrl.ir.schedule.Schedule` (``schema: "flowrl.schedule/1"``).

Documented in ``docs/compiler.md``; :func:`schedule_from_json` inverts
:func:`schedule_to_json` exactly. Worker groups are not part of the form: they are derived
from the placement and rebuilt on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowrl.ir.cluster import ClusterSpec
from flowrl.ir.graph import CallNode, FlowGraph
from flowrl.ir.layout import PlanLayout
from flowrl.ir.ops import Estimates, MemoryReport, Mesh, Op, group_workers
from flowrl.ir.pipeline import PipelinePlan

# The Schedule class is passed in (``cls``), so this module never imports it (that would be
# an import cycle with flowrl.ir.schedule): schedules are typed ``Any`` here.

SCHEMA = "flowrl.schedule/1"


def graph_to_json(g: FlowGraph) -> dict[str, Any]:
    """A graph's nodes (topological order), edges, outputs and source."""
    d = g.to_dict()
    d["source"] = g.source
    d["edges"] = [[u, v] for u, v in sorted(g.graph.edges)]
    return d


def graph_from_json(d: dict[str, Any]) -> FlowGraph:
    """Inverse of :func:`graph_to_json`."""
    g = FlowGraph(d["name"], outputs=tuple(d.get("outputs", ())), source=d.get("source", ""))
    for i, n in enumerate(d["nodes"]):  # listed in topological order: keep it as trace order
        outs = frozenset(n["outputs"]) if n.get("outputs") is not None else None
        g.add_call(CallNode(n["id"], n["model"], n["method"], tuple(n["inputs"]), outs,
                            n.get("source", ""), i))
    return g


def schedule_to_json(schedule: Any) -> dict[str, Any]:
    """The ``flowrl.schedule/1`` object (plain JSON types only)."""
    cluster = schedule.cluster
    out = {
        "schema": SCHEMA,
        "strategy": schedule.strategy,
        "cluster": cluster.model_dump() if hasattr(cluster, "model_dump") else cluster,
        "graphs": {r: graph_to_json(g) for r, g in schedule.graphs.items()},
        "placement": {m: (mesh.to_dict() if isinstance(mesh, Mesh) else mesh)
                      for m, mesh in schedule.placement.items()},
        "ops": {r: [op.to_dict() for op in ops] for r, ops in schedule.ops.items()},
        "memory": schedule.memory.to_dict() if isinstance(schedule.memory, MemoryReport) else None,
        "estimates": (schedule.estimates.to_dict() if isinstance(schedule.estimates, Estimates)
                      else None),
    }
    if schedule.pipeline is not None:  # only for max_staleness >= 1: k = 0 JSON is unchanged
        out["pipeline"] = schedule.pipeline.to_dict()
    if getattr(schedule, "layout", None) is not None:  # compiled with a cluster
        out["layout"] = schedule.layout.to_dict()
    return out


def schedule_from_json(data: dict[str, Any], cls: type) -> Any:
    """Rebuild a ``cls`` (:class:`~flowrl.ir.schedule.Schedule`) from
    :func:`schedule_to_json` output."""
    if data.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} object (schema: {data.get('schema')!r})")
    cluster = data.get("cluster")
    placement = {m: Mesh.from_dict(v) for m, v in data["placement"].items()}
    return cls(
        graphs={r: graph_from_json(g) for r, g in data["graphs"].items()},
        ops={r: [Op.from_dict(o) for o in ops] for r, ops in data["ops"].items()},
        placement=placement,
        memory=MemoryReport.from_dict(data["memory"]) if data.get("memory") else {},
        estimates=Estimates.from_dict(data["estimates"]) if data.get("estimates") else {},
        cluster=ClusterSpec.model_validate(cluster) if isinstance(cluster, dict) else cluster,
        strategy=data["strategy"], worker_groups=group_workers(placement),
        pipeline=PipelinePlan.from_dict(data["pipeline"]) if data.get("pipeline") else None,
        layout=PlanLayout.from_dict(data["layout"]) if data.get("layout") else None)


def write_schedule_file(schedule: Any, path: str | Path) -> Path:
    """Write ``schedule`` as JSON to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schedule_to_json(schedule)))
    return path
