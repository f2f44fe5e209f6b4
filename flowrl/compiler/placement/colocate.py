"""Strategy ``colocate``: every unit (a model or a colocation group) spans all devices (a
model whose config fixes its device count gets that many, from device 0); models time-share
memory and run one after another."""

from __future__ import annotations

from flowrl.compiler.colocation import Unit, unit_meshes
from flowrl.compiler.placement.registry import PlacementRequest, register_strategy
from flowrl.compiler.resources import ModelResources
from flowrl.ir import ClusterSpec, Mesh


def colocate(units: list[Unit], resources: dict[str, ModelResources],
             cluster: ClusterSpec) -> dict[str, Mesh]:
    """Every unit on devices ``0 ..`` (all of them unless its count is pinned)."""
    everything = tuple(range(cluster.num_devices))
    meshes: dict[str, Mesh] = {}
    for u in units:
        meshes.update(unit_meshes(u, everything[:u.pinned or len(everything)], resources))
    return meshes


@register_strategy("colocate")
def _colocate(req: PlacementRequest) -> dict[str, Mesh]:
    return colocate(req.units, req.resources, req.cluster)
