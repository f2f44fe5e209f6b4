"""Masked reductions and the sequence <-> token conversions every estimator and loss shares.

Conventions: ``mask`` is ``[B, T]``, non-zero for real response tokens (EOS included) and 0
for padding (right-padded). Values at padded positions are ignored even when NaN or inf
(``torch.where``, not multiplication: ``nan * 0 == nan``). Results are fp32 (fp64 stays fp64).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from flowrl.errors import AlgorithmError

#: How a per-token loss becomes one number (see :func:`aggregate`).
Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                      "seq-mean-token-sum-norm"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)


def float_dtype(t: Tensor) -> torch.dtype:
    """fp64 for fp64 input, fp32 otherwise (accumulation dtype)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def check_tokens(fn: str, mask: Tensor, **tensors: Tensor | None) -> Tensor:
    """Check that every given tensor is ``[B, T]`` like ``mask``; return ``mask != 0``."""
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        raise AlgorithmError(f"{fn}: mask must be a [B, T] tensor, got "
                             f"{tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__}")
    for name, t in tensors.items():
        if t is not None and (not isinstance(t, Tensor) or t.shape != mask.shape):
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise AlgorithmError(f"{fn}: {name} must have the mask's shape {tuple(mask.shape)}, "
                                 f"got {shape}")
    return mask != 0


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` where ``mask != 0`` (over ``dim``, or everything)."""
    z = torch.where(mask != 0, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return z.sum() if dim is None else z.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` where ``mask != 0``; 0 where nothing is selected."""
    n = (mask != 0).sum() if dim is None else (mask != 0).sum(dim)
    return masked_sum(x, mask, dim) / n.clamp_min(1).to(x.dtype)


def aggregate(per_token: Tensor, mask: Tensor, agg: str, max_length: int | None = None) -> Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar.

    * ``token-mean``: ``sum_{i,t} l_it / sum_{i,t} m_it`` (every token weighs the same; DAPO);
    * ``seq-mean-token-mean``: ``mean_i (sum_t l_it / |y_i|)`` (GRPO paper; empty rows skipped);
    * ``seq-mean-token-sum``: ``mean_i sum_t l_it``;
    * ``seq-mean-token-sum-norm``: ``sum_{i,t} l_it / (B * max_length)`` — a constant
      normaliser, so no length bias (Dr. GRPO); ``max_length`` is the generation budget.
    """
    if agg == "token-mean":
        return masked_mean(per_token, mask)
    rows = mask.shape[0]
    if agg == "seq-mean-token-mean":
        has = ((mask != 0).sum(1) > 0).to(per_token.dtype)
        return (masked_mean(per_token, mask, dim=1) * has).sum() / has.sum().clamp_min(1.0)
    if agg == "seq-mean-token-sum":
        return masked_sum(per_token, mask) / max(rows, 1)
    if agg == "seq-mean-token-sum-norm":
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise AlgorithmError(f"aggregation 'seq-mean-token-sum-norm' needs max_length, the "
                                 f"constant generation budget (a positive int), got {max_length!r}")
        return masked_sum(per_token, mask) / (max(rows, 1) * max_length)
    raise AlgorithmError(f"unknown loss aggregation {agg!r}; expected one of "
                         f"{', '.join(AGGREGATIONS)}")


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last non-zero of each row of a right-padded mask (0 for empty rows)."""
    t = torch.arange(mask.shape[1], device=mask.device)
    return ((mask != 0).long() * (t + 1)).argmax(dim=1)


def scores_to_tokens(scores: Tensor, mask: Tensor) -> Tensor:
    """``[B]`` sequence scores as ``[B, T]`` token rewards: the score on each row's last real
    token, 0 elsewhere (rows without tokens get nothing)."""
    m = mask != 0
    out = torch.zeros(mask.shape, dtype=float_dtype(scores), device=mask.device)
    has = m.any(1)
    rows = torch.arange(mask.shape[0], device=mask.device)[has]
    out[rows, last_token_index(mask)[has]] = scores.to(out.dtype)[has]
    return out


def sequence_scores(fn: str, rewards: Tensor, mask: Tensor) -> Tensor:
    """``[B]`` scores from ``[B]`` scores or ``[B, T]`` token rewards (summed over real tokens)."""
    check_tokens(fn, mask)
    if not isinstance(rewards, Tensor) or not rewards.is_floating_point():
        raise AlgorithmError(f"{fn}: rewards must be a floating tensor, got "
                             f"{getattr(rewards, 'dtype', type(rewards).__name__)}")
    if rewards.dim() == 1 and rewards.shape[0] == mask.shape[0]:
        return rewards.to(float_dtype(rewards))
    if rewards.shape == mask.shape:
        return masked_sum(rewards.to(float_dtype(rewards)), mask, dim=1)
    raise AlgorithmError(f"{fn}: rewards must be [B] sequence scores or [B, T] token rewards "
                         f"for a mask of shape {tuple(mask.shape)}, got {tuple(rewards.shape)}")


def token_rewards(fn: str, rewards: Tensor, mask: Tensor) -> Tensor:
    """``[B, T]`` token rewards from ``[B]`` scores (on the last token) or ``[B, T]`` rewards
    (zeroed on padding)."""
    if isinstance(rewards, Tensor) and rewards.dim() == 1:
        return scores_to_tokens(sequence_scores(fn, rewards, mask), mask)
    check_tokens(fn, mask, rewards=rewards)
    r = rewards.to(float_dtype(rewards))
    return torch.where(mask != 0, r, torch.zeros((), dtype=r.dtype, device=r.device))


def broadcast_tokens(per_sequence: Tensor, mask: Tensor) -> Tensor:
    """``[B]`` values on every real token of ``[B, T]``, 0 on padding."""
    v = per_sequence[:, None].expand(mask.shape)
    return torch.where(mask != 0, v, torch.zeros((), dtype=v.dtype, device=v.device))
