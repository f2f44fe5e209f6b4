"""Finiteness checks on values that would train, sync or be saved: pure functions and the
error they raise, with no runtime imports, so modules (``TorchModule.train_micro_batches``
and the backends) and the runtimes (:mod:`flowrl.runtime.guards`) share one rule.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from flowrl.errors import FlowRLError

#: the metric a skipped batch is counted under (prefixed with the model's name)
SKIPPED_METRIC = "nonfinite/skipped_batches"


class NonFiniteError(FlowRLError):
    """A NaN or inf reached a value that would train or sync; the message names the model,
    method, key, episode (1-based), iteration and how many values are non-finite."""

    def __init__(self, model: str, key: str, count: int, total: int, method: str | None = None,
                 episode: int | None = None, iteration: int | None = None) -> None:
        self.model, self.key, self.count, self.total = model, key, count, total
        self.method, self.episode, self.iteration = method, episode, iteration
        where = ", ".join(p for p in (
            f"method {method}" if method else "",
            f"episode {episode}" if episode is not None else "",
            f"iteration {iteration}" if iteration is not None else "") if p)
        super().__init__(
            f"non-finite values in model '{model}'" + (f" ({where})" if where else "") +
            f": key '{key}' has {count} NaN/inf value(s) of {total}; stopped before it could "
            f"reach an optimizer step, a parameter sync or a checkpoint (runtime_args."
            f"on_nonfinite: skip_batch drops such batches instead)")

    def __reduce__(self) -> tuple:  # rebuilt from its fields after crossing to Ray's driver
        return (type(self), (self.model, self.key, self.count, self.total, self.method,
                             self.episode, self.iteration))

    def located(self, method: str, episode: int, iteration: int) -> "NonFiniteError":
        """The same error with the call site filled in (the executor knows it, the module
        that found the value does not)."""
        return NonFiniteError(self.model, self.key, self.count, self.total,
                              self.method or method, episode, iteration)


def count_nonfinite(value: Any) -> tuple[int, int]:
    """(non-finite, total) values in a float tensor or a Python/tensor scalar; (0, n) else."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() and not value.is_complex():
            return 0, value.numel()
        return int((~torch.isfinite(value.detach())).sum()), value.numel()
    if isinstance(value, float):
        return (0 if math.isfinite(value) else 1), 1
    return 0, 0


def first_nonfinite(items: Iterable[tuple[str, Any]]) -> tuple[str, int, int] | None:
    """The first ``(key, non-finite count, total)`` among named values, or ``None``."""
    for key, value in items:
        bad, total = count_nonfinite(value)
        if bad:
            return key, bad, total
    return None


def check_weights(model: str, tensors: dict[str, torch.Tensor], action: str) -> None:
    """Refuse to ``action`` (sync, save) weights holding NaN/inf; names the parameter."""
    for name, t in tensors.items():
        bad, total = count_nonfinite(t)
        if bad:
            raise NonFiniteError(model, name, bad, total,
                                 method=f"{action} (parameter '{name}')")
