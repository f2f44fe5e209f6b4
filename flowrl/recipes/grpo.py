"""GRPO and the algorithms that share its flow: dapo, dr_grpo, gspo, rloo, reinforce_pp.

They differ only in ``algorithm:`` settings (advantage estimator, policy loss, KL), which the
``advantage`` and ``actor`` modules read; the flow is the same. Copy it to write your own:
every argument is a module (``flowrl.models.builtin`` or one of yours) named by its role.
"""

from __future__ import annotations

from flowrl.config import FlowRLConfig
from flowrl.dsl.flow import flow
from flowrl.engines.engine import Engine
from flowrl.models.base import BaseModule


def engine(policy: BaseModule, reward: BaseModule | None, advantage: BaseModule,
           actor: BaseModule,
           reference: BaseModule | None = None, *, config: FlowRLConfig) -> Engine:
    """Sample n responses per prompt, score them, turn scores into advantages, train.

    ``reference`` is ``None`` when ``algorithm.kl.coef`` is 0 (no KL term, nothing to run);
    ``reward`` is ``None`` when the policy scores its own samples (an agent's environment).
    """

    @flow(name="rollout")
    def rollout(batch):
        out = policy.forward_step(batch)          # responses + behaviour log-probs
        if reward is None:                        # an agent: the episodes carry their score
            if reference is None:
                return out, advantage.forward_step(out)
            ref = reference.forward_step(out)
            return out, ref, advantage.forward_step(out, ref)
        score = reward.forward_step(out)          # score [B]
        if reference is None:                     # decided when tracing, not per batch
            return out, score, advantage.forward_step(out, score)
        ref = reference.forward_step(out)         # ref_logprobs for the KL term
        return out, ref, score, advantage.forward_step(out, ref, score)

    @flow(name="train")
    def train(batch):
        actor.train_step(batch)

    return Engine(rollout, train, sync={actor: policy}, name="grpo", config=config)
