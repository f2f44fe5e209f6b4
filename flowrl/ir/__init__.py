"""The intermediate representation: plain data shared by the DSL, the compiler and runtimes.

:mod:`~flowrl.ir.graph` (traced flows), :mod:`~flowrl.ir.ops` (ops, meshes, worker groups,
memory report, estimates), :mod:`~flowrl.ir.schedule` (the schedule holding them), :mod:`~flowrl.ir.cluster` (cluster spec and device
catalogue), :mod:`~flowrl.ir.episode` (the episode's shape), :mod:`~flowrl.ir.serialize`
(the JSON form), :mod:`~flowrl.ir.pipeline` (the pipelined episode of ``max_staleness >= 1``)
and :mod:`~flowrl.ir.interpreter` (walking a schedule). This package imports
only the standard library, networkx, pydantic and :mod:`flowrl.errors`: no compiler pass,
runtime, renderer or config loader.
"""

from flowrl.ir.cluster import ClusterSpec, parse_cluster
from flowrl.ir.episode import ROLE_ORDER, EpisodeSpec
from flowrl.ir.graph import FLOW_INPUT, CallNode, FlowGraph
from flowrl.ir.interpreter import OpInterpreter
from flowrl.ir.ops import (Estimates, MemoryPoint, MemoryReport, Mesh, Op, OpKind, WorkerGroup,
                           group_workers)
from flowrl.ir.pipeline import PipelinePlan, Stage, Suggestion
from flowrl.ir.schedule import Schedule

__all__ = ["FLOW_INPUT", "CallNode", "FlowGraph", "Op", "OpKind", "Mesh", "MemoryPoint",
           "MemoryReport", "Estimates", "Schedule", "WorkerGroup", "group_workers",
           "ClusterSpec", "parse_cluster", "EpisodeSpec", "ROLE_ORDER", "OpInterpreter",
           "PipelinePlan", "Stage", "Suggestion"]
