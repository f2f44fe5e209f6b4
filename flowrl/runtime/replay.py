"""The replay buffer: rollout samples of one episode, re-batched for training."""

from __future__ import annotations

from typing import Any

import torch

from flowrl.runtime.batch import Batch


class ReplayBuffer:
    """Holds one episode's samples (plain per-sample dicts, see :meth:`Batch.samples`);
    yields global batches as lists of micro-batches."""

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.samples)

    def add_batch(self, batch: dict[str, Any]) -> None:
        self.samples.extend(Batch(batch).samples())

    def clear(self) -> None:
        self.samples = []

    def global_batches(self, global_size: int, micro_size: int, generator: torch.Generator | None,
                       ) -> list[list[Batch]]:
        """One pass over the buffer: shuffled (when ``generator`` is given) global batches.

        A trailing partial global batch is dropped, as ChatLearn does; the config validator
        makes ``sample_per_episode`` a multiple of the global batch, so none is lost there.
        """
        n = len(self.samples)
        order = torch.randperm(n, generator=generator).tolist() if generator else list(range(n))
        out = []
        for g in range(0, n - global_size + 1, global_size):
            idx = order[g:g + global_size]
            out.append([Batch.collate([self.samples[i] for i in idx[m:m + micro_size]])
                        for m in range(0, global_size, micro_size)])
        return out
