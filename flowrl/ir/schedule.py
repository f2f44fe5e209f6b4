"""The schedule: what a runtime executes.

The compiler turns traced graphs into a :class:`Schedule`: per flow role an ordered list of
:class:`~flowrl.ir.ops.Op` that the runtimes execute (see :mod:`flowrl.ir.interpreter` for
walking them), plus where each model runs (:class:`~flowrl.ir.ops.Mesh`), which models share
worker processes (:class:`~flowrl.ir.ops.WorkerGroup`), the memory timeline and the
estimated times. The JSON form is :mod:`flowrl.ir.serialize`; rendering (text, Chrome trace,
PNG) lives in :mod:`flowrl.report`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from flowrl.errors import FlowRLError
from flowrl.ir.graph import FlowGraph
from flowrl.ir.layout import PlanLayout
from flowrl.ir.ops import (Estimates, MemoryPoint, MemoryReport, Mesh, Op, OpKind,  # noqa: F401
                           WorkerGroup, group_workers)
from flowrl.ir.pipeline import PipelinePlan
from flowrl.ir.serialize import schedule_from_json, schedule_to_json


@dataclass
class Schedule:
    """What a runtime executes: the traced graphs and, per flow, the ordered ops.

    ``ops`` is keyed by flow role (``"rollout"``, ``"train"``, ``"sync"``, ``"eval"``).
    The compiler fills ``placement`` (model -> :class:`Mesh`), ``worker_groups`` (derived
    from the placement; not part of the JSON form, rebuilt on load), ``memory``
    (:class:`MemoryReport`), ``estimates`` (:class:`Estimates`) and ``cluster`` (a
    :class:`~flowrl.ir.cluster.ClusterSpec`); a schedule built with
    :func:`flowrl.compiler.lower.lower` (no cluster) has only the ops and empty dicts there.
    ``pipeline`` (:class:`~flowrl.ir.pipeline.PipelinePlan`): the pipelined episode, only
    when compiled with ``runtime_args.max_staleness >= 1`` and a cluster. ``layout``
    (:class:`~flowrl.ir.layout.PlanLayout`): per-model tp x pp x dp, the rollout:train split
    and the staleness the placement pass chose (``None`` without a cluster).
    """

    graphs: dict[str, FlowGraph]
    ops: dict[str, list[Op]]
    placement: dict[str, Mesh] = field(default_factory=dict)
    memory: MemoryReport | dict[str, Any] = field(default_factory=dict)
    estimates: Estimates | dict[str, Any] = field(default_factory=dict)
    cluster: Any = None
    strategy: str = "none"
    worker_groups: list[WorkerGroup] = field(default_factory=list)
    pipeline: PipelinePlan | None = None
    layout: PlanLayout | None = None

    def ops_for(self, role: str) -> list[Op]:
        return self.ops.get(role, [])

    def to_json(self) -> dict[str, Any]:
        """The documented ``flowrl.schedule/1`` JSON object (see docs/compiler.md)."""
        return schedule_to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Schedule":
        """Inverse of :meth:`to_json`."""
        return schedule_from_json(data, cls)

    # Convenience for users and docs (``schedule.explain()``). The renderers live in
    # flowrl.report (above the ir layer, for the CLI and reports), which registers them in
    # RENDERERS when it is imported: the ir package never imports its renderers.
    def explain(self) -> str:
        """A human-readable report: DAG, meshes, ops with times, memory, iteration time."""
        return _renderer("explain")(self)

    def to_chrome_trace(self, path: str) -> str:
        """Write the estimated iteration timeline as a Chrome/Perfetto trace; returns the path."""
        return _renderer("to_chrome_trace")(self, path)

    def plot_memory(self, path: str) -> str:
        """Plot per-device memory over the iteration (before/after offload) to a PNG."""
        return _renderer("plot_memory")(self, path)


#: ``Schedule`` method name -> the flowrl.report function behind it (filled by flowrl.report).
RENDERERS: dict[str, Callable[..., str]] = {}


def _renderer(name: str) -> Callable[..., str]:
    if name not in RENDERERS:
        raise FlowRLError(f"Schedule.{name}() renders through flowrl.report, which is not "
                          f"loaded: `import flowrl.report` first")
    return RENDERERS[name]
