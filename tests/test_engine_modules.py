"""The engine owns its config and its modules (no process-global registry): modules made at
import time, before ``flowrl.init()``, train; modules read the config they are bound to;
``learn()`` observers; ``flowrl explain`` on such a script."""

from __future__ import annotations

import pytest
import torch

import flowrl
from flowrl import BaseModule, Engine, TorchModule, flow
from flowrl.cli import main
from flowrl.engines.engine import observe_learn
from flowrl.errors import ConfigError, FlowRLError
from flowrl.models.base import ModuleNotBoundError


class Points(torch.utils.data.Dataset):
    collate_fn = None

    def __init__(self, prompts):
        self.xs = [float(p) for p in prompts]

    def __len__(self):
        return len(self.xs)

    def __getitem__(self, i):
        return {"x": torch.tensor(self.xs[i])}


class Doubler(BaseModule):
    """Prompts -> the input ``u`` and the target ``y = 2u``."""

    def build_dataset(self, prompts, is_eval=False):
        return Points(prompts)

    def forward_step(self, data, iteration=0):
        return {"u": data["x"], "y": 2 * data["x"]}


class Line(TorchModule):
    """``pred = w u + b``; trains on ``(pred - y)^2`` with ``models.<name>.args.lr``."""

    def setup(self):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.model_args["lr"])

    def forward_step(self, data, iteration=0):
        with torch.no_grad():
            return {"pred": self.model(data["u"][:, None]).squeeze(1)}

    def train_step(self, data, iteration):
        def loss_fn(mb):
            pred = self.model(mb["u"][:, None]).squeeze(1)
            return ((pred - mb["y"]) ** 2).mean(), {}
        return self.train_micro_batches(data, loss_fn)


# Made at import time, before any flowrl.init() of this test session's tests below.
SOURCE, INFER, TRAINER = Doubler("source"), Line("infer"), Line("trainer")


@flow
def rollout(batch):
    out = SOURCE.forward_step(batch)
    return out, INFER.forward_step(out)


@flow
def train(batch):
    TRAINER.train_step(batch)


CONFIG = {
    "runtime_args": {"num_episode": 3, "sample_per_episode": 8, "generation_batch_size": 4,
                     "train_global_batch_size": 4, "train_micro_batch_size": 2,
                     "progress": False, "seed": 1},
    "models": {"source": {}, "infer": {"args": {"lr": 0.05}}, "trainer": {"args": {"lr": 0.05}}},
}


def test_modules_made_before_init_train_in_an_engine():
    flowrl.init(CONFIG)
    engine = Engine(rollout, train, sync={TRAINER: INFER})
    assert engine.modules == {"source": SOURCE, "infer": INFER, "trainer": TRAINER}
    engine.set_dataset([0.5, 1.0, 1.5, 2.0, -0.5, -1.0, -1.5, -2.0])
    history = engine.learn()
    assert len(history) == 3
    assert history[-1]["trainer/loss"] < history[0]["trainer/loss"]
    assert TRAINER.optimizer.param_groups[0]["lr"] == 0.05  # read from the bound section
    assert torch.equal(INFER.model.weight, TRAINER.model.weight)  # synced each episode
    engine.shutdown()


def test_an_engine_binds_its_modules_to_its_own_config():
    default = flowrl.init(CONFIG)
    own = flowrl.load_config({**CONFIG, "models": {**CONFIG["models"],
                                                   "trainer": {"args": {"lr": 0.5}}}})
    engine = Engine(rollout, train, sync={TRAINER: INFER}, config=own)
    assert engine.config is own and flowrl.get_args() is default
    assert TRAINER.bound_config is own and TRAINER.model_args == {"lr": 0.5}
    assert SOURCE.runtime_args is own.runtime_args and SOURCE.on_nonfinite == "raise"


def test_an_unbound_module_names_itself_when_its_config_is_read():
    fresh = Line("fresh")
    for prop in ("model_config", "model_args", "runtime_args", "on_nonfinite", "trainable"):
        with pytest.raises(ModuleNotBoundError,
                           match=r"module 'fresh' \(Line\) is not bound to an engine yet: its "
                                 r"config section models\.fresh"):
            getattr(fresh, prop)
    assert issubclass(ModuleNotBoundError, FlowRLError)
    with pytest.raises(ConfigError, match=r"model 'fresh' has no section under 'models:'"):
        fresh.bind(flowrl.load_config(CONFIG))
    cfg = flowrl.load_config({"models": {"fresh": {"args": {"lr": 0.1}}}})
    assert fresh.bind(cfg) is fresh and fresh.model_args == {"lr": 0.1}


def test_two_modules_with_one_model_name_in_one_engine_are_refused():
    flowrl.init(CONFIG)
    impostor = Line("source")

    @flow
    def train_impostor(batch):
        impostor.train_step(batch)

    with pytest.raises(ConfigError, match=r"model_name 'source' is already used by a Doubler; "
                                          r"every module needs a unique model_name"):
        Engine(rollout, train_impostor)


def test_a_call_the_class_does_not_implement_is_refused_at_construction():
    class OnlyTrains(BaseModule):
        def train_step(self, data, iteration):
            return {}

    flowrl.init({**CONFIG, "models": {**CONFIG["models"], "counter": {}}})
    counter = OnlyTrains("counter")

    @flow
    def bad_rollout(batch):
        return counter.forward_step(SOURCE.forward_step(batch))

    with pytest.raises(ConfigError, match=r"model 'counter' \(OnlyTrains\) is called with "
                                          r"forward_step at .*test_engine_modules\.py:\d+ but "
                                          r"its class does not implement forward_step"):
        Engine(bad_rollout, train)


class _Stop(BaseException):
    pass


def test_learn_observers_see_the_engine_before_anything_runs():
    flowrl.init(CONFIG)
    engine = Engine(rollout, train, sync={TRAINER: INFER})
    seen = []

    def observer(e):
        seen.append(e)
        raise _Stop

    with observe_learn(observer), pytest.raises(_Stop):
        engine.learn()  # no dataset set: the observer runs before setup would refuse that
    assert seen == [engine] and engine.executor is None
    with pytest.raises(ConfigError, match="set_dataset"):  # the observer is gone
        engine.learn()


SCRIPT = '''
import sys
import flowrl
from flowrl import Engine, flow
from test_engine_modules import CONFIG, SOURCE, INFER, TRAINER  # modules made at import

@flow
def rollout(batch):
    out = SOURCE.forward_step(batch)
    return out, INFER.forward_step(out)

@flow
def train(batch):
    TRAINER.train_step(batch)

flowrl.init(CONFIG)
engine = Engine(rollout, train, sync={TRAINER: INFER})
engine.set_dataset([1, 2, 3, 4])
history = engine.learn()
print(history[0])
sys.exit(3)
'''


def test_explain_captures_the_engine_at_learn_and_stops_the_script(tmp_path, capsys):
    script = tmp_path / "train_line.py"
    script.write_text(SCRIPT)
    assert main(["explain", str(script)]) == 0
    captured = capsys.readouterr()
    assert "source.forward_step" in captured.out and "sync trainer -> infer" in captured.out
    assert f"explain stopped {script} at engine.learn() ({script}:19)" in captured.err
