"""``DataFeed``: the rollout of an algorithm that samples nothing (offline DPO, SFT).

A flow must call a module, and these algorithms' rollout has nothing to compute: each data
batch goes to the replay buffer as it is. ``DataFeed`` is that call: weightless, it adds no
keys and only counts the samples it hands on (``feed/samples``).
"""

from __future__ import annotations

from flowrl.models.base import BaseModule, outputs


class DataFeed(BaseModule):
    """Hands each data batch on unchanged (the flow returns the batch beside its output)."""

    @outputs()
    def forward_step(self, data: dict, iteration: int = 0) -> dict:
        rows = next((len(v) for v in data.values() if hasattr(v, "__len__")), 0)
        self.log("samples", float(rows), reduce="sum")
        return {}
