"""The one batch type: :class:`Batch`, a dict of key -> per-sample or batch-level values.

Everything that cuts or joins batches goes through it: merging producers' outputs
(:meth:`Batch.merge`), the replay buffer's per-sample split and collation
(:meth:`Batch.samples`, :meth:`Batch.collate`), the episode loop's GRPO expansion
(:meth:`Batch.repeat_interleave`) and the data-parallel split and gather of the Ray runtime
(:meth:`Batch.take_shard`, :meth:`Batch.concat`). One rule decides what is per-sample
(:func:`as_rows`): tensors and arrays with a dimension, other array-likes, lists, tuples and
other sequences except strings; every other value is batch-level and is carried unchanged.

``Batch`` subclasses ``dict`` so modules still receive plain-looking dicts and Ray pickles it
as one; ``len(batch)`` stays the number of keys (user code may rely on dict semantics), the
number of samples is :attr:`Batch.size`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from flowrl.errors import BatchError, KeyCollisionError


def as_rows(value: Any) -> torch.Tensor | np.ndarray | Sequence | None:
    """``value`` as something with one row per sample, or ``None`` for a batch-level value.

    Per-sample: tensors and numpy arrays with a dimension, any other array-like (anything with
    ``__array__``: pandas, JAX, ...; converted with ``np.asarray``), lists, tuples and other
    sequences except ``str``/``bytes``. Everything else (numbers, strings, dicts, 0-d arrays)
    is batch-level.
    """
    if isinstance(value, torch.Tensor):
        return value if value.dim() > 0 else None
    if not isinstance(value, np.ndarray) and hasattr(value, "__array__"):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        return value if value.ndim > 0 else None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return value
    return None


def _bounds(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous near-equal ranges, the first ``total % parts`` one longer (as
    ``torch.tensor_split`` and ``np.array_split`` cut), so every key is cut alike."""
    size, extra = divmod(total, parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + size + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


class Batch(dict):
    """A batch: key -> per-sample values (one row per sample) or batch-level values."""

    @property
    def size(self) -> int:
        """Number of samples (length of the first per-sample value)."""
        for v in self.values():
            rows = as_rows(v)
            if rows is not None:
                return len(rows)
        raise BatchError(f"cannot tell the batch size of a batch with keys {sorted(self)}: none "
                         f"holds a tensor, array or list with one row per sample")

    def _rows(self) -> dict[str, Any]:
        """key -> rows (``None`` for batch-level values), every per-sample key checked to
        have :attr:`size` rows."""
        n = self.size
        out = {}
        for k, v in self.items():
            rows = as_rows(v)
            if rows is not None and len(rows) != n:
                what = "items" if isinstance(rows, Sequence) else "rows"
                raise BatchError(f"key '{k}' has {len(rows)} {what} but the batch has {n} "
                                 f"samples")
            out[k] = rows
        return out

    # ---- cutting ---------------------------------------------------------------------------
    def samples(self) -> list[dict[str, Any]]:
        """One plain dict per sample (the replay buffer's rows; plain so checkpoints load
        with ``weights_only``): per-sample values split on their first dimension, batch-level
        values carried by every sample."""
        n = self.size
        out: list[dict[str, Any]] = [{} for _ in range(n)]
        for k, rows in self._rows().items():
            if rows is None:
                rows = [self[k]] * n  # batch-level: every sample carries it
            elif isinstance(rows, torch.Tensor):
                rows = rows.unbind(0)
            for s, r in zip(out, rows):
                s[k] = r
        return out

    def split(self, parts: int) -> list["Batch"]:
        """``parts`` contiguous batches of near-equal size (the first ones one larger)."""
        bounds = _bounds(self.size, parts)
        out = [Batch() for _ in range(parts)]
        for k, rows in self._rows().items():
            for b, (lo, hi) in zip(out, bounds):
                if rows is None:
                    b[k] = self[k]
                elif isinstance(rows, (torch.Tensor, np.ndarray)):
                    b[k] = rows[lo:hi]
                else:
                    b[k] = list(rows[lo:hi])
        return out

    def take_shard(self, rank: int, world: int) -> "Batch":
        """Data-parallel replica ``rank``'s part of ``world`` (see :meth:`split`)."""
        return self if world == 1 else self.split(world)[rank]

    def repeat_interleave(self, n: int) -> "Batch":
        """Every sample ``n`` times in a row (a GRPO group); batch-level values unchanged."""
        out = Batch()
        for k, v in self.items():
            rows = as_rows(v)
            if isinstance(rows, torch.Tensor):
                out[k] = rows.repeat_interleave(n, 0)
            elif isinstance(rows, np.ndarray):
                out[k] = np.repeat(rows, n, axis=0)
            elif rows is not None:
                out[k] = [x for x in rows for _ in range(n)]
            else:
                out[k] = v
        return out

    # ---- joining ---------------------------------------------------------------------------
    @classmethod
    def concat(cls, parts: Sequence[Mapping[str, Any]]) -> "Batch":
        """Batches joined row-wise, in order (the inverse of :meth:`split`); batch-level
        values are taken from the first part."""
        out = cls()
        for k, v in parts[0].items():
            vals = [p[k] for p in parts]
            rows = as_rows(v)
            if isinstance(rows, torch.Tensor):
                out[k] = torch.cat(vals)
            elif isinstance(rows, np.ndarray):
                out[k] = np.concatenate([np.asarray(x) for x in vals])
            elif rows is not None:
                out[k] = [x for val in vals for x in val]
            else:
                out[k] = v
        return out

    @classmethod
    def collate(cls, samples: Sequence[Mapping[str, Any]]) -> "Batch":
        """Per-sample dicts -> a batch; tensors of unequal length are right-padded with 0.

        Padding with 0 is safe because flowrl's losses always multiply by a mask that is 0
        there. Numpy rows of one shape are stacked back into one array; anything else
        becomes a list.
        """
        out = cls()
        for k in samples[0]:
            vals = [s[k] for s in samples]
            if isinstance(vals[0], torch.Tensor):
                out[k] = _stack_padded(vals)
            elif all(isinstance(v, (np.ndarray, np.generic)) for v in vals) and \
                    all(np.shape(v) == np.shape(vals[0]) for v in vals):
                out[k] = np.stack(vals)
            else:
                out[k] = list(vals)
        return out

    @classmethod
    def merge(cls, parts: Sequence[tuple[str, Mapping[str, Any]]], where: str) -> "Batch":
        """Union of several producers' dicts (``(label, dict)`` pairs); a key produced twice
        is a :class:`~flowrl.errors.KeyCollisionError` naming both and ``where``."""
        merged = cls()
        owner: dict[str, str] = {}
        for label, part in parts:
            for k, v in part.items():
                if k in merged:
                    raise KeyCollisionError(
                        f"key '{k}' is produced by both {owner[k]} and {label}, which both feed "
                        f"{where}; rename one of them")
                merged[k] = v
                owner.setdefault(k, label)
        return merged


def _stack_padded(vals: list[torch.Tensor]) -> torch.Tensor:
    """Stack tensors, right-padding unequal shapes with 0."""
    if vals[0].dim() == 0 or all(v.shape == vals[0].shape for v in vals):
        return torch.stack(vals)
    shape = [max(v.shape[d] for v in vals) for d in range(vals[0].dim())]
    padded = vals[0].new_zeros([len(vals), *shape])
    for i, v in enumerate(vals):
        padded[(i, *[slice(0, n) for n in v.shape])] = v
    return padded


def take_shard(value: Any, rank: int, world: int) -> Any:
    """Replica ``rank``'s part of a call's input: rows of a batch, or every ``world``-th
    micro-batch of a train step's list (which must divide evenly)."""
    if world == 1:
        return value
    if isinstance(value, list):
        if len(value) % world:
            raise ValueError(f"{len(value)} micro-batches cannot be split over {world} "
                             f"data-parallel replicas")
        return value[rank::world]
    return Batch(value).take_shard(rank, world)


def concat_shards(shards: list[Any]) -> Any:
    """Data-parallel shards gathered back in order: batches row-wise (:meth:`Batch.concat`),
    micro-batch lists joined."""
    if len(shards) == 1:
        return shards[0]
    if isinstance(shards[0], list):
        return [mb for s in shards for mb in s]
    return Batch.concat(shards)
