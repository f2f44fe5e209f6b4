"""DPO (offline, on preference records) and online DPO (pairs ranked by a reward).

Offline: the reference scores each record's chosen and rejected completion once per
episode, the actor takes DPO steps. Online: the policy samples n responses per prompt, the
reward scores them, the best and the worst of each prompt become a pair.
"""

from __future__ import annotations

from flowrl.config import FlowRLConfig
from flowrl.dsl.flow import flow
from flowrl.engines.engine import Engine
from flowrl.models.base import BaseModule


def offline_engine(reference: BaseModule, actor: BaseModule, *, config: FlowRLConfig) -> Engine:
    """The actor builds the dataset from prompt/chosen/rejected records; nothing samples."""

    @flow(name="rollout")
    def rollout(batch):
        return batch, reference.forward_step(batch)    # ref log-probs of chosen, rejected

    @flow(name="train")
    def train(batch):
        actor.train_step(batch)

    return Engine(rollout, train, name="dpo", config=config)


def online_engine(policy: BaseModule, reward: BaseModule, reference: BaseModule,
                  actor: BaseModule, *, config: FlowRLConfig) -> Engine:
    """Sample, score, pair best-vs-worst, DPO step, sync into the policy."""

    @flow(name="rollout")
    def rollout(batch):
        out = policy.forward_step(batch)
        score = reward.forward_step(out)
        pairs = actor.pair_step(out, score)             # best vs worst of each group
        return pairs, reference.forward_step(pairs)

    @flow(name="train")
    def train(batch):
        actor.train_step(batch)

    return Engine(rollout, train, sync={actor: policy}, name="online_dpo", config=config)
