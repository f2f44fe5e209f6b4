"""Advantage estimators, registered by name (:func:`register_advantage`).

Common signature (every estimator, built-in or user-registered)::

    fn(rewards, mask, *, group_size=1, <inputs>, <options>) -> AdvantageOutput

* ``rewards``: ``[B]`` sequence scores or ``[B, T]`` token rewards. Outcome estimators
  (GRPO, Dr. GRPO, RLOO, ReMax) sum token rewards into a score; token estimators (GAE,
  REINFORCE++) put a score on the row's last real token.
* ``mask``: ``[B, T]``, non-zero on real response tokens (EOS included), 0 on padding.
* ``group_size``: samples per prompt; the samples of one prompt are consecutive rows.
  Estimators that do not group accept and ignore it.
* ``attention_mask`` (GAE, REINFORCE++; optional): a multi-turn batch's
  ``response_attention_mask``. With it, ``mask`` is a loss mask with holes (the environment's
  tokens between turns) and the reverse scan runs over each row's policy tokens in order, as
  if the observations were not there; without it a 0 in ``mask`` ends the sequence.
  :func:`accepts_attention_mask` tells whether an estimator takes it.
* inputs without defaults (``values`` for GAE, ``baseline_rewards`` for ReMax) are listed
  by :func:`advantage_inputs`, so an engine knows which models it must run.

``AdvantageOutput.advantages`` is fp32 ``[B, T]`` (0 on padding, the same value on every
token for outcome estimators); ``returns`` are the critic's targets for GAE, the discounted
returns for REINFORCE++ and equal to the advantages for the critic-free estimators.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from flowrl import kernels
from flowrl.algorithms.masked import (broadcast_tokens, check_tokens, float_dtype,
                                      last_token_index, sequence_scores, token_rewards)
from flowrl.algorithms.registry import ADVANTAGES, check_options, register_advantage
from flowrl.errors import AlgorithmError

StdEstimator = Literal["population", "unbiased"]


class AdvantageOutput(NamedTuple):
    """``advantages`` and ``returns``, both ``[B, T]``."""

    advantages: Tensor
    returns: Tensor


def compute_advantages(name: str, rewards: Tensor, mask: Tensor, **kwargs: Any) -> AdvantageOutput:
    """Run the estimator registered as ``name``; an option it does not take is an
    :class:`~flowrl.errors.AlgorithmError` naming it (not a silent no-op)."""
    fn = ADVANTAGES.get(name)
    check_options(f"advantage estimator {name!r}", fn, kwargs)
    missing = sorted(advantage_inputs(name) - set(kwargs))
    if missing:
        raise AlgorithmError(f"advantage estimator {name!r} needs {', '.join(missing)}")
    return fn(rewards, mask, **kwargs)


def advantage_inputs(name: str) -> set[str]:
    """Keyword inputs the estimator ``name`` requires (no default), e.g. ``{"values"}``."""
    params = inspect.signature(ADVANTAGES.get(name)).parameters.values()
    return {p.name for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty}


def accepts_attention_mask(name: str) -> bool:
    """Whether the estimator ``name`` takes ``attention_mask`` (multi-turn batches)."""
    return "attention_mask" in inspect.signature(ADVANTAGES.get(name)).parameters


def _has_gaps(mask: Tensor) -> bool:
    """Whether some row has a 0 before its last non-zero (a multi-turn loss mask)."""
    before_last = torch.arange(mask.shape[1], device=mask.device)[None, :] < \
        last_token_index(mask)[:, None]
    return bool((before_last & (mask == 0)).any())


def _policy_index(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the positions of the non-zeros of ``mask`` first (in order), then the rest,
    cut to the widest row's count: ``(index [B, M], real [B, M])``."""
    keep = mask != 0
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    idx = order[:, :max(1, int(keep.sum(1).max()))]
    return idx, torch.gather(keep, 1, idx)


