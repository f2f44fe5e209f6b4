"""DAPO dynamic sampling (filter, refill) and the overlong penalty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowrl.algorithms import (GroupRefill, apply_overlong_penalty, filter_groups,
                               overlong_penalty, varying_groups)
from flowrl.errors import AlgorithmError


def gen_batch(first_id: int, n: int, length: int) -> dict:
    ids = torch.arange(first_id, first_id + n)
    return {"tokens": ids[:, None].repeat(1, length), "text": [f"s{i}" for i in ids.tolist()],
            "np": ids.numpy().copy(), "episode": 3}


def test_varying_groups():
    assert varying_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 2.0]), 2).tolist() == [False, True, False]
    with pytest.raises(AlgorithmError, match="B a multiple of group_size=4, got shape \\(6,\\)"):
        varying_groups(torch.ones(6), 4)


def test_filter_groups_keeps_rows_of_every_kind():
    batch = gen_batch(0, 6, 2)
    kept, n = filter_groups(batch, torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 2.0]), 2)
    assert n == 1
    assert kept["tokens"].tolist() == [[2, 2], [3, 3]]
    assert kept["text"] == ["s2", "s3"] and kept["np"].tolist() == [2, 3]
    assert kept["episode"] == 3  # batch-level value carried
    with pytest.raises(AlgorithmError, match="batch key 'text' has 5 rows but the scores have 6"):
        filter_groups({**batch, "text": ["a"] * 5}, torch.ones(6), 2)


def test_refill_accumulates_until_target_and_drops_the_excess():
    refill = GroupRefill(target_groups=3, group_size=2, max_batches=3)
    assert refill.add(gen_batch(0, 4, 2), torch.tensor([1.0, 1.0, 0.0, 1.0])) == 1
    assert not refill.ready
    # the second generation batch is longer: tokens are right-padded with 0 to concatenate
    assert refill.add(gen_batch(10, 6, 3), torch.tensor([0.0, 1.0, 1.0, 0.0, 2.0, 2.0])) == 2
    assert refill.ready
    out = refill.take()
    assert out["text"] == ["s2", "s3", "s10", "s11", "s12", "s13"]
    assert out["tokens"].tolist() == [[2, 2, 0], [3, 3, 0], [10, 10, 10], [11, 11, 11],
                                      [12, 12, 12], [13, 13, 13]]
    assert out["np"].tolist() == [2, 3, 10, 11, 12, 13]
    assert refill.kept == 0 and not refill.ready
    assert refill.metrics() == {"dynamic_sampling/gen_batches": 2.0,
                                "dynamic_sampling/groups_seen": 5.0,
                                "dynamic_sampling/groups_kept": 3.0,
                                "dynamic_sampling/kept_fraction": 0.6}
    refill.add(gen_batch(20, 8, 2), torch.tensor([0.0, 1.0] * 4))  # 4 kept, target 3
    assert refill.take()["text"] == ["s20", "s21", "s22", "s23", "s24", "s25"]


def test_refill_gives_up_after_max_batches():
    refill = GroupRefill(target_groups=2, group_size=2, max_batches=2)
    for _ in range(2):
        refill.add(gen_batch(0, 4, 2), torch.ones(4))
    gave_up = r"2 generation batches \(max_batches=2\) gave only 0 of 2 groups"
    with pytest.raises(AlgorithmError, match=gave_up):
        refill.add(gen_batch(0, 4, 2), torch.ones(4))
    with pytest.raises(AlgorithmError, match="GroupRefill.take: only 0 of 2 groups collected"):
        refill.take()
    with pytest.raises(AlgorithmError, match="target_groups=0"):
        GroupRefill(0, 2)


def test_overlong_penalty_by_hand():
    # L = 10, L_b = 4: ramp starts after 6; (6 - 8) / 4 = -0.5; beyond 10: -1
    lengths = torch.tensor([5, 6, 8, 10, 11])
    assert overlong_penalty(lengths, max_length=10, buffer=4).tolist() == [0.0, 0.0, -0.5, -1.0, -1.0]
    half = overlong_penalty(lengths, max_length=10, buffer=4, penalty_factor=0.5)
    assert half.tolist() == [0.0, 0.0, -0.25, -0.5, -0.5]
    mask = torch.tensor([[1] * 8 + [0] * 4, [1] * 3 + [0] * 9])
    shaped = apply_overlong_penalty(torch.tensor([1.0, 1.0]), mask, max_length=10, buffer=4)
    assert shaped.tolist() == [0.5, 1.0]
    with pytest.raises(AlgorithmError, match="need 0 < buffer <= max_length, got buffer=12, max_length=10"):
        overlong_penalty(lengths, max_length=10, buffer=12)
    assert np.allclose(overlong_penalty(torch.tensor([7]), max_length=10, buffer=4).numpy(), [-0.25])
