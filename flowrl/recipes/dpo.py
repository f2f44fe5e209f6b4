"""DPO (offline, on preference records) and online DPO (pairs ranked by a reward).

Offline: the actor builds the dataset from prompt/chosen/rejected records and takes DPO
steps; its reference is a frozen copy of its initial weights (``DPOTrainer``), so nothing
runs in the rollout but the weightless ``DataFeed``. Online: the policy samples n responses
per prompt, the reward scores them, the reference gives their log-probs, and the actor pairs
the best with the worst of each prompt and takes a DPO step.
"""

from __future__ import annotations

from flowrl.config import FlowRLConfig
from flowrl.dsl.flow import flow
from flowrl.engines.engine import Engine
from flowrl.models.base import BaseModule


def offline_engine(feed: BaseModule, actor: BaseModule, *, config: FlowRLConfig) -> Engine:
    """The data batches go to the replay buffer as they are (``feed``: a ``DataFeed``); the
    actor trains on them."""

    @flow(name="rollout")
    def rollout(batch):
        return batch, feed.forward_step(batch)

    @flow(name="train")
    def train(batch):
        actor.train_step(batch)

    return Engine(rollout, train, name="dpo", config=config)


def online_engine(policy: BaseModule, reward: BaseModule, reference: BaseModule,
                  actor: BaseModule, *, config: FlowRLConfig) -> Engine:
    """Sample, score, DPO on best-vs-worst of each prompt, sync into the policy."""

    @flow(name="rollout")
    def rollout(batch):
        out = policy.forward_step(batch)
        return out, reward.forward_step(out), reference.forward_step(out)

    @flow(name="train")
    def train(batch):
        actor.train_step(batch)                 # pairs each prompt's candidates

    return Engine(rollout, train, sync={actor: policy}, name="online_dpo", config=config)
