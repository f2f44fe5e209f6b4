"""Preference optimisation math as pure tensor functions: DPO / IPO losses (registered by
``loss_type``), sequence log-probs, and online DPO's pair selection (the best vs the worst
of each group).

A preference batch carries two sequences per sample, ``chosen`` and ``rejected``, each as
``<side>_tokens`` (prompt + response ids), ``<side>_mask`` (attention) and
``<side>_loss_mask`` (1 on the response tokens whose log-probs count), plus optionally
``pair_weight`` (0 drops a pair, e.g. a tie in online DPO).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from flowrl import kernels
from flowrl.algorithms.registry import Registry
from flowrl.errors import AlgorithmError

SIDES = ("chosen", "rejected")
#: keys of a :func:`preference_pairs` batch (declare them with ``@outputs(*PAIR_KEYS)``)
PAIR_KEYS = ("pair_weight",) + tuple(f"{side}_{k}" for side in SIDES
                                     for k in ("tokens", "mask", "loss_mask", "score"))


def sequence_logprobs(logits: Tensor, tokens: Tensor, loss_mask: Tensor, average: bool = False,
                      temperature: float = 1.0) -> Tensor:
    """Per-sequence log-prob ``[B]`` of the tokens where ``loss_mask`` is 1.

    ``logits [B, T, V]`` come from running the model on ``tokens [B, T]``: position ``t``
    predicts token ``t + 1``. ``average``: divide by the number of counted tokens (IPO).
    """
    lp = kernels.token_logprobs(logits[:, :-1], tokens[:, 1:], temperature=temperature)
    mask = loss_mask[:, 1:].to(lp.dtype)
    total = (lp * mask).sum(-1)
    return total / mask.sum(-1).clamp_min(1.0) if average else total


#: Per-pair preference losses by ``loss_type``: ``fn(h, beta, label_smoothing) -> [B]`` with
#: ``h = (pi_c - pi_r) - (ref_c - ref_r)``; add one with :func:`register_preference_loss`.
PREFERENCE_LOSSES: Registry = Registry("DPO loss_type")


def register_preference_loss(name: str, *, replace: bool = False) -> Callable:
    """Register a per-pair preference loss under ``name`` (a ``loss_type`` of
    :func:`dpo_loss` and the DPO trainer)."""
    return PREFERENCE_LOSSES.register(name, replace=replace)


@register_preference_loss("sigmoid")
def sigmoid_loss(h: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """DPO: ``-(1-e) log sigmoid(beta h) - e log sigmoid(-beta h)`` (``e``: label smoothing,
    conservative DPO)."""
    return -(1.0 - label_smoothing) * F.logsigmoid(beta * h) \
        - label_smoothing * F.logsigmoid(-beta * h)


@register_preference_loss("ipo")
def ipo_loss(h: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """IPO: ``(h - 1 / (2 beta))^2`` (no label smoothing; use length-averaged log-probs)."""
    return (h - 1.0 / (2.0 * beta)).square()


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor,
             ref_rejected: Tensor, beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0, weights: Tensor | None = None,
             ) -> tuple[Tensor, dict[str, Tensor]]:
    """Preference loss from sequence log-probs ``[B]`` of the policy and the reference.

    With ``h = (pi_c - pi_r) - (ref_c - ref_r)``:

    * ``"sigmoid"`` (DPO, Rafailov et al. 2023): ``-log sigmoid(beta h)``; with
      ``label_smoothing = e`` (conservative DPO) ``-(1-e) log sigmoid(beta h) - e log
      sigmoid(-beta h)``.
    * ``"ipo"`` (Azar et al. 2023): ``(h - 1 / (2 beta))^2``; use length-averaged log-probs;
    * any other ``loss_type`` registered in :data:`PREFERENCE_LOSSES`.

    ``weights [B]`` (e.g. 0 for tied pairs) make the loss a weighted mean. Stats: the
    implicit rewards ``beta (pi - ref)`` of each side, their ``margin`` and ``accuracy``
    (fraction of pairs where chosen's reward is higher).
    """
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    losses = PREFERENCE_LOSSES.get(loss_type)(h, beta, label_smoothing)
    w = torch.ones_like(losses) if weights is None else weights.to(losses.dtype)
    denom = w.sum().clamp_min(1e-8)
    loss = (losses * w).sum() / denom
    with torch.no_grad():
        chosen = beta * (policy_chosen - ref_chosen)
        rejected = beta * (policy_rejected - ref_rejected)
        stats = {"chosen_reward": (chosen * w).sum() / denom,
                 "rejected_reward": (rejected * w).sum() / denom,
                 "margin": ((chosen - rejected) * w).sum() / denom,
                 "accuracy": ((chosen > rejected).to(w.dtype) * w).sum() / denom}
    return loss, stats


def select_pairs(scores: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per group of ``group_size`` consecutive scores: the best (chosen) and worst (rejected).

    Returns flat indices into ``scores`` and a 0/1 ``valid`` weight per group (0 when every
    sample of the group scored the same: such a pair carries no preference). Ties pick the
    first sample.
    """
    if scores.dim() != 1 or group_size < 2 or scores.shape[0] % group_size:
        raise AlgorithmError(f"select_pairs needs 1-D scores in groups of group_size >= 2; got "
                             f"shape {tuple(scores.shape)} with group_size={group_size}")
    g = scores.view(-1, group_size)
    base = torch.arange(g.shape[0], device=scores.device) * group_size
    chosen, rejected = base + g.argmax(1), base + g.argmin(1)
    valid = (g.max(1).values > g.min(1).values).float()
    return chosen, rejected, valid


def preference_pairs(data: dict, scores: Tensor, group_size: int) -> dict[str, Tensor]:
    """Online DPO: the best and worst response of each prompt's group as a preference batch.

    ``data`` holds sampled ``prompt``/``prompt_mask`` (left-padded) and
    ``response``/``response_mask`` (right-padded), with the ``group_size`` samples of each
    prompt consecutive; the result has the keys of a preference batch plus ``pair_weight``
    and the pair's scores (``chosen_score``, ``rejected_score``).
    """
    chosen, rejected, valid = select_pairs(scores, group_size)
    tokens = torch.cat([data["prompt"], data["response"]], 1)
    mask = torch.cat([data["prompt_mask"], data["response_mask"]], 1)
    loss_mask = torch.cat([torch.zeros_like(data["prompt_mask"]), data["response_mask"]], 1)
    out = {"pair_weight": valid}
    for side, idx in zip(SIDES, (chosen, rejected)):
        out[f"{side}_tokens"] = tokens[idx]
        out[f"{side}_mask"] = mask[idx]
        out[f"{side}_loss_mask"] = loss_mask[idx]
        out[f"{side}_score"] = scores[idx].float()
    return out
