"""The flowrl compiler: traced flows + model configs + a cluster -> an executable Schedule.

:func:`compile_schedule` runs the pass list of :mod:`~flowrl.compiler.pipeline` (the
:class:`~flowrl.compiler.passes.Pass` interface): ``validate``, ``decoupled``,
``resources``, ``placement`` (a strategy from :mod:`flowrl.compiler.placement`), ``memory``,
``offload``, ``schedule``, ``pipeline``, ``assemble``. The data it reads and produces lives in :mod:`flowrl.ir`.
"""

from flowrl.compiler.pipeline import compile_schedule
from flowrl.compiler.residency import check_residency
from flowrl.ir import ClusterSpec, Estimates, MemoryReport, Mesh, Op, Schedule, parse_cluster

__all__ = ["compile_schedule", "check_residency", "ClusterSpec", "parse_cluster", "Schedule",
           "Op", "Mesh", "MemoryReport", "Estimates"]
