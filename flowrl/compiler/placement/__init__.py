"""Pass ``placement``: a device mesh (device ids, tp/pp/dp) for every model.

Strategies, one file each, registered by name in :mod:`~flowrl.compiler.placement.registry`:
``colocate`` (every unit on all devices, time-sharing memory), ``disaggregate`` (disjoint
devices, grown greedily), ``manual`` (``models.<name>.devices``) and ``search`` (explores
placements, scoring each with the compiler's own passes). Units come from
:mod:`flowrl.compiler.colocation`.
"""

from __future__ import annotations

# Importing a strategy module registers it (order = the order strategies are listed in).
from flowrl.compiler.placement.colocate import colocate
from flowrl.compiler.placement.disaggregate import disaggregate, layout, unit_overflow, unit_time
from flowrl.compiler.placement.manual import manual
from flowrl.compiler.placement.registry import (Evaluate, PlacementRequest, Workload, get_strategy,
                                                register_strategy, strategy_names)
from flowrl.compiler.placement.search import search_placement, unit_options
from flowrl.compiler.colocation import Unit
from flowrl.compiler.resources import ModelResources
from flowrl.config import RuntimeArgs
from flowrl.ir import ClusterSpec, Mesh


def placement(units: list[Unit], resources: dict[str, ModelResources], cluster: ClusterSpec,
              strategy: str, workload: Workload, args: RuntimeArgs, seed: int = 0,
              evaluate: Evaluate | None = None) -> dict[str, Mesh]:
    """Model -> :class:`Mesh` for the registered ``strategy``.

    ``evaluate`` (meshes -> estimated iteration seconds, ``inf`` when infeasible) is needed
    by ``search`` only; the compile pipeline passes its later passes composed.
    """
    return get_strategy(strategy)(PlacementRequest(units, resources, cluster, workload, args,
                                                   seed, evaluate))


__all__ = ["placement", "colocate", "disaggregate", "manual", "search_placement", "layout",
           "unit_time", "unit_overflow", "unit_options", "register_strategy", "get_strategy",
           "strategy_names", "PlacementRequest", "Workload", "Evaluate"]
