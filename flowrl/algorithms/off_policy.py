r"""Off-policy correction for stale samples (``runtime_args.max_staleness >= 1``).

Notation, per response token ``t`` of sample ``i`` (all ``[B, T]`` tensors, ``mask`` 1 on real
response tokens, 0 on padding; padded tokens never count):

* ``b``: *behaviour* log-probs, recorded at generation: the batch key ``"logprobs"`` the
  built-in policies already output (:data:`BEHAVIOUR_KEY`);
* ``v_i``: the version of the weights that generated sample ``i``, the int64 ``[B]`` batch key
  ``"weight_version"`` (:data:`VERSION_KEY`, added by the runtime); the trainer holds version
  ``V`` (episode ``e`` trains version ``e``). Sample ``i`` is **stale** when ``v_i < V``;
* ``p``: *proximal* log-probs, the trainer's weights just before this optimizer step
  (``"proximal_logprobs"``, :data:`PROXIMAL_KEY`, from the trainer's ``proximal_logprobs``
  method, a call the compiler adds to the train flow for ``correction: decoupled``);
* ``lp``: the log-probs under the weights being trained (with gradient);
* ``A``: advantages, ``eps`` the PPO clip, ``C`` the cap ``runtime_args.off_policy.is_cap``.

PPO's clipped surrogate of a ratio ``r`` is ``L(r) = max(-A r, -A clip(r, 1 - eps, 1 + eps))``.
On fresh samples every correction is the identity: ``L(r)`` with ``r = exp(lp - b)``, the
same operations as the synchronous loss, so ``max_staleness: 0`` stays bit-identical. On
stale samples:

* ``tis`` (truncated importance sampling, no extra forward pass): the importance weight of the
  token is ``w = exp(sg(lp) - b)`` (current over behaviour; ``sg``: no gradient); the loss is
  ``L(r~)`` with ``r~ = r * sg(min(1, C / r))``, i.e. the ratio truncated at ``C`` in value and
  gradient ``min(r, C) grad lp`` (not 0) where truncated. PPO's clip already bounds ``r`` for
  positive advantages; the cap bounds the one case clipping leaves unbounded, a negative
  advantage with a large ratio, which stale samples make common.
* ``decoupled`` (decoupled PPO, AReaL): ``L(exp(lp - p)) * w`` with the behaviour weight
  ``w = min(exp(p - b), C)`` (a constant): the trust region is centred on the proximal policy,
  the importance weight corrects proximal vs behaviour, truncated at ``C``.
* ``none``: ``L(exp(lp - b))`` as if fresh.

Statistics (over the real tokens of the stale samples; 0 when there are none):
``off_policy/is_weight_mean|max|min`` of the untruncated importance weight (``exp(sg(lp) -
b)`` for ``tis``, ``exp(p - b)`` for ``decoupled``) and ``off_policy/clipped_frac``, the
fraction of those tokens whose weight exceeds ``C``. They are reported only for batches that
hold stale samples (never at ``max_staleness: 0``), and not for ``none``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from flowrl.config.off_policy import OffPolicyArgs
from flowrl.errors import FlowRLError

Tensor = torch.Tensor

BEHAVIOUR_KEY = "logprobs"
VERSION_KEY = "weight_version"
PROXIMAL_KEY = "proximal_logprobs"
#: The metrics a corrected batch reports (``flowrl.algorithms.off_policy``).
METRIC_KEYS = ("off_policy/is_weight_mean", "off_policy/is_weight_max",
               "off_policy/is_weight_min", "off_policy/clipped_frac")


class OffPolicyError(FlowRLError, ValueError):
    """A batch cannot be corrected (missing key, sample newer than the trainer); the message
    names the key and the config field."""


@dataclass(frozen=True)
class PolicyRatio:
    """What a clipped policy loss needs for one batch: ``ratio`` ([B, T], with gradient) that
    the clip acts on, ``log_ratio`` (its untruncated log, for ``approx_kl``), an optional
    detached per-token ``weight`` on the clipped surrogate, and the correction's ``metrics``."""

    log_ratio: Tensor
    ratio: Tensor
    weight: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` where ``mask`` is 1 (0 when nothing is selected); the same operations as
    the built-in losses' ``masked_mean``, so fresh batches keep their bits."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def plain_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> PolicyRatio:
    """The uncorrected ratio ``exp((lp - old) * mask)`` (padding: ratio 1)."""
    log_ratio = (logprobs - old_logprobs) * mask
    return PolicyRatio(log_ratio, torch.exp(log_ratio))


def truncated_ratio(log_ratio: Tensor, cap: float) -> Tensor:
    """``exp(log_ratio - sg(max(0, log_ratio - log cap)))``, i.e. ``r * sg(min(1, cap / r))``:
    ``min(r, cap)`` in value, gradient ``min(r, cap) * grad log_ratio``; exactly ``exp(
    log_ratio)`` where ``r <= cap``, and finite where ``exp(log_ratio)`` would overflow."""
    excess = (log_ratio.detach() - math.log(cap)).clamp(min=0.0)
    return torch.exp(log_ratio - excess)


def is_weight_stats(weight: Tensor, mask: Tensor, cap: float) -> dict[str, Tensor]:
    """``off_policy/*`` statistics of untruncated importance weights over the tokens where
    ``mask`` is 1: mean, max, min and the fraction above ``cap`` (all 0 without tokens)."""
    with torch.no_grad():
        w, sel = weight.detach().float(), mask != 0
        if not bool(sel.any()):
            zero = torch.zeros((), device=w.device)
            return dict.fromkeys(METRIC_KEYS, zero)
        vals = w[sel]
        return {"off_policy/is_weight_mean": vals.mean(), "off_policy/is_weight_max": vals.max(),
                "off_policy/is_weight_min": vals.min(),
                "off_policy/clipped_frac": (vals > cap).float().mean()}


def _stale_tokens(mask: Tensor, rows: Tensor | None) -> Tensor:
    """``mask`` restricted to the rows being corrected (all rows when ``rows`` is None)."""
    return mask if rows is None else mask * rows[:, None].to(mask.dtype)


def tis_ratio(logprobs: Tensor, behaviour_logprobs: Tensor, mask: Tensor, cap: float,
              rows: Tensor | None = None) -> PolicyRatio:
    """Truncated importance sampling: the ratio ``exp(lp - b)`` truncated at ``cap`` (see
    :func:`truncated_ratio`) on the ``rows`` ([B] bool; default all) that are stale."""
    plain = plain_ratio(logprobs, behaviour_logprobs, mask)
    truncated = truncated_ratio(plain.log_ratio, cap)
    ratio = truncated if rows is None else torch.where(rows[:, None], truncated, plain.ratio)
    stats = is_weight_stats(plain.ratio, _stale_tokens(mask, rows), cap)
    return PolicyRatio(plain.log_ratio, ratio, None, stats)


def decoupled_ratio(logprobs: Tensor, proximal_logprobs: Tensor, behaviour_logprobs: Tensor,
                    mask: Tensor, cap: float, rows: Tensor | None = None) -> PolicyRatio:
    """Decoupled PPO on the stale ``rows`` ([B] bool; default all): ratio ``exp(lp - p)``,
    token weight ``min(exp(p - b), cap)``; fresh rows keep ``exp(lp - b)`` and weight 1."""
    prox = proximal_logprobs.detach()
    log_ratio = (logprobs - prox) * mask
    behav = torch.exp((prox - behaviour_logprobs.detach()) * mask)
    weight = torch.clamp(behav, max=cap)
    if rows is not None:
        fresh = plain_ratio(logprobs, behaviour_logprobs, mask).log_ratio
        log_ratio = torch.where(rows[:, None], log_ratio, fresh)
        weight = torch.where(rows[:, None], weight, torch.ones_like(weight))
    stats = is_weight_stats(behav, _stale_tokens(mask, rows), cap)
    return PolicyRatio(log_ratio, torch.exp(log_ratio), weight, stats)


def clipped_surrogate(ratio: Tensor, advantages: Tensor, clip_eps: float
                      ) -> tuple[Tensor, Tensor]:
    """Per-token ``max(-A r, -A clip(r, 1 - eps, 1 + eps))`` and where the clip won."""
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def surrogate_loss(pr: PolicyRatio, advantages: Tensor, mask: Tensor, clip_eps: float
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """Token-mean clipped surrogate of ``pr`` (negated for minimisation) with ``clipfrac``,
    ``approx_kl`` and the correction's metrics."""
    per_token, was_clipped = clipped_surrogate(pr.ratio, advantages, clip_eps)
    if pr.weight is not None:
        per_token = per_token * pr.weight
    loss = masked_mean(per_token, mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean(was_clipped.float(), mask),
                 "approx_kl": masked_mean(0.5 * pr.log_ratio.square(), mask), **pr.metrics}
    return loss, stats


def stale_rows(batch: Mapping[str, Any], current_version: int) -> Tensor | None:
    """``[B]`` bool, True for samples generated before ``current_version``; ``None`` when no
    sample is stale (or the batch carries no ``weight_version``: an on-policy batch)."""
    if VERSION_KEY not in batch:
        return None
    versions = batch[VERSION_KEY]
    if not isinstance(versions, Tensor) or versions.dim() != 1:
        raise OffPolicyError(f"batch key '{VERSION_KEY}' must be an int64 [B] tensor (one "
                             f"version per sample), got {type(versions).__name__}"
                             f"{tuple(versions.shape) if isinstance(versions, Tensor) else ''}")
    newest = int(versions.max()) if versions.numel() else current_version
    if newest > current_version:
        raise OffPolicyError(f"batch key '{VERSION_KEY}': a sample was generated by version "
                             f"{newest}, newer than the trainer's version {current_version}")
    rows = versions < current_version
    return rows if bool(rows.any()) else None


def policy_ratio(logprobs: Tensor, batch: Mapping[str, Any], mask: Tensor,
                 config: OffPolicyArgs, current_version: int) -> PolicyRatio:
    """The ratio (and weight) a clipped policy loss uses on ``batch``: the plain
    ``exp(lp - b)`` unless some samples are stale, then the correction of
    ``config.correction`` on those samples (see the module docstring)."""
    if BEHAVIOUR_KEY not in batch:
        raise OffPolicyError(f"batch has no '{BEHAVIOUR_KEY}' (the behaviour log-probs recorded "
                             f"at generation), which the policy loss needs")
    behaviour = batch[BEHAVIOUR_KEY]
    rows = stale_rows(batch, current_version)
    if rows is None or config.correction == "none":
        return plain_ratio(logprobs, behaviour, mask)
    if config.correction == "tis":
        return tis_ratio(logprobs, behaviour, mask, config.is_cap, rows)
    if PROXIMAL_KEY not in batch:
        raise OffPolicyError(
            f"batch has stale samples but no '{PROXIMAL_KEY}': runtime_args.off_policy."
            f"correction='decoupled' needs the trainer's proximal_logprobs call, which the "
            f"compiler adds to the train flow when runtime_args.max_staleness >= 1")
    return decoupled_ratio(logprobs, batch[PROXIMAL_KEY], behaviour, mask, config.is_cap, rows)


def correct_policy_loss(logprobs: Tensor, batch: Mapping[str, Any], advantages: Tensor,
                        mask: Tensor, clip_eps: float, config: OffPolicyArgs,
                        current_version: int) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped policy loss on ``batch``, corrected for its stale samples.

    For a ``train_step`` of your own: ``logprobs`` ([B, T], with gradient) are the response
    tokens' log-probs under the weights being trained; ``batch`` is the micro-batch (it holds
    ``"logprobs"``, ``"weight_version"`` and, for ``decoupled``, ``"proximal_logprobs"``);
    ``advantages`` are ``[B, T]`` or ``[B]`` (one per sequence); ``config`` is
    ``self.runtime_args.off_policy`` and ``current_version`` the trainer's
    :func:`trainer_version`. Returns the token-mean loss and ``clipfrac``, ``approx_kl`` and,
    for batches with stale samples, :data:`METRIC_KEYS`. Without stale samples the numbers
    are exactly the uncorrected loss's.
    """
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    pr = policy_ratio(logprobs, batch, mask, config, current_version)
    return surrogate_loss(pr, adv.to(logprobs.dtype), mask, clip_eps)


def trainer_version(module: Any, iteration: int, data: Any = None) -> int:
    """The weight version a trainer holds in train step ``iteration``: its episode ``e`` (the
    trainer's weights before episode ``e``'s updates are what the ``e``-th sync published).

    ``module.weight_version`` when the runtime recorded it. Otherwise derived from the
    0-based train-step counter, ``iteration // steps_per_episode`` with ``steps_per_episode =
    num_training_epoch * sample_per_episode / train_global_batch_size`` (``module.
    runtime_args``), and never below the newest ``weight_version`` in ``data`` (the step's
    micro-batches or batch): a trainer is never behind the weights that generated its
    samples. That keeps a synchronous run's batches fresh even when ``on_nonfinite:
    skip_batch`` dropped rollouts (fewer steps than the formula counts).
    """
    recorded = getattr(module, VERSION_KEY, None)  # set by the runtime on sync
    if recorded is not None:
        return int(recorded)
    a = module.runtime_args
    steps = a.num_training_epoch * (a.sample_per_episode // a.train_global_batch_size)
    parts = data if isinstance(data, list) else [data] if data is not None else []
    newest = [int(p[VERSION_KEY].max()) for p in parts
              if isinstance(p, Mapping) and isinstance(p.get(VERSION_KEY), Tensor)
              and p[VERSION_KEY].numel()]
    return max([iteration // max(steps, 1), *newest])