def _scan(fn: str, rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float,
          attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """:func:`flowrl.kernels.gae` over the tokens of ``mask``; with an ``attention_mask`` and
    a loss mask with holes, over each row's policy tokens compacted (0 back on the holes)."""
    if attention_mask is None or not _has_gaps(mask):
        return kernels.gae(rewards, values, mask, gamma, lam)
    check_tokens(fn, mask, attention_mask=attention_mask)
    if ((mask != 0) & (attention_mask == 0)).any():
        raise AlgorithmError(f"{fn}: the loss mask is non-zero where attention_mask is 0 (a "
                             f"policy token must be a real token)")
    idx, real = _policy_index(mask)
    m = real.to(rewards.dtype)
    adv, ret = kernels.gae(torch.gather(rewards, 1, idx) * m, torch.gather(values, 1, idx) * m,
                           m, gamma, lam)

    def back(x: Tensor) -> Tensor:
        return torch.zeros_like(rewards).scatter(1, idx, x.to(rewards.dtype) * m)

    return back(adv), back(ret)


def _groups(fn: str, scores: Tensor, group_size: int) -> Tensor:
    """``[B]`` scores as ``[B / group_size, group_size]``."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise AlgorithmError(f"{fn}: group_size must be a positive int, got {group_size!r}")
    if scores.shape[0] % group_size:
        raise AlgorithmError(f"{fn}: the batch has {scores.shape[0]} samples, not a multiple "
                             f"of group_size={group_size} (a group's samples are consecutive)")
    return scores.reshape(-1, group_size)


def _outcome(per_sequence: Tensor, mask: Tensor) -> AdvantageOutput:
    adv = broadcast_tokens(per_sequence, mask)
    return AdvantageOutput(adv, adv.clone())


@register_advantage("gae")
def gae(rewards: Tensor, mask: Tensor, *, values: Tensor, group_size: int = 1,
        gamma: float = 1.0, lam: float = 0.95, whiten: bool = False,
        attention_mask: Tensor | None = None) -> AdvantageOutput:
    """Generalised advantage estimation (Schulman et al., 2016) via :func:`flowrl.kernels.gae`.

    ``delta_t = r_t + gamma V_{t+1} - V_t``, ``A_t = delta_t + gamma lam A_{t+1}`` (``V`` and
    ``A`` are 0 after the last real token); ``returns = A + V``. ``whiten=True`` whitens the
    advantages over the batch's real tokens (not the returns). With ``attention_mask`` (a
    multi-turn batch) ``t + 1`` is the next *policy* token: a later turn's reward reaches the
    earlier turns across the observations between them (0 on the observations).
    """
    fn = "advantage estimator 'gae'"
    check_tokens(fn, mask, values=values)
    r = token_rewards(fn, rewards, mask)
    adv, ret = _scan(fn, r, values.to(r.dtype), mask, gamma, lam, attention_mask)
    if whiten:
        adv = kernels.whiten(adv, mask)
    return AdvantageOutput(adv, ret)


def group_normalize(scores: Tensor, group_size: int, *, std: StdEstimator = "population",
                    scale: bool = True, eps: float = 1e-6) -> Tensor:
    """``(s_i - mean_g) / (std_g + eps)`` per group of ``group_size`` consecutive scores.

    ``std="population"`` divides the variance by ``G`` (DeepSeekMath, veRL; defined for
    ``G = 1``), ``"unbiased"`` by ``G - 1`` (TRL, ``torch.std``'s default). ``scale=False``
    gives ``s_i - mean_g`` (Dr. GRPO). A group whose scores are all equal gets 0.
    """
    g = _groups("group_normalize", scores.to(float_dtype(scores)), group_size)
    centered = g - g.mean(dim=1, keepdim=True)
    if scale:
        if std not in ("population", "unbiased"):
            raise AlgorithmError(f"group_normalize: std must be 'population' or 'unbiased', "
                                 f"got {std!r}")
        if std == "unbiased" and group_size < 2:
            raise AlgorithmError("group_normalize: std='unbiased' needs group_size >= 2, got "
                                 f"group_size={group_size}")
        denom = g.std(dim=1, correction=1 if std == "unbiased" else 0, keepdim=True) + eps
        # an all-equal group is 0 / 0 with eps = 0: its advantage is 0, not NaN
        centered = centered / torch.where(denom > 0, denom, torch.ones_like(denom))
    return centered.reshape(-1)


@register_advantage("grpo")
def grpo(rewards: Tensor, mask: Tensor, *, group_size: int = 1, std: StdEstimator = "population",
         scale: bool = True, eps: float = 1e-6) -> AdvantageOutput:
    """GRPO (Shao et al., 2024): ``A_i = (s_i - mean_g) / (std_g + eps)`` on every token of
    sample ``i`` (see :func:`group_normalize` for ``std`` and ``scale``)."""
    s = sequence_scores("advantage estimator 'grpo'", rewards, mask)
    return _outcome(group_normalize(s, group_size, std=std, scale=scale, eps=eps), mask)


@register_advantage("dr_grpo")
def dr_grpo(rewards: Tensor, mask: Tensor, *, group_size: int = 1) -> AdvantageOutput:
    """Dr. GRPO (Liu et al., 2025): ``A_i = s_i - mean_g`` — no std division. Pair it with
    the ``seq-mean-token-sum-norm`` loss aggregation (no length normalisation)."""
    s = sequence_scores("advantage estimator 'dr_grpo'", rewards, mask)
    return _outcome(group_normalize(s, group_size, scale=False), mask)


@register_advantage("rloo")
def rloo(rewards: Tensor, mask: Tensor, *, group_size: int = 1) -> AdvantageOutput:
    """RLOO (Ahmadian et al., 2024): ``A_i = s_i - (sum_g s - s_i) / (G - 1)``, the baseline
    being the mean of the *other* samples of the prompt; equals ``G/(G-1) (s_i - mean_g)``."""
    fn = "advantage estimator 'rloo'"
    if isinstance(group_size, int) and not isinstance(group_size, bool) and group_size < 2:
        raise AlgorithmError(f"{fn}: group_size must be >= 2 (a leave-one-out baseline needs "
                             f"another sample), got {group_size}")
    g = _groups(fn, sequence_scores(fn, rewards, mask), group_size)
    baseline = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)
    return _outcome((g - baseline).reshape(-1), mask)


@register_advantage("reinforce_pp")
def reinforce_pp(rewards: Tensor, mask: Tensor, *, group_size: int = 1, gamma: float = 1.0,
                 kl: Tensor | None = None, kl_coef: float = 0.0, eps: float = 1e-8,
                 attention_mask: Tensor | None = None) -> AdvantageOutput:
    """REINFORCE++ (Hu, 2025): discounted returns of the KL-penalised token rewards, whitened
    over every real token of the batch.

    ``r_t = score 1[t = last] - kl_coef kl_t``; ``G_t = sum_{k >= t} gamma^(k-t) r_k``;
    ``A_t = (G_t - mean(G)) / sqrt(var(G) + eps)`` (population variance over the batch's
    real tokens). ``kl`` is a per-token estimate (:func:`flowrl.algorithms.kl.kl_estimate`);
    leave it ``None`` when the rewards already carry the penalty (``kl_in_reward``).
    ``attention_mask``: as for :func:`gae`, the returns run across a multi-turn response's
    observations.
    """
    fn = "advantage estimator 'reinforce_pp'"
    r = token_rewards(fn, rewards, mask)
    if kl is not None:
        check_tokens(fn, mask, kl=kl)
        r = r - kl_coef * torch.where(mask != 0, kl.to(r.dtype), torch.zeros_like(r))
    # discounted return = GAE with V = 0 and lambda = 1 (one reverse scan, kernel-dispatched)
    _, returns = _scan(fn, r, torch.zeros_like(r), mask, gamma, 1.0, attention_mask)
    return AdvantageOutput(kernels.whiten(returns, mask, eps=eps), returns)


@register_advantage("remax")
def remax(rewards: Tensor, mask: Tensor, *, baseline_rewards: Tensor,
          group_size: int = 1) -> AdvantageOutput:
    """ReMax (Li et al., 2023): ``A_i = s_i - b_i``, ``b_i`` the reward of the greedy
    response to sample ``i``'s prompt (``baseline_rewards``, ``[B]``, repeated per sample)."""
    fn = "advantage estimator 'remax'"
    s = sequence_scores(fn, rewards, mask)
    if not isinstance(baseline_rewards, Tensor) or baseline_rewards.shape != s.shape:
        shape = getattr(baseline_rewards, "shape", type(baseline_rewards).__name__)
        raise AlgorithmError(f"{fn}: baseline_rewards must be [B] = {tuple(s.shape)}, got "
                             f"{tuple(shape) if isinstance(shape, torch.Size) else shape}")
    return _outcome(s - baseline_rewards.to(s.dtype), mask)
