"""Ray workers' torch threads (their share of the driver's, by devices) and niceness (0 when
flowrl starts Ray itself), read inside the workers by a tiny module."""

from __future__ import annotations

import os

import pytest
import torch

import flowrl
from flowrl import BaseModule, Engine, flow
from flowrl.runtime.ray_cluster import worker_threads

ray = pytest.importorskip("ray")


@pytest.mark.parametrize("driver, replica, total, expected", [
    (1, 1, 6, 1),   # the tests and examples: one thread everywhere, as in the local runtime
    (2, 1, 6, 1),   # fewer threads than devices: at least one each
    (8, 1, 2, 4),   # two one-device groups split the driver's eight threads
    (8, 2, 4, 4),   # a two-device replica gets two devices' worth
    (10, 1, 3, 3),  # floor: never more than the share
])
def test_worker_threads_is_the_replicas_share_of_the_driver(driver, replica, total, expected):
    assert worker_threads("share", driver, replica, total) == expected


def test_worker_threads_default_is_the_drivers_count_and_a_number_is_taken_as_is():
    assert worker_threads("driver", 8, 1, 4) == 8
    assert worker_threads(3, 8, 1, 4) == 3


class Probe(BaseModule):
    """Reports, from inside its worker, torch's thread count and the process's niceness."""

    def build_dataset(self, prompts, is_eval=False):
        from test_data import DefaultCollate
        return DefaultCollate(len(prompts))

    def forward_step(self, data, iteration=0):
        n = len(data["query"])
        return {f"{self.name}_threads": torch.full((n,), torch.get_num_threads()),
                f"{self.name}_nice": torch.full((n,), os.nice(0))}

    def train_step(self, data, iteration):
        cols = {k: torch.cat([mb[k] for mb in data]).float() for k in data[0]
                if k.endswith(("_threads", "_nice"))}  # data: the micro-batches
        seen = {f"max_{k}": float(v.max()) for k, v in cols.items()}
        seen |= {f"min_{k}": float(v.min()) for k, v in cols.items()}
        return {**seen, "trainer_threads": float(torch.get_num_threads()),
                "trainer_nice": float(os.nice(0))}


@pytest.fixture
def flowrl_starts_ray():
    """No Ray running: the executor starts its own local one (shut down afterwards)."""
    if ray.is_initialized():
        ray.shutdown()
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    ray.shutdown()


@pytest.mark.ray
def test_each_worker_gets_its_share_of_threads_at_the_drivers_niceness(flowrl_starts_ray):
    # 5 devices: wide (tp=2, one 2-device replica), dp (2 replicas of 1), trainer (1)
    flowrl.init({"runtime": "ray",
                 "runtime_args": {"sample_per_episode": 4, "generation_batch_size": 4,
                                  "train_global_batch_size": 4, "train_micro_batch_size": 4,
                                  "num_episode": 1, "progress": False,
                                  "ray_worker_threads": "share"},
                 "models": {"wide": {"parallel": {"tp": 2}, "trainable": False},
                            "dp": {"parallel": {"dp": 2}, "trainable": False},
                            "trainer": {}}})
    wide, dp, trainer = Probe("wide"), Probe("dp"), Probe("trainer")

    @flow
    def rollout(batch):
        return wide.forward_step(batch), dp.forward_step(batch)

    @flow
    def train(batch):
        trainer.train_step(batch)

    engine = Engine(rollout, train)
    engine.set_dataset(list(range(4)))
    torch.set_num_threads(10)  # the driver's count; the workers share it out
    try:
        row = engine.learn()[0]
        groups = {g.name: (len(g.devices), g.replicas) for g in engine.executor.groups}
    finally:
        engine.shutdown()
    assert sorted(groups.values()) == [(1, 1), (2, 1), (2, 2)]
    # every replica's rows: min == max == the share (dp's two replicas each took a shard)
    seen = {k.split("/")[-1]: v for k, v in row.items() if k.endswith(("_threads", "_nice"))}
    expected = {"wide": 4.0, "dp": 2.0}
    assert {k: v for k, v in seen.items() if k.endswith("_threads")} == {
        "trainer_threads": 2.0, **{f"{m}_{p}_threads": n for p, n in expected.items()
                                   for m in ("min", "max")}}, row
    nice = float(os.nice(0))  # Ray's default would be the driver's + 15
    assert {k: v for k, v in seen.items() if k.endswith("_nice")} == {
        "trainer_nice": nice, **{f"{m}_{p}_nice": nice for p in expected
                                 for m in ("min", "max")}}, row
