"""The placement strategy registry: a strategy is a function registered under its name.

A new strategy is one file in this package with one ``@register_strategy("name")`` function
taking a :class:`PlacementRequest` and returning model -> :class:`~flowrl.ir.Mesh` (or a
:class:`Placed`, when it also chooses the staleness and knows its plan's family), plus
its import in ``__init__.py``; validation, the CLI's ``--strategy`` choices and the error for
an unknown name all read the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from flowrl.compiler.colocation import Unit
from flowrl.compiler.costmodel import CallKind
from flowrl.compiler.resources import ModelResources
from flowrl.config import RuntimeArgs
from flowrl.errors import CompileError
from flowrl.ir import ClusterSpec, Mesh

#: model -> [(call kind, runs per iteration)]: what a model does in one episode.
Workload = dict[str, list[tuple[CallKind, int]]]
#: meshes -> estimated iteration seconds (``inf`` when infeasible): the later passes composed.
Evaluate = Callable[[dict[str, Mesh]], float]
#: (meshes, staleness) -> estimated seconds per episode at that ``max_staleness`` (``inf``
#: when infeasible): what lets ``search`` choose the staleness too.
EvaluateAt = Callable[[dict[str, Mesh], int], float]


@dataclass(frozen=True)
class PlacementRequest:
    """Everything a strategy may use to place the units on the cluster."""

    units: list[Unit]
    resources: dict[str, ModelResources]
    cluster: ClusterSpec
    workload: Workload
    args: RuntimeArgs
    seed: int = 0
    evaluate: Evaluate | None = None  # scores a candidate placement (search)
    evaluate_at: EvaluateAt | None = None  # scores it at a staleness (search, hybrid)


@dataclass(frozen=True)
class Placed:
    """A strategy's answer: the meshes and, for planners that choose them, the staleness the
    plan needs, its family (``colocated``, ``disaggregated``, ``hybrid``, ``custom``) and its
    score (estimated seconds per episode; ``nan`` when the strategy did not score it)."""

    meshes: dict[str, Mesh]
    staleness: int | None = None  # None: the config's max_staleness
    family: str = "custom"
    score: float = float("nan")
    #: the best other plans the strategy scored, best first: (label, meshes, staleness)
    runners_up: tuple[tuple[str, dict[str, Mesh], int | None], ...] = ()


Strategy = Callable[[PlacementRequest], "dict[str, Mesh] | Placed"]
_STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Register the decorated function as placement strategy ``name``."""

    def deco(fn: Strategy) -> Strategy:
        if name in _STRATEGIES:
            raise CompileError(f"placement strategy '{name}' is registered twice")
        _STRATEGIES[name] = fn
        return fn

    return deco


def strategy_names() -> list[str]:
    """Registered strategies, in registration order."""
    return list(_STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``; unknown names are a :class:`CompileError`."""
    if name not in _STRATEGIES:
        raise CompileError(f"unknown placement strategy '{name}'; expected one of "
                           f"{', '.join(_STRATEGIES)}")
    return _STRATEGIES[name]
