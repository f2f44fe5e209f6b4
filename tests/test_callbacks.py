"""Per-step callbacks: hooks per optimizer step and episode, stopping early, and failures."""

from __future__ import annotations

import json

import pytest

from flowrl.engines.callbacks import Callback, CallbackError
from flowrl.engines.engine import EngineFailedError
from flowrl.errors import ConfigError
from tiny_engines import TINY_GRPO, build_grpo, config, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(Callback):
    """Records every hook call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_train_begin(self, engine):
        self.calls.append(("begin", engine.runner.episode))

    def on_train_step(self, engine, step, metrics):
        self.calls.append(("step", step, dict(metrics)))

    def on_episode_end(self, engine, episode, metrics):
        self.calls.append(("episode", episode, dict(metrics)))

    def on_train_end(self, engine, history):
        self.calls.append(("end", [r["episode"] for r in history]))


def test_hooks_see_every_optimizer_step_and_episode():
    rec = Recorder()
    engine = build_grpo(config(TINY_GRPO, num_episode=2), False)
    rows = engine.learn(callbacks=[rec])
    kinds = [c[0] for c in rec.calls]
    # 32 samples / global batch 16 = 2 optimizer steps per episode
    assert kinds == ["begin", "step", "step", "episode", "step", "step", "episode", "end"]
    assert rec.calls[0] == ("begin", 0) and rec.calls[-1] == ("end", [1, 2])
    steps = [c for c in rec.calls if c[0] == "step"]
    assert [s[1] for s in steps] == [1, 2, 3, 4]
    assert {"grpo_policy/loss", "grpo_policy/kl", "grpo_policy/grad_norm"} <= set(steps[0][2])
    # the episode's row is its train steps' mean (the tiny trainer logs means)
    assert rows[0]["grpo_policy/loss"] == pytest.approx(
        (steps[0][2]["grpo_policy/loss"] + steps[1][2]["grpo_policy/loss"]) / 2)
    assert [c[2] for c in rec.calls if c[0] == "episode"] == rows
    # learn(callbacks=...) lasts one learn(); none are left hooked
    engine.learn(num_episode=3)
    assert len([c for c in rec.calls if c[0] == "episode"]) == 2


def test_a_plain_function_is_an_episode_end_callback():
    seen = []
    engine = build_grpo(config(TINY_GRPO, num_episode=2), False)
    assert engine.add_callback(lambda eng, ep, m: seen.append((eng is engine, ep,
                                                               m["reward/score"]))) is engine
    rows = engine.learn()
    assert seen == [(True, 1, rows[0]["reward/score"]), (True, 2, rows[1]["reward/score"])]


def test_stopping_early_finishes_the_episode_checkpoints_and_can_continue(tmp_path):
    def stop_after_two(engine, episode, metrics):
        if episode == 2:
            engine.control.should_training_stop = True

    cfg = config(TINY_GRPO, num_episode=4, output_dir=str(tmp_path), save_episode_interval=10)
    engine = build_grpo(cfg, False)
    engine.add_callback(stop_after_two)
    rows = engine.learn()
    assert [r["episode"] for r in rows] == [1, 2]
    # the stop saved a checkpoint although the interval was not reached
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("episode_*")) == \
        ["episode_0002"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    # not a failure: the next learn() goes on (and the stop flag was cleared)
    more = engine.learn()
    assert [r["episode"] for r in more] == [3, 4]


def test_a_raising_callback_fails_the_run_naming_it(tmp_path):
    class Boom(Callback):
        name = "boom-at-3"

        def on_train_step(self, engine, step, metrics):
            if step == 5:  # the first optimizer step of episode 3
                raise ValueError("user code broke")

    cfg = config(TINY_GRPO, num_episode=4, output_dir=str(tmp_path), save_episode_interval=1)
    engine = build_grpo(cfg, False)
    engine.add_callback(Boom())
    with pytest.raises(CallbackError) as err:
        engine.learn()
    assert str(err.value) == ("callback 'boom-at-3' raised in on_train_step at episode 3 of "
                              "engine 'grpo': ValueError: user code broke")
    assert isinstance(err.value.__cause__, ValueError)
    # issue 12's failure semantics: only a resume continues
    with pytest.raises(EngineFailedError, match="failed at episode 3"):
        engine.learn()
    engine.callbacks.clear()
    rows = engine.learn(resume=True)
    assert [r["episode"] for r in rows] == [3, 4]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in lines] == [1, 2, 3, 4]


def test_callback_class_without_a_name_is_named_by_its_class():
    class CheckReward:  # duck-typed: any object with a hook
        def on_episode_end(self, engine, episode, metrics):
            raise KeyError("reward/acc")

    engine = build_grpo(config(TINY_GRPO, num_episode=1), False)
    with pytest.raises(CallbackError, match=r"^callback 'CheckReward' raised in on_episode_end "
                                            r"at episode 1 .*KeyError: 'reward/acc'"):
        engine.learn(callbacks=[CheckReward()])


@pytest.mark.parametrize("bad", [42, "print", object()])
def test_a_callback_that_is_nothing_callable_is_refused(bad):
    engine = build_grpo(config(TINY_GRPO, num_episode=1), False)
    with pytest.raises(ConfigError, match=r"callback .* is neither a function nor an object "
                                          r"with one of the hooks on_train_begin, "
                                          r"on_train_step, on_episode_end, on_train_end"):
        engine.add_callback(bad)
    with pytest.raises(ConfigError, match=type(bad).__name__):
        engine.learn(callbacks=[bad])
