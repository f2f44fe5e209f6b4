"""SFT: supervised fine-tuning on prompt/completion records (no sampling, no reward).

There is nothing to generate, so the rollout flow hands each data batch to the replay
buffer as it is (through a weightless ``DataFeed``); the actor builds the dataset
(``build_dataset``) and trains on it.
"""

from __future__ import annotations

from flowrl.config import FlowRLConfig
from flowrl.dsl.flow import flow
from flowrl.engines.engine import Engine
from flowrl.models.base import BaseModule


def engine(feed: BaseModule, actor: BaseModule, *, config: FlowRLConfig) -> Engine:
    """Negative log-likelihood of the completion tokens; ``feed`` is a ``DataFeed``."""

    @flow(name="rollout")
    def rollout(batch):
        return batch, feed.forward_step(batch)     # the data batch, as it is

    @flow(name="train")
    def train(batch):
        actor.train_step(batch)

    return Engine(rollout, train, name="sft", config=config)
