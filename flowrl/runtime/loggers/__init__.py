"""Where a run's per-episode metrics go: the console, ``metrics.jsonl``, TensorBoard and
Weights & Biases, each a :class:`Sink`; :class:`flowrl.runtime.metrics.MetricsLogger` fans one
row out to all of them."""

from __future__ import annotations

from typing import Any, Protocol

from flowrl.runtime.loggers.console import ConsoleSink, format_episode
from flowrl.runtime.loggers.jsonl import JsonlSink
from flowrl.runtime.loggers.tensorboard import TensorBoardSink, tensorboard_dir
from flowrl.runtime.loggers.wandb import WandbSink

__all__ = ["ConsoleSink", "JsonlSink", "Sink", "TensorBoardSink", "WandbSink",
           "format_episode", "tensorboard_dir"]


class Sink(Protocol):
    """One destination of metrics rows (``{"episode": e, name: value or None, ...}``)."""

    def log(self, row: dict[str, Any]) -> None:
        """Record one episode's row."""

    def restore(self, history: list[dict[str, Any]]) -> None:
        """Continue after a checkpoint holding ``history`` (rows logged later are void)."""

    def close(self) -> None:
        """Flush and release files (a later ``log`` reopens them)."""
