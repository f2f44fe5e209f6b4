"""Strategy ``manual``: ``models.<name>.devices`` from the config."""

from __future__ import annotations

from flowrl.compiler.placement.registry import PlacementRequest, register_strategy
from flowrl.compiler.resources import ModelResources
from flowrl.errors import CompileError
from flowrl.ir import Mesh


def manual(resources: dict[str, ModelResources]) -> dict[str, Mesh]:
    """Each model on the devices its config lists (data parallel: what tp*pp leaves)."""
    meshes = {}
    for name, r in resources.items():
        if r.manual_devices is None:
            raise CompileError(f"strategy 'manual' needs models.{name}.devices")
        n = len(r.manual_devices)
        meshes[name] = Mesh(tuple(r.manual_devices), r.tp, r.pp, n // r.mp)
    return meshes


@register_strategy("manual")
def _manual(req: PlacementRequest) -> dict[str, Mesh]:
    return manual(req.resources)
