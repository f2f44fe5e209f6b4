"""Datasets, collate_fn handling, prompt streams, batch splitting and the replay buffer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from flowrl import ConfigError
from flowrl.errors import KeyCollisionError
from flowrl.runtime.data import (PromptStream, check_dataset, check_prompts, collate_samples,
                                 merge_outputs, split_batch)
from flowrl.runtime.replay import ReplayBuffer


class DefaultCollate(Dataset):
    def __init__(self, n):
        self.data = torch.arange(n)
        self.collate_fn = None  # the seed's way of asking for default collation

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return {"query": self.data[i]}


class CustomCollate(DefaultCollate):
    def __init__(self, n):
        self.data = torch.arange(n)  # no `collate_fn = None`: the method below is used

    def collate_fn(self, samples):
        return {"query": torch.stack([s["query"] for s in samples]) * 10, "n": len(samples)}


class NoCollateAttr(Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        return {}


def test_collate_none_uses_default_collation():
    s = PromptStream(DefaultCollate(6), batch_size=3, seed=0, shuffle=False)
    assert torch.equal(s.next()["query"], torch.tensor([0, 1, 2]))
    assert torch.equal(s.next()["query"], torch.tensor([3, 4, 5]))
    assert torch.equal(s.next()["query"], torch.tensor([0, 1, 2]))  # wraps into a new pass
    assert s.state_dict() == {"epoch": 1, "batch_in_epoch": 1}


def test_custom_collate_fn_is_used():
    batch = PromptStream(CustomCollate(4), batch_size=2, seed=0, shuffle=False).next()
    assert torch.equal(batch["query"], torch.tensor([0, 10])) and batch["n"] == 2


def test_dataset_contract_errors():
    with pytest.raises(ConfigError, match="has no 'collate_fn' attribute.*self.collate_fn = None"):
        check_dataset(NoCollateAttr(), "policy")
    with pytest.raises(TypeError, match="must return a torch.utils.data.Dataset, got list"):
        check_dataset([1, 2], "policy")
    with pytest.raises(ConfigError, match="fewer than one batch of 8"):
        PromptStream(DefaultCollate(4), batch_size=8, seed=0)


def test_prompt_stream_is_seeded_and_resumable():
    a = PromptStream(DefaultCollate(10), batch_size=2, seed=7)
    seq = [a.next()["query"].tolist() for _ in range(8)]
    b = PromptStream(DefaultCollate(10), batch_size=2, seed=7)
    assert [b.next()["query"].tolist() for _ in range(8)] == seq
    c = PromptStream(DefaultCollate(10), batch_size=2, seed=7)
    for _ in range(3):
        c.next()
    d = PromptStream(DefaultCollate(10), batch_size=2, seed=7)
    d.load_state_dict(c.state_dict())
    assert [d.next()["query"].tolist() for _ in range(5)] == seq[3:]
    assert sorted(sum(seq[:5], [])) == list(range(10))  # one pass covers every prompt once


def test_split_and_collate_pad_unequal_rows():
    batch = {"x": torch.tensor([[1, 2], [3, 4]]), "names": ["a", "b"], "k": 5}
    samples = split_batch(batch)
    assert samples[1] == {"x": samples[1]["x"], "names": "b", "k": 5}
    samples[0]["x"] = torch.tensor([9, 9, 9])
    out = collate_samples(samples)
    assert torch.equal(out["x"], torch.tensor([[9, 9, 9], [3, 4, 0]]))
    assert out["names"] == ["a", "b"]
    with pytest.raises(ValueError, match="key 'y' has 3 rows but the batch has 2"):
        split_batch({"x": torch.zeros(2), "y": torch.zeros(3)})


def test_merge_outputs_never_overwrites():
    assert merge_outputs([("a", {"x": 1}), ("b", {"y": 2})], "c") == {"x": 1, "y": 2}
    with pytest.raises(KeyCollisionError, match="key 'x' is produced by both a and b"):
        merge_outputs([("a", {"x": 1}), ("b", {"x": 2})], "c")


def test_replay_buffer_global_and_micro_batches():
    buf = ReplayBuffer()
    buf.add_batch({"i": torch.arange(8)})
    buf.add_batch({"i": torch.arange(8, 16)})
    batches = buf.global_batches(8, 4, torch.Generator().manual_seed(0))
    assert len(batches) == 2 and all(len(gb) == 2 for gb in batches)
    seen = torch.cat([mb["i"] for gb in batches for mb in gb])
    assert sorted(seen.tolist()) == list(range(16))
    assert seen.tolist() != list(range(16))  # shuffled
    plain = buf.global_batches(8, 4, None)
    assert plain[0][1]["i"].tolist() == [4, 5, 6, 7]


class _ArrayLike:
    """An array-like that is neither a tensor, an ndarray nor a list (like a pandas Series)."""

    def __init__(self, values):
        self.values = list(values)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.values, dtype=dtype)


def test_numpy_and_array_like_values_are_split_per_sample():
    batch = {"x": torch.arange(3), "scores": np.array([0.5, 1.5, 2.5]),
             "ids": np.arange(6).reshape(3, 2), "lens": _ArrayLike([4, 5, 6]),
             "names": ("a", "b", "c"), "scale": 2.0, "tag": "run", "zero_d": np.array(7)}
    samples = split_batch(batch)
    assert [float(s["scores"]) for s in samples] == [0.5, 1.5, 2.5]
    assert [s["ids"].tolist() for s in samples] == [[0, 1], [2, 3], [4, 5]]
    assert [int(s["lens"]) for s in samples] == [4, 5, 6]
    assert [s["names"] for s in samples] == ["a", "b", "c"]
    assert all(s["scale"] == 2.0 and s["tag"] == "run" and s["zero_d"] == 7 for s in samples)
    out = collate_samples(samples)  # numpy rows go back together as one array
    assert isinstance(out["scores"], np.ndarray) and out["scores"].tolist() == [0.5, 1.5, 2.5]
    assert np.array_equal(out["ids"], batch["ids"])


def test_replay_buffer_keeps_numpy_values_per_sample():
    buf = ReplayBuffer()
    buf.add_batch({"i": torch.arange(4), "w": np.array([10.0, 11.0, 12.0, 13.0])})
    ((micro,),) = buf.global_batches(4, 4, generator=None)
    assert micro["w"].tolist() == [10.0, 11.0, 12.0, 13.0]


def test_check_prompts_accepts_sized_indexable_collections():
    assert check_prompts(("a", "b")) == ["a", "b"]
    assert check_prompts(range(3)) == [0, 1, 2]
    assert [p.tolist() for p in check_prompts(np.array([[1, 2], [3, 4]]))] == [[1, 2], [3, 4]]
    assert len(check_prompts(torch.zeros(5, 2))) == 5
    assert check_prompts(["only one"], "Evaluator.set_dataset") == ["only one"]
