"""Batch plumbing: merging call outputs, splitting batches into samples, padding, prompts."""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from flowrl.errors import ConfigError, KeyCollisionError

Batch = dict[str, Any]


def merge_outputs(parts: list[tuple[str, Batch]], where: str) -> Batch:
    """Union of several producers' dicts; a key produced twice is an error, never overwritten."""
    merged: Batch = {}
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


def batch_size_of(batch: Batch) -> int:
    """Number of samples in a batch dict (length of its first tensor or list)."""
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return v.shape[0]
        if isinstance(v, (list, tuple)):
            return len(v)
    raise ValueError(f"cannot tell the batch size of a batch with keys {sorted(batch)}")


def split_batch(batch: Batch) -> list[Batch]:
    """A batch dict -> one dict per sample (tensors indexed on dim 0, lists per item)."""
    n = batch_size_of(batch)
    samples: list[Batch] = [{} for _ in range(n)]
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            if v.shape[0] != n:
                raise ValueError(f"key '{k}' has {v.shape[0]} rows but the batch has {n} samples")
            rows = v.unbind(0)
        elif isinstance(v, (list, tuple)):
            if len(v) != n:
                raise ValueError(f"key '{k}' has {len(v)} items but the batch has {n} samples")
            rows = v
        else:
            rows = [v] * n  # batch-level scalar: every sample carries it
        for s, r in zip(samples, rows):
            s[k] = r
    return samples


def collate_samples(samples: list[Batch]) -> Batch:
    """Per-sample dicts -> a batch dict; tensors of unequal length are right-padded with 0.

    Padding with 0 is safe because flowrl's losses always multiply by a mask that is 0 there.
    """
    out: Batch = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        if isinstance(vals[0], torch.Tensor):
            if vals[0].dim() == 0:
                out[k] = torch.stack(vals)
            elif all(v.shape == vals[0].shape for v in vals):
                out[k] = torch.stack(vals)
            else:
                shape = [max(v.shape[d] for v in vals) for d in range(vals[0].dim())]
                padded = vals[0].new_zeros([len(vals), *shape])
                for i, v in enumerate(vals):
                    padded[(i, *[slice(0, n) for n in v.shape])] = v
                out[k] = padded
        else:
            out[k] = list(vals)
    return out


def check_dataset(dataset: Any, owner: str) -> None:
    """The dataset contract from the ChatLearn interface."""
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"{owner}.build_dataset must return a torch.utils.data.Dataset, got "
            f"{type(dataset).__name__}")
    if not hasattr(dataset, "collate_fn"):
        raise ConfigError(
            f"the dataset from {owner}.build_dataset ({type(dataset).__name__}) has no "
            f"'collate_fn' attribute: define collate_fn(samples), or set self.collate_fn = None "
            f"in __init__ to use default collation")
    if len(dataset) == 0:
        raise ConfigError(f"the dataset from {owner}.build_dataset is empty")


class PromptStream:
    """Endless, seeded, resumable stream of prompt batches from a dataset.

    Batches come from a ``DataLoader`` using the dataset's ``collate_fn`` (torch's default
    collation when it is ``None``); each pass over the data reshuffles with a generator
    seeded by ``(seed, pass)``, so the position ``(pass, batch)`` fully identifies the state.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, shuffle: bool = True,
                 drop_last: bool = True) -> None:
        self.dataset, self.batch_size, self.seed, self.shuffle = dataset, batch_size, seed, shuffle
        if drop_last and len(dataset) < batch_size:
            raise ConfigError(
                f"the prompt dataset has {len(dataset)} prompts, fewer than one batch of "
                f"{batch_size} (runtime_args.generation_batch_size)")
        self.drop_last = drop_last
        self.epoch, self.batch_in_epoch = 0, 0
        self._it: Iterator[Batch] | None = None

    def _loader(self) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        collate = getattr(self.dataset, "collate_fn", None) or default_collate
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=self.shuffle,
                            generator=g, collate_fn=collate, drop_last=self.drop_last)
        it = iter(loader)
        for _ in range(self.batch_in_epoch):  # resume mid-epoch
            next(it)
        return it

    def next(self) -> Batch:
        if self._it is None:
            self._it = self._loader()
        try:
            batch = next(self._it)
        except StopIteration:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self._it = self._loader()
            batch = next(self._it)
        self.batch_in_epoch += 1
        if not isinstance(batch, dict):
            raise TypeError(
                f"collate_fn returned a {type(batch).__name__}; a prompt batch must be a dict "
                f"of key -> batched values")
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        self._it = None
