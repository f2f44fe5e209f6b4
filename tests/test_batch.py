"""The one batch type: split / concat / shard / repeat / samples / collate / merge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowrl.errors import BatchError, KeyCollisionError
from flowrl.runtime.batch import Batch, concat_shards, take_shard
from flowrl.runtime.replay import ReplayBuffer


def _batch(n: int = 5) -> Batch:
    return Batch({"ids": torch.arange(n * 2).reshape(n, 2), "text": [f"t{i}" for i in range(n)],
                  "score": np.arange(n, dtype=np.float32), "n": 7, "tag": "run"})


def test_size_counts_samples_and_len_stays_the_number_of_keys():
    b = _batch(5)
    assert b.size == 5 and len(b) == 5 == len(dict(b))
    assert Batch({"x": torch.zeros(3, 4), "y": 1}).size == 3
    assert len(Batch({"y": 1, "x": [1]})) == 2


def test_split_cuts_every_kind_of_value_alike_and_concat_inverts_it():
    b = _batch(5)
    parts = b.split(3)
    assert [p.size for p in parts] == [2, 2, 1]  # torch.tensor_split's sizes, for every key
    for p in parts:
        assert p["ids"][:, 0].div(2).tolist() == [int(t[1:]) for t in p["text"]]
        assert p["score"].tolist() == [int(t[1:]) for t in p["text"]]
        assert p["n"] == 7 and p["tag"] == "run" and isinstance(p, Batch)
    back = Batch.concat(parts)
    assert torch.equal(back["ids"], b["ids"]) and back["text"] == b["text"]
    assert isinstance(back["score"], np.ndarray) and back["score"].tolist() == [0, 1, 2, 3, 4]
    assert back["n"] == 7 and back["tag"] == "run"


def test_take_shard_and_concat_shards_round_trip_batches_and_micro_batch_lists():
    b = _batch(4)
    shards = [take_shard(b, r, 2) for r in range(2)]
    assert shards[0]["text"] == ["t0", "t1"] and shards[1]["score"].tolist() == [2, 3]
    joined = concat_shards(shards)
    assert torch.equal(joined["ids"], b["ids"]) and joined["text"] == b["text"]
    assert take_shard(b, 0, 1) is b
    micro = [{"i": i} for i in range(4)]
    assert take_shard(micro, 1, 2) == [{"i": 1}, {"i": 3}]
    assert concat_shards([[{"i": 0}], [{"i": 1}]]) == [{"i": 0}, {"i": 1}]
    with pytest.raises(ValueError, match="3 micro-batches cannot be split over 2 data-parallel"):
        take_shard(micro[:3], 0, 2)


def test_repeat_interleave_repeats_tensors_arrays_and_lists_in_a_row():
    b = Batch({"p": torch.tensor([[1, 2], [3, 4]]), "a": np.array([5, 6]), "s": ("x", "y"),
               "k": 2})
    out = b.repeat_interleave(3)
    assert out["p"][:, 0].tolist() == [1, 1, 1, 3, 3, 3]
    assert out["a"].tolist() == [5, 5, 5, 6, 6, 6] and out["s"] == ["x"] * 3 + ["y"] * 3
    assert out["k"] == 2 and out.size == 6


def test_samples_are_plain_dicts_and_collate_pads_and_restacks():
    b = Batch({"ids": [torch.tensor([1, 2, 3]), torch.tensor([4])], "a": np.ones((2, 2)),
               "n": 1})
    rows = b.samples()
    assert [type(r) for r in rows] == [dict, dict] and rows[1]["n"] == 1
    back = Batch.collate(rows)
    assert back["ids"].tolist() == [[1, 2, 3], [4, 0, 0]]  # right-padded with 0
    assert isinstance(back["a"], np.ndarray) and back["a"].shape == (2, 2)


def test_replay_samples_load_with_weights_only(tmp_path):
    buf = ReplayBuffer()
    buf.add_batch(_batch(2) | {"score": torch.tensor([1.0, 2.0])})
    torch.save(list(buf.samples), tmp_path / "r.pt")
    loaded = torch.load(tmp_path / "r.pt", weights_only=True)
    assert loaded[1]["text"] == "t1" and loaded[1]["n"] == 7


def test_rows_that_disagree_name_the_key():
    with pytest.raises(BatchError, match="key 'b' has 2 items but the batch has 3 samples"):
        Batch({"a": torch.zeros(3), "b": [1, 2]}).split(2)
    with pytest.raises(BatchError, match=r"cannot tell the batch size of a batch with keys "
                                         r"\['k'\]"):
        Batch({"k": 1}).size


def test_merge_refuses_a_key_from_two_producers():
    merged = Batch.merge([("a", {"x": 1}), ("b", {"y": 2})], "the inputs of c")
    assert merged == {"x": 1, "y": 2} and isinstance(merged, Batch)
    with pytest.raises(KeyCollisionError, match="key 'x' is produced by both a and b, which "
                                                "both feed the inputs of c"):
        Batch.merge([("a", {"x": 1}), ("b", {"x": 2})], "the inputs of c")
