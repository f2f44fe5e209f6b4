"""Per-episode metrics: aggregation, and the logger that sends each episode's row to the
console, ``metrics.jsonl``, TensorBoard and W&B (the sinks of :mod:`flowrl.runtime.loggers`)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console

from flowrl.config.tracking import WandbArgs
from flowrl.runtime.loggers import (ConsoleSink, JsonlSink, Sink, TensorBoardSink, WandbSink,
                                    tensorboard_dir)


def aggregate(entries: list[tuple[str, float, str]]) -> dict[str, float]:
    """Reduce (name, value, "mean"|"sum") entries to one value per name."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    reduce: dict[str, str] = {}
    for name, value, how in entries:
        sums[name] += value
        counts[name] += 1
        reduce[name] = how
    return {n: (sums[n] if reduce[n] == "sum" else sums[n] / counts[n]) for n in sums}


class MetricsLogger:
    """Fans each episode's row out to its sinks: the console (every metric, grouped by
    prefix), ``output_dir/metrics.jsonl``, TensorBoard scalars under ``output_dir/tb`` and a
    W&B run (``wandb``: a :class:`~flowrl.config.tracking.WandbArgs`, default off).

    ``tensorboard``: ``True`` (an error when the package is missing), ``False``, or ``None``
    for "when ``output_dir`` is set and tensorboard is installed". ``run_config`` is recorded
    with the W&B run; ``resume`` continues the W&B run of ``output_dir``.
    """

    def __init__(self, output_dir: str | None, console: Console | None = None,
                 tensorboard: bool | None = False, wandb: WandbArgs | None = None,
                 run_config: dict[str, Any] | None = None, resume: bool = False) -> None:
        self._console = ConsoleSink(console or Console())
        self.output_dir = output_dir
        self.path: Path | None = Path(output_dir) / "metrics.jsonl" if output_dir else None
        self.tb_dir: Path | None = tensorboard_dir(output_dir, tensorboard)
        self.wandb_mode = wandb.mode if wandb is not None else None
        self.sinks: list[Sink] = [self._console]
        if self.path is not None:
            self.sinks.append(JsonlSink(self.path))
        if self.tb_dir is not None:
            self.sinks.append(TensorBoardSink(self.tb_dir))
        self.wandb: WandbSink | None = None
        if wandb is not None and wandb.mode != "disabled":
            self.wandb = WandbSink(wandb, output_dir, run_config, resume)
            self.sinks.append(self.wandb)
        self.history: list[dict[str, Any]] = []

    @property
    def console(self) -> Console:
        """The console episodes, progress bars and notes are printed to (assignable)."""
        return self._console.console

    @console.setter
    def console(self, console: Console) -> None:
        self._console.console = console

    def describe_outputs(self, run_dirs: str) -> str:
        """One line saying where this run's outputs go: the run directory, then ``run_dirs``
        (:func:`flowrl.runtime.rundir.describe_run_dirs`: metrics, TensorBoard,
        checkpoints), then the W&B run's directory."""
        wandb = self.wandb.describe() if self.wandb else (self.wandb_mode or "off")
        return f"run dir: {self.output_dir or 'none (no output_dir)'} | {run_dirs} | W&B: {wandb}"

    def log(self, episode: int, metrics: dict[str, float]) -> None:
        row = {"episode": episode, **{k: _clean(v) for k, v in sorted(metrics.items())}}
        self.history.append(row)
        for sink in self.sinks:
            sink.log(row)

    def restore(self, history: list[dict[str, Any]]) -> None:
        """Continue from a checkpoint's history: ``metrics.jsonl`` is rewritten to exactly those
        rows (dropping any logged after the checkpoint) and TensorBoard purges later steps."""
        self.history = [dict(r) for r in history]
        for sink in self.sinks:
            sink.restore(self.history)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def _clean(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v
