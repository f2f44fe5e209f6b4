"""DPO: preference losses (sigmoid DPO, IPO), pair building, and the offline/online engines.

A preference batch carries two sequences per sample, ``chosen`` and ``rejected``, each as
``<side>_tokens`` (prompt + response ids), ``<side>_mask`` (attention) and
``<side>_loss_mask`` (1 on the response tokens whose log-probs count), plus optionally
``pair_weight`` (0 drops a pair, e.g. a tie in online DPO). :class:`PreferenceDataset` builds
this from prompt/chosen/rejected records; :func:`preference_pairs` from sampled groups.
"""

from __future__ import annotations

import torch

# the math lives in the algorithm library; these names stay importable from here
from flowrl.algorithms.preference import (PAIR_KEYS, SIDES, dpo_loss,  # noqa: F401
                                          preference_pairs, select_pairs, sequence_logprobs)
from flowrl.dsl.flow import flow
from flowrl.engines.engine import Engine
from flowrl.errors import ConfigError
from flowrl.models.base import BaseModule

Tensor = torch.Tensor


class DPOEngine(Engine):
    """Offline DPO over prompt/chosen/rejected records.

    The rollout flow has ``reference`` compute ``ref_chosen_logps``/``ref_rejected_logps`` of
    each dataset batch (once per sample per episode); the train flow updates ``policy`` with
    :func:`dpo_loss`. ``policy`` (the trainer) builds the dataset. Nothing is synced unless
    ``policy_inference`` (an inference copy used by other flows, e.g. an evaluator that
    samples) is given.
    """

    def __init__(self, policy: BaseModule, reference: BaseModule,
                 policy_inference: BaseModule | None = None) -> None:
        @flow(name="rollout")
        def rollout(batch):
            return batch, reference.forward_step(batch)

        @flow(name="train")
        def train(batch):
            policy.train_step(batch)

        sync = {policy: policy_inference} if policy_inference is not None else None
        super().__init__(rollout, train, sync=sync, name="dpo")


class OnlineDPOEngine(Engine):
    """Online DPO: ``policy`` samples ``num_inference_per_prompt`` (>= 2) responses per prompt,
    ``reward`` scores each group and returns its best/worst pair (see
    :func:`preference_pairs`), ``reference`` scores the pair, ``policy_trainer`` takes a DPO
    step and is synced into ``policy``. The replay buffer holds one pair per prompt, so
    ``train_global_batch_size`` counts pairs.
    """

    def __init__(self, policy: BaseModule, reward: BaseModule, reference: BaseModule,
                 policy_trainer: BaseModule) -> None:
        @flow(name="rollout")
        def rollout(batch):
            pairs = reward.forward_step(policy.forward_step(batch))
            return pairs, reference.forward_step(pairs)

        @flow(name="train")
        def train(batch):
            policy_trainer.train_step(batch)

        super().__init__(rollout, train, sync={policy_trainer: policy}, name="online_dpo")
        if self.config.runtime_args.num_inference_per_prompt < 2:
            raise ConfigError("OnlineDPOEngine needs runtime_args.num_inference_per_prompt >= 2 "
                              "(responses to rank per prompt)")
