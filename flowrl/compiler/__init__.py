"""The flowrl compiler: traced flows + model configs + a cluster -> an executable Schedule.

Passes (one file each, each a plain function), run by :func:`compile_schedule` in order:
:func:`~flowrl.compiler.validate.validate`, :func:`~flowrl.compiler.placement.placement`
(with :mod:`~flowrl.compiler.colocation`), :func:`~flowrl.compiler.memory.memory`,
:func:`~flowrl.compiler.offload.offload`, :func:`~flowrl.compiler.schedule.schedule`.
"""

from flowrl.compiler.cluster import ClusterSpec, parse_cluster
from flowrl.compiler.ir import Estimates, MemoryReport, Mesh, Op, Schedule
from flowrl.compiler.pipeline import compile_schedule
from flowrl.compiler.residency import check_residency

__all__ = ["compile_schedule", "check_residency", "ClusterSpec", "parse_cluster", "Schedule",
           "Op", "Mesh", "MemoryReport", "Estimates"]
