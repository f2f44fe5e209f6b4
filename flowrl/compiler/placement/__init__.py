"""Pass ``placement``: a device mesh (device ids, tp/pp/dp) for every model.

Strategies, one file each, registered by name in :mod:`~flowrl.compiler.placement.registry`:
``colocate`` (every unit on all devices, time-sharing memory), ``disaggregate`` (disjoint
devices, grown greedily), ``manual`` (``models.<name>.devices``), ``hybrid`` (the best
rollout:train split of the disaggregated and hybrid families) and ``search`` (the planner:
placements, per-model tp x pp x dp and staleness, scoring each with the compiler's own
passes). Units come from :mod:`flowrl.compiler.colocation`.
"""

from __future__ import annotations

# Importing a strategy module registers it (order = the order strategies are listed in).
from flowrl.compiler.placement.colocate import colocate
from flowrl.compiler.placement.disaggregate import disaggregate, layout, unit_overflow, unit_time
from flowrl.compiler.placement.manual import manual
from flowrl.compiler.placement.hybrid import hybrid_strategy, model_roles
from flowrl.compiler.placement.registry import (Evaluate, EvaluateAt, PlacementRequest, Placed,
                                                Workload, get_strategy, register_strategy,
                                                strategy_names)
from flowrl.compiler.placement.search import plan_search, search_placement, unit_options
register_strategy("hybrid")(hybrid_strategy)
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
    return plan_placement(units, resources, cluster, strategy, workload, args, seed,
                          evaluate).meshes


def plan_placement(units: list[Unit], resources: dict[str, ModelResources],
                   cluster: ClusterSpec, strategy: str, workload: Workload, args: RuntimeArgs,
                   seed: int = 0, evaluate: Evaluate | None = None,
                   evaluate_at: EvaluateAt | None = None) -> Placed:
    """:func:`placement` with the strategy's whole answer (staleness, family, score)."""
    got = get_strategy(strategy)(PlacementRequest(units, resources, cluster, workload, args,
                                                  seed, evaluate, evaluate_at))
    return got if isinstance(got, Placed) else Placed(got)


__all__ = ["placement", "plan_placement", "plan_search", "Placed", "EvaluateAt",
           "model_roles", "colocate", "disaggregate", "manual", "search_placement", "layout",
           "unit_time", "unit_overflow", "unit_options", "register_strategy", "get_strategy",
           "strategy_names", "PlacementRequest", "Workload", "Evaluate"]
