"""``models.<name>.optim`` schedules and fused kernels: factors at given steps (hand-computed),
the total step count from runtime_args, a TorchModule's lr over its steps, config errors."""

from __future__ import annotations

import math

import pytest
import torch

import flowrl
from flowrl.config import RuntimeArgs
from flowrl.config.model import OptimConfig
from flowrl.errors import ConfigError
from flowrl.models.lr_schedule import LRSchedule, fused_kwargs, lr_schedule, total_optimizer_steps
from flowrl.models.torch_module import TorchModule


@pytest.mark.parametrize("kind,step,want", [
    ("linear", 0, 0.5), ("linear", 1, 1.0), ("linear", 2, 1.0), ("linear", 6, 0.55),
    ("linear", 10, 0.1), ("linear", 50, 0.1),
    ("cosine", 0, 0.5), ("cosine", 2, 1.0), ("cosine", 4, 0.1 + 0.45 * (1 + math.sqrt(0.5))),
    ("cosine", 6, 0.55), ("cosine", 10, 0.1),
    ("constant", 0, 0.5), ("constant", 9, 1.0)])
def test_schedule_factors(kind, step, want):
    # 2 warm-up steps of 10; decay over the remaining 8 to 0.1 x lr
    assert LRSchedule(kind, warmup=2, total=10, min_ratio=0.1)(step) == pytest.approx(want)


def test_total_steps_and_warmup_ratio():
    ra = RuntimeArgs(num_episode=3, sample_per_episode=8, generation_batch_size=8,
                     train_global_batch_size=4, train_micro_batch_size=2, num_training_epoch=2)
    assert total_optimizer_steps(ra) == 3 * (8 // 4) * 2 == 12
    s = lr_schedule(OptimConfig(scheduler="cosine", warmup_ratio=0.25), 12)
    assert (s.warmup, s.total, s.kind) == (3, 12, "cosine")
    assert lr_schedule(OptimConfig(), 12) is None  # no keys: no scheduler at all


class Linear(TorchModule):
    def setup(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(2, 1)
        self.optimizer = self.optimizer_from_config(torch.optim.AdamW)

    def train_step(self, data, iteration):
        return self.train_micro_batches(data, lambda mb: ((self.model(mb["x"]) ** 2).mean(), {}))


def linear_module(optim: dict) -> Linear:
    cfg = flowrl.init({"models": {"lin": {"optim": optim}},
                       "runtime_args": {"num_episode": 2, "sample_per_episode": 4,
                                        "generation_batch_size": 4, "train_global_batch_size": 2,
                                        "train_micro_batch_size": 2}})
    m = Linear("lin").bind(cfg)
    m.setup()
    return m


def test_module_lr_follows_schedule():
    m = linear_module({"lr": 0.1, "scheduler": "linear", "warmup_steps": 1})
    mb = [{"x": torch.ones(2, 2)}]
    lrs = []
    for i in range(4):  # total = 2 episodes x 2 steps = 4; warm-up 1, decay over 3
        lrs.append(m.optimizer.param_groups[0]["lr"])
        m.train_step(mb, i)
    assert lrs == pytest.approx([0.1, 0.1, 0.1 * 2 / 3, 0.1 / 3])
    assert "scheduler" in m.state_dict_for_checkpoint()


def test_no_schedule_keys_keep_constant_lr():
    m = linear_module({"lr": 0.1})
    assert m.scheduler is None
    m.train_step([{"x": torch.ones(2, 2)}], 0)
    assert m.optimizer.param_groups[0]["lr"] == 0.1


def test_fused_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert fused_kwargs(torch.optim.AdamW, None, cpu) == {"foreach": True}
    assert fused_kwargs(torch.optim.AdamW, None, cuda) == {"fused": True}
    assert fused_kwargs(torch.optim.AdamW, False, cuda) == {}
    assert fused_kwargs(torch.optim.SGD, True, cpu) == {"fused": True}
    assert linear_module({"lr": 0.1}).optimizer.defaults["foreach"] is True
    fused = linear_module({"lr": 0.1, "fused": True})
    assert fused.optimizer.defaults["fused"] is True
    fused.train_step([{"x": torch.ones(2, 2)}], 0)  # the CPU fused AdamW steps


@pytest.mark.parametrize("optim,msg", [
    ({"warmup_steps": 2, "warmup_ratio": 0.1}, "warmup_steps or warmup_ratio"),
    ({"scheduler": "exponential"}, "models.lin.optim.scheduler"),
    ({"min_lr_ratio": 2.0}, "models.lin.optim.min_lr_ratio")])
def test_bad_optim(optim, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        flowrl.init({"models": {"lin": {"optim": optim}}})
    assert "models.lin.optim" in str(e.value)


def test_resume_keeps_the_step_and_follows_the_current_config():
    m = linear_module({"lr": 0.1, "scheduler": "linear"})  # total 4: 0.1, 0.075, 0.05, ...
    m.train_step([{"x": torch.ones(2, 2)}], 0)
    state = m.state_dict_for_checkpoint()
    resumed = linear_module({"lr": 0.2, "scheduler": "linear"})  # a new lr in the config
    resumed.load_checkpoint_state(state)
    assert resumed.scheduler.last_epoch == 1
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * 0.75)
