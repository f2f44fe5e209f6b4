"""The pass interface: :class:`Pass` objects over an immutable :class:`PlanContext`.

A pass declares its ``name``, the context fields it ``requires`` and the ones it
``guarantees``; its ``fn(ctx)`` returns exactly those fields as a dict and never mutates the
context or what earlier passes put there. :func:`run_passes` checks requirements before a
pass and guarantees after it, and names the pass in every failure: a
:class:`~flowrl.errors.FlowRLError` keeps its message and gains the note "in compiler pass
'NAME'"; any other exception becomes a :class:`~flowrl.errors.CompileError` naming the pass.
The compile pipeline's list is :data:`flowrl.compiler.pipeline.PASSES`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Callable

from flowrl.config import ModelConfig, RuntimeArgs
from flowrl.errors import CompileError, FlowRLError
from flowrl.ir import ClusterSpec, FlowGraph, Mesh, PipelinePlan, Schedule
from flowrl.ir.layout import PlanLayout

if TYPE_CHECKING:  # types only: the pass modules import nothing from here
    from flowrl.compiler.colocation import Unit
    from flowrl.compiler.memory import MemoryModel
    from flowrl.compiler.offload import OffloadPlan
    from flowrl.compiler.placement.registry import Workload
    from flowrl.compiler.resources import ModelResources
    from flowrl.compiler.schedule import OpCosts, TimedPlan


@dataclass(frozen=True)
class PipelineAdvice:
    """The ``pipeline`` pass's result: the pipelined episode with its placement advice, or
    ``plan=None`` when ``max_staleness == 0`` (a pass must always provide its field)."""

    plan: PipelinePlan | None


@dataclass(frozen=True)
class PlanContext:
    """Inputs of a compilation and, as passes run, their results (``None``: not yet)."""

    graphs: dict[str, FlowGraph]  # the traced flows; the decoupled pass may add nodes
    models: dict[str, ModelConfig]
    sync: list[tuple[str, str]]
    cluster: ClusterSpec
    args: RuntimeArgs
    strategy: str = "colocate"
    methods: dict[str, frozenset[str]] | None = None
    capabilities: dict[str, dict[str, bool]] | None = None  # per model: tp, pp, continuous_batching
    seed: int = 0
    colocation: list[list[str]] | None = None
    op_costs: OpCosts | None = None
    # ---- results, each owned by the one pass that guarantees it -----------------------------
    validated: bool | None = None  # validate
    resources: dict[str, ModelResources] | None = None  # resources
    units: list[Unit] | None = None  # resources
    workload: Workload | None = None  # resources
    meshes: dict[str, Mesh] | None = None  # placement
    layout: PlanLayout | None = None  # placement: per-model tp/pp/dp, split, staleness
    candidates: list | None = None  # placement: runner-up PlanSummary list, best first
    memory: MemoryModel | None = None  # memory
    offload_plan: OffloadPlan | None = None  # offload
    timed: TimedPlan | None = None  # schedule
    pipeline: PipelineAdvice | None = None  # pipeline
    schedule: Schedule | None = None  # assemble


@dataclass(frozen=True)
class Pass:
    """One compiler pass: a pure function from a context to the fields it guarantees."""

    name: str
    requires: tuple[str, ...]
    guarantees: tuple[str, ...]
    fn: Callable[[PlanContext], dict[str, Any]]


_FIELDS = {f.name for f in fields(PlanContext)}


def _check_declared(p: Pass) -> None:
    unknown = [f for f in p.requires + p.guarantees if f not in _FIELDS]
    if unknown:
        raise CompileError(f"compiler pass '{p.name}' declares unknown context fields "
                           f"{unknown}")


def run_pass(ctx: PlanContext, p: Pass) -> PlanContext:
    """Run one pass on ``ctx``; returns the context with its guarantees filled in."""
    _check_declared(p)
    missing = [f for f in p.requires if getattr(ctx, f) is None]
    if missing:
        raise CompileError(f"compiler pass '{p.name}' requires {', '.join(missing)}, which no "
                           f"earlier pass provided")
    try:
        updates = p.fn(ctx)
    except FlowRLError as e:
        e.add_note(f"in compiler pass '{p.name}'")
        raise
    except Exception as e:
        raise CompileError(f"compiler pass '{p.name}' failed: {type(e).__name__}: {e}") from e
    extra = sorted(set(updates) - set(p.guarantees))
    if extra:
        raise CompileError(f"compiler pass '{p.name}' wrote {', '.join(extra)}, which it does "
                           f"not guarantee (another pass owns it)")
    absent = [f for f in p.guarantees if updates.get(f) is None]
    if absent:
        raise CompileError(f"compiler pass '{p.name}' did not provide {', '.join(absent)}")
    return replace(ctx, **updates)


def run_passes(ctx: PlanContext, passes: list[Pass]) -> PlanContext:
    """Run ``passes`` in order (see the module docstring); returns the final context."""
    for p in passes:
        ctx = run_pass(ctx, p)
    return ctx
