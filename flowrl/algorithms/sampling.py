"""DAPO's dynamic sampling and overlong reward shaping (Yu et al., 2025).

**Dynamic sampling.** A group (the ``group_size`` consecutive samples of one prompt) whose
rewards are all equal has zero group-normalised advantage and trains nothing; DAPO drops
such groups (:func:`varying_groups`, :func:`filter_groups`) and keeps generating until a
batch holds ``target_groups`` useful groups (:class:`GroupRefill`). Extra groups of the last
generation batch are dropped, as in DAPO.

**Overlong penalty.** With ``L = max_length`` and a buffer ``L_b``, a response of length
``|y|`` gets ``0`` if ``|y| <= L - L_b``, ``((L - L_b) - |y|) / L_b`` inside the buffer and
``-1`` beyond ``L``, times ``penalty_factor`` (:func:`overlong_penalty`).

A batch is a mapping ``key -> per-sample values`` (tensors or arrays with one row per
sample, lists with one item per sample); other values (numbers, strings, dicts, 0-d
tensors) are batch-level and carried unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowrl.errors import AlgorithmError


def varying_groups(scores: Tensor, group_size: int) -> Tensor:
    """``[B / group_size]`` bool: True for groups whose scores are not all equal."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise AlgorithmError(f"dynamic sampling: group_size must be a positive int, got {group_size!r}")
    if scores.dim() != 1 or scores.shape[0] % group_size:
        raise AlgorithmError(f"dynamic sampling: scores must be [B] with B a multiple of "
                             f"group_size={group_size}, got shape {tuple(scores.shape)}")
    g = scores.reshape(-1, group_size)
    return g.amax(dim=1) > g.amin(dim=1)


def _per_sample(key: str, value: Any, n: int) -> bool:
    """Whether ``value`` has one row per sample (``n`` of them); wrong lengths are errors."""
    if isinstance(value, (Tensor, np.ndarray)):
        if value.ndim == 0:
            return False
        rows = value.shape[0]
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        rows = len(value)
    else:
        return False
    if rows != n:
        raise AlgorithmError(f"dynamic sampling: batch key {key!r} has {rows} rows but the "
                             f"scores have {n} samples")
    return True


