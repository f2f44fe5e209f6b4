"""Prompts and datasets: checking what ``set_dataset`` and ``build_dataset`` give, and the
seeded, resumable prompt stream. Batches themselves are :class:`flowrl.runtime.batch.Batch`
(the functions below are its short forms, kept for callers that import them from here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from flowrl.errors import ConfigError, DatasetError, DatasetTypeError
from flowrl.runtime.batch import Batch


def merge_outputs(parts: list[tuple[str, Batch]], where: str) -> Batch:
    """Union of several producers' dicts (:meth:`Batch.merge`)."""
    return Batch.merge(parts, where)


def batch_size_of(batch: dict[str, Any]) -> int:
    """Number of samples in a batch dict (:attr:`Batch.size`)."""
    return Batch(batch).size


def split_batch(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """A batch dict -> one dict per sample (:meth:`Batch.samples`)."""
    return Batch(batch).samples()


def collate_samples(samples: list[dict[str, Any]]) -> Batch:
    """Per-sample dicts -> a batch, tensors right-padded with 0 (:meth:`Batch.collate`)."""
    return Batch.collate(samples)


def check_prompts(prompts: Any, where: str = "set_dataset") -> list:
    """``prompts`` as a list, one prompt per item; what cannot be a prompt list is refused.

    Accepted: lists, tuples, numpy arrays, tensors and any other sized, indexable sequence.
    Refused, with a :class:`ConfigError` naming ``where`` and what was given: ``None``; a
    ``str``/``bytes`` (it would become one prompt per character); a dict; and generators or
    other one-shot iterators, because flowrl needs the number of prompts up front and re-reads
    them every pass over the data and on resume: pass ``list(...)`` instead.
    """
    hint = "pass a list of prompts"
    if prompts is None:
        raise ConfigError(f"{where} got None; {hint}")
    if isinstance(prompts, (str, bytes, bytearray)):
        raise ConfigError(f"{where} got a single {type(prompts).__name__} "
                          f"({str(prompts)[:40]!r}), which would become one prompt per "
                          f"character; {hint}, e.g. [{str(prompts)[:20]!r}]")
    if isinstance(prompts, Mapping):
        raise ConfigError(f"{where} got a {type(prompts).__name__} with keys "
                          f"{list(prompts)[:5]}; {hint} (e.g. list(d.values()))")
    if isinstance(prompts, Iterator) or not (hasattr(prompts, "__len__")
                                             and hasattr(prompts, "__getitem__")):
        raise ConfigError(f"{where} got a {type(prompts).__name__}, not a sized, indexable "
                          f"collection; {hint} (e.g. list(...)): flowrl needs their number up "
                          f"front and re-reads them every pass and on resume")
    try:
        items = list(prompts)
    except TypeError as e:  # a 0-d array or tensor
        raise ConfigError(f"{where} got a {type(prompts).__name__} that is not a "
                          f"collection ({e}); {hint}") from None
    if not items:
        raise ConfigError(f"{where} got no prompts")
    return items


def check_dataset(dataset: Any, owner: str) -> None:
    """The dataset contract from the ChatLearn interface."""
    if not isinstance(dataset, Dataset):
        raise DatasetTypeError(
            f"{owner}.build_dataset must return a torch.utils.data.Dataset, got "
            f"{type(dataset).__name__}")
    if not hasattr(dataset, "collate_fn"):
        raise ConfigError(
            f"the dataset from {owner}.build_dataset ({type(dataset).__name__}) has no "
            f"'collate_fn' attribute: define collate_fn(samples), or set self.collate_fn = None "
            f"in __init__ to use default collation")
    try:
        size = len(dataset)
    except Exception as e:
        raise DatasetError(f"len() of the dataset from {owner}.build_dataset "
                           f"({type(dataset).__name__}) failed: {type(e).__name__}: {e}") from e
    if size == 0:
        raise ConfigError(f"the dataset from {owner}.build_dataset is empty")


class _NamedFailures(Dataset):
    """A prompt dataset whose ``__getitem__`` / ``collate_fn`` failures name the dataset class
    and the indices. The DataLoader runs in this process, so the indices fetched for a batch
    are exactly those of the samples handed to the next ``collate_fn`` call."""

    def __init__(self, dataset: Dataset, collate: Callable[[list], Any]) -> None:
        self.dataset, self.collate = dataset, collate
        self.name = type(dataset).__name__
        self.indices: list[int] = []

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list:
        self.indices = list(indices)
        batched = getattr(self.dataset, "__getitems__", None)
        if batched:
            try:
                return batched(self.indices)
            except Exception as e:
                raise DatasetError(f"prompt dataset {self.name}: __getitems__({self.indices}) "
                                   f"raised {type(e).__name__}: {e}") from e
        samples = []
        for i in self.indices:
            try:
                samples.append(self.dataset[i])
            except Exception as e:
                raise DatasetError(f"prompt dataset {self.name}: __getitem__({i}) raised "
                                   f"{type(e).__name__}: {e}") from e
        return samples

    def collate_fn(self, samples: list) -> Any:
        try:
            return self.collate(samples)
        except Exception as e:
            raise DatasetError(f"prompt dataset {self.name}: collate_fn failed on the samples "
                               f"at indices {self.indices}: {type(e).__name__}: {e}") from e


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
        named = _NamedFailures(self.dataset, collate)
        loader = DataLoader(named, batch_size=self.batch_size, shuffle=self.shuffle,
                            generator=g, collate_fn=named.collate_fn, drop_last=self.drop_last)
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
            raise DatasetTypeError(
                f"the collate_fn of prompt dataset {type(self.dataset).__name__} returned a "
                f"{type(batch).__name__}; a prompt batch must be a dict of key -> batched values")
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        self._it = None
