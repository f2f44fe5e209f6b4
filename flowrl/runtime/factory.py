"""Pick the executor the config asks for (``runtime: local`` or ``runtime: ray``)."""

from __future__ import annotations

from flowrl.ir import Schedule
from flowrl.config import FlowRLConfig
from flowrl.models.base import BaseModule


def make_executor(schedule: Schedule, modules: dict[str, BaseModule], config: FlowRLConfig):
    """A ``LocalExecutor`` (in-process, the default) or a ``RayExecutor``."""
    seed = config.runtime_args.seed
    if config.runtime == "ray":
        from flowrl.runtime.ray_executor import RayExecutor

        return RayExecutor(schedule, modules, config, seed)
    from flowrl.runtime.executor import LocalExecutor

    return LocalExecutor(schedule, modules, seed, config.runtime_args.on_nonfinite)