def select_rows(batch: Mapping[str, Any], index: Tensor, n: int) -> dict[str, Any]:
    """The samples at ``index`` (1-D long) of a batch of ``n`` samples."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if not _per_sample(k, v, n):
            out[k] = v
        elif isinstance(v, Tensor):
            out[k] = v[index.to(v.device)]
        elif isinstance(v, np.ndarray):
            out[k] = v[index.cpu().numpy()]
        else:
            out[k] = [v[i] for i in index.tolist()]
    return out


def filter_groups(batch: Mapping[str, Any], scores: Tensor,
                  group_size: int) -> tuple[dict[str, Any], int]:
    """Keep only the groups whose scores vary; returns ``(batch, kept_groups)``."""
    keep = varying_groups(scores, group_size)
    rows = torch.nonzero(keep.repeat_interleave(group_size)).reshape(-1)
    return select_rows(batch, rows, scores.shape[0]), int(keep.sum())


def _pad_cat(key: str, parts: list[Tensor]) -> Tensor:
    """Concatenate on dim 0, right-padding later dims with 0 (generation lengths differ)."""
    shape = [max(p.shape[d] for p in parts) for d in range(1, parts[0].dim())]
    padded = []
    for p in parts:
        if p.dim() != parts[0].dim():
            raise AlgorithmError(f"dynamic sampling: batch key {key!r} changes its number of "
                                 f"dims between generation batches")
        pad: list[int] = []
        for d in reversed(range(1, p.dim())):
            pad += [0, shape[d - 1] - p.shape[d]]
        padded.append(torch.nn.functional.pad(p, pad) if any(pad) else p)
    return torch.cat(padded)


def concat_batches(batches: list[dict[str, Any]], n_rows: list[int]) -> dict[str, Any]:
    """Concatenate batches sample-wise; batch-level values come from the first batch."""
    out: dict[str, Any] = {}
    for k, v in batches[0].items():
        if not _per_sample(k, v, n_rows[0]):
            out[k] = v
            continue
        parts = [b[k] for b in batches]
        if isinstance(v, Tensor):
            out[k] = _pad_cat(k, parts)
        elif isinstance(v, np.ndarray):
            out[k] = np.concatenate(parts)
        else:
            out[k] = [x for p in parts for x in p]
    return out


class GroupRefill:
    """Accumulate groups with varying rewards over generation batches until ``target_groups``.

    ``add(batch, scores)`` after each generation batch; when :attr:`ready`, ``take()`` returns
    exactly ``target_groups * group_size`` samples (the earliest kept ones) and starts over.
    More than ``max_batches`` generation batches for one ``take`` is an error (the prompts
    are too easy or too hard for the policy: every group is all-correct or all-wrong).
    """

    def __init__(self, target_groups: int, group_size: int, max_batches: int | None = None) -> None:
        if target_groups < 1 or (max_batches is not None and max_batches < 1):
            raise AlgorithmError(f"GroupRefill: target_groups and max_batches must be >= 1, got "
                                 f"target_groups={target_groups}, max_batches={max_batches}")
        self.target_groups, self.group_size, self.max_batches = target_groups, group_size, max_batches
        self._parts: list[dict[str, Any]] = []
        self._rows: list[int] = []
        self.batches = self.groups_seen = self.groups_kept = 0

    @property
    def kept(self) -> int:
        """Groups accumulated so far (towards ``target_groups``)."""
        return sum(self._rows) // self.group_size

    @property
    def ready(self) -> bool:
        return self.kept >= self.target_groups

    def add(self, batch: Mapping[str, Any], scores: Tensor) -> int:
        """Filter one generation batch and keep its varying groups; returns how many."""
        if self.max_batches is not None and self.batches >= self.max_batches and not self.ready:
            raise AlgorithmError(
                f"dynamic sampling: {self.batches} generation batches (max_batches="
                f"{self.max_batches}) gave only {self.kept} of {self.target_groups} groups whose "
                f"rewards vary; raise max_batches or use prompts of mixed difficulty")
        kept_batch, kept = filter_groups(batch, scores, self.group_size)
        self.batches += 1
        self.groups_seen += scores.shape[0] // self.group_size
        self.groups_kept += kept
        if kept:
            self._parts.append(kept_batch)
            self._rows.append(kept * self.group_size)
        return kept

    def take(self) -> dict[str, Any]:
        """The first ``target_groups`` kept groups as one batch; resets the accumulator."""
        if not self.ready:
            raise AlgorithmError(f"GroupRefill.take: only {self.kept} of {self.target_groups} "
                                 f"groups collected; add more generation batches first")
        whole = concat_batches(self._parts, self._rows)
        n = self.target_groups * self.group_size
        out = select_rows(whole, torch.arange(n), sum(self._rows))
        self._parts, self._rows = [], []
        return out

    def metrics(self) -> dict[str, float]:
        """Counters since construction: generation batches, groups seen / kept, kept share."""
        return {"dynamic_sampling/gen_batches": float(self.batches),
                "dynamic_sampling/groups_seen": float(self.groups_seen),
                "dynamic_sampling/groups_kept": float(self.groups_kept),
                "dynamic_sampling/kept_fraction": self.groups_kept / max(self.groups_seen, 1)}


def overlong_penalty(lengths: Tensor, *, max_length: int, buffer: int,
                     penalty_factor: float = 1.0) -> Tensor:
    """DAPO's soft overlong punishment per response (see the module docstring); fp32 ``[B]``."""
    if not 0 < buffer <= max_length:
        raise AlgorithmError(f"overlong_penalty: need 0 < buffer <= max_length, got "
                             f"buffer={buffer}, max_length={max_length}")
    start = max_length - buffer
    n = lengths.to(torch.float32)
    inside = (start - n) / buffer
    out = torch.where(n <= start, torch.zeros_like(n), inside)
    return penalty_factor * torch.where(n > max_length, torch.full_like(n, -1.0), out)


def apply_overlong_penalty(scores: Tensor, mask: Tensor, *, max_length: int, buffer: int,
                           penalty_factor: float = 1.0) -> Tensor:
    """``scores + overlong_penalty(|y|)`` with ``|y|`` the number of real tokens per row."""
    lengths = (mask != 0).sum(1)
    return scores.float() + overlong_penalty(lengths, max_length=max_length, buffer=buffer,
                                             penalty_factor=penalty_factor)
