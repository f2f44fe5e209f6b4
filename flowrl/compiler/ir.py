"""Moved to :mod:`flowrl.ir` (graphs, schedules and their JSON form are IR data, importing no
compiler pass); re-exported here so existing ``flowrl.compiler.ir`` imports keep working."""

from flowrl.ir import (FLOW_INPUT, CallNode, Estimates, FlowGraph, MemoryPoint,  # noqa: F401
                       MemoryReport, Mesh, Op, OpKind, Schedule, WorkerGroup)
