"""Learning-rate schedules of ``models.<name>.optim`` (warm-up, then constant, linear or
cosine decay), as a ``torch.optim.lr_scheduler.LambdaLR`` stepped once per optimizer step.

The factor applied to ``optim.lr`` at optimizer step ``s`` (0-based: the ``s``-th update
runs with it), with ``W`` warm-up steps, ``T`` total steps and ``m = min_lr_ratio``::

    s < W:   (s + 1) / W                               # linear warm-up, full lr at s = W - 1
    else:    p = min(1, (s - W) / max(1, T - W))       # decay progress
             constant: 1
             linear:   m + (1 - m) (1 - p)
             cosine:   m + (1 - m) (1 + cos(pi p)) / 2

``T`` is derived from the run, never written twice (:func:`total_optimizer_steps`):
``num_episode x (sample_per_episode // train_global_batch_size) x num_training_epoch``;
``W`` is ``warmup_steps``, or ``round(warmup_ratio x T)``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from flowrl.config import RuntimeArgs
from flowrl.config.model import OptimConfig


@dataclass(frozen=True)
class LRSchedule:
    """A schedule's settings; :meth:`factor` is the lr factor at an optimizer step."""

    kind: str = "constant"
    warmup: int = 0
    total: int = 1
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.kind, self.warmup, self.total, self.min_ratio)

    def factor(self) -> Callable[[int], float]:
        """The ``LambdaLR`` function: a ``partial`` of :func:`lr_factor`, so a checkpoint
        stores only the step count and a resumed run follows the current config."""
        return partial(lr_factor, kind=self.kind, warmup=self.warmup, total=self.total,
                       min_ratio=self.min_ratio)


def lr_factor(step: int, kind: str, warmup: int, total: int, min_ratio: float) -> float:
    """The factor of ``optim.lr`` at optimizer ``step`` (see the module docstring)."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - p)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def total_optimizer_steps(runtime: RuntimeArgs) -> int:
    """Optimizer steps of a whole run: ``num_episode x (sample_per_episode //
    train_global_batch_size) x num_training_epoch`` (at least 1)."""
    per_episode = max(1, runtime.sample_per_episode // runtime.train_global_batch_size)
    return max(1, runtime.num_episode * per_episode * runtime.num_training_epoch)


def lr_schedule(optim: OptimConfig, total: int) -> LRSchedule | None:
    """The schedule ``optim`` asks for over ``total`` steps; ``None`` for a constant lr
    without warm-up (no scheduler at all: the behaviour before schedules existed)."""
    if optim.warmup_steps is not None:
        warmup = optim.warmup_steps
    else:
        warmup = round((optim.warmup_ratio or 0.0) * total)
    if optim.scheduler == "constant" and warmup == 0:
        return None
    return LRSchedule(optim.scheduler, warmup, total, optim.min_lr_ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig,
                    runtime: RuntimeArgs) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A ``LambdaLR`` for ``optim``'s schedule over the run's steps (``None``: constant)."""
    schedule = lr_schedule(optim, total_optimizer_steps(runtime))
    if schedule is None:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor())


def fused_kwargs(cls: type[torch.optim.Optimizer], fused: bool | None,
                 device: torch.device) -> dict[str, bool]:
    """``fused`` / ``foreach`` for ``cls``: ``optim.fused`` when set, else the fused kernel on
    CUDA and the foreach (multi-tensor) one on CPU; nothing for optimizers without them."""
    params = inspect.signature(cls.__init__).parameters
    if fused is None:
        fused = device.type == "cuda"
        if not fused and "foreach" in params:
            return {"foreach": True}
    return {"fused": True} if fused and "fused" in params else {}
