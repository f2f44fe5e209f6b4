"""``CriticTrainer``: PPO's value-function trainer (a value head on the HF model), on the hf or
DeepSpeed backend.

Per micro-batch, with ``V`` the values under the weights being trained, ``V_old`` the rollout's
``values`` (the Critic's forward_step) and ``R`` the ``returns`` (the Advantage module, GAE)::

    loss = 0.5 * token-mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))

(``args.clip_eps``; ``null`` drops the clipped term). Metrics: ``value_loss``,
``vf_clipfrac``, ``values``, ``returns``, ``grad_norm``, ``lr``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from flowrl.algorithms import masked_mean
from flowrl.errors import AlgorithmError
from flowrl.models.builtin.trainer_backends import (BackendArgs, HFBackend, full_sequence,
                                                    hf_args, new_trainer)

Tensor = torch.Tensor
CRITIC_BACKENDS = ("hf", "deepspeed")
#: batch key -> what produces it
CRITIC_KEYS = {"prompt": "the Policy's forward_step", "prompt_mask": "the Policy's forward_step",
               "response": "the Policy's forward_step",
               "response_mask": "the Policy's forward_step",
               "values": "the Critic's forward_step",
               "returns": "the Advantage module (estimator 'gae')"}


class CriticOptions(BackendArgs):
    """``models.<name>.args`` of a :class:`CriticTrainer` (joined with its backend's)."""

    backend: Literal["hf", "deepspeed"] = "hf"
    head: Literal["value"] = "value"  # a scalar head on the base model (HFValueModel)
    clip_eps: float | None = 0.2


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                       clip_eps: float | None = 0.2) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped value loss (see the module docstring), token mean over ``mask``."""
    err = (values - returns).square()
    if clip_eps is None:
        per_token, clipfrac = err, torch.zeros((), device=values.device)
    else:
        clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        clipped_err = (clipped - returns).square()
        per_token = torch.maximum(err, clipped_err)
        with torch.no_grad():
            clipfrac = masked_mean((err < clipped_err).to(values.dtype), mask)
    loss = 0.5 * masked_mean(per_token, mask)
    return loss, {"value_loss": loss.detach(), "vf_clipfrac": clipfrac}


class CriticLoss:
    """The value loss of :class:`CriticTrainer`, on any trainer backend."""

    def micro_batch_loss(self, model: Any, mb: dict) -> tuple[Tensor, dict]:
        """Loss and stats of one micro-batch through ``model``."""
        for key, source in CRITIC_KEYS.items():
            if key not in mb:
                raise AlgorithmError(f"{self.name}: the value loss needs batch key {key!r}, "
                                     f"produced by {source}; the micro-batch has "
                                     f"{', '.join(sorted(mb))}")
        tokens, attn, p = full_sequence(mb)
        v = self.token_values(model, tokens, attn, p).float()
        mask = mb["response_mask"].to(v.device).float()
        old, ret = mb["values"].to(v.device).float(), mb["returns"].to(v.device).float()
        loss, stats = clipped_value_loss(v, old, ret, mask, self.typed_args.clip_eps)
        with torch.no_grad():
            stats.update(values=masked_mean(v.detach(), mask), returns=masked_mean(ret, mask))
        return loss, stats

    def train_step(self, data: list[dict], iteration: int) -> dict[str, float]:
        """One optimizer step over the micro-batches ``data``."""
        return self.run_micro_batches(data, self.micro_batch_loss)


class CriticTrainer(CriticLoss, HFBackend):
    """The critic trainer; ``CriticTrainer(name)`` gives the DeepSpeed one when
    ``models.<name>.args.backend: deepspeed`` (not a subclass; it shares :class:`CriticLoss`)."""

    Args = hf_args(CriticOptions)

    def __new__(cls, *args: Any, **kwargs: Any):
        return new_trainer(cls, CriticTrainer, CriticLoss, CriticOptions, CRITIC_BACKENDS,
                           "critic trainer", args, kwargs)
