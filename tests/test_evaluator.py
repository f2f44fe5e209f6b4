"""The Evaluator: when it runs, what it reports, and that it never changes training."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

import flowrl
from flowrl import BaseModule, Engine, Evaluator, flow
from flowrl.engines.rewards import math_answer_match
from flowrl.errors import ConfigError
from tiny_engines import one_thread  # noqa: F401 (fixture)
from tiny_engines import TINY_GRPO, build_grpo, comparable, config, module_tensors

pytestmark = pytest.mark.usefixtures("one_thread")


class Numbers(Dataset):
    def __init__(self, values):
        self.values = list(values)
        self.collate_fn = None

    def __len__(self):
        return len(self.values)

    def __getitem__(self, i):
        return {"x": torch.tensor(float(self.values[i]))}


class Gen(BaseModule):
    def __init__(self, name):
        super().__init__(name)
        self.datasets_built: list[bool] = []
        self.eval_batches: list[int] = []

    def build_dataset(self, prompts, is_eval=False):
        self.datasets_built.append(is_eval)
        return Numbers(prompts)

    def forward_step(self, data, iteration=0):
        return {"y": data["x"] * 2}

    def eval_step(self, data, iteration=0):
        self.eval_batches.append(len(data["x"]))
        self.log("batches", 1, reduce="sum")
        return {"y": data["x"], "big": (data["x"] > 5).float()}


class Trainer(BaseModule):
    def train_step(self, data, iteration):
        return {"loss": 0.0}


def _engine(**runtime_args):
    args = {"num_episode": 4, "sample_per_episode": 4, "generation_batch_size": 2,
            "train_global_batch_size": 4, "train_micro_batch_size": 2, "progress": False,
            **runtime_args}
    flowrl.init({"runtime_args": args, "models": {"gen": {}, "trainer": {}}})
    gen, trainer = Gen("gen"), Trainer("trainer")

    @flow
    def rollout(batch):
        return gen.forward_step(batch)

    @flow
    def train(batch):
        trainer.train_step(batch)

    @flow
    def evaluate(batch):
        return gen.eval_step(batch)

    engine = Engine(rollout, train).set_dataset(list(range(8)))
    return engine, gen, evaluate


def test_runs_every_interval_and_before_training():
    engine, gen, evaluate = _engine(eval_episode_interval=2, enable_eval_before_training=True,
                                    eval_batch_size=4)
    engine.set_evaluator(Evaluator(evaluate).set_dataset(list(range(10))))
    rows = engine.learn()
    assert [r["episode"] for r in rows] == [0, 1, 2, 3, 4]
    assert [("eval/y" in r) for r in rows] == [True, False, True, False, True]
    assert rows[0] == pytest.approx({"episode": 0, "eval/y": 4.5, "eval/big": 0.4,
                                     "eval/gen/batches": 3.0, "time/eval_s": rows[0]["time/eval_s"]})
    assert gen.eval_batches == [4, 4, 2] * 3  # eval_batch_size=4 over 10 prompts, last partial
    assert gen.datasets_built == [False, True]  # the eval dataset is built once


def test_post_process_and_evaluator_batch_size_win():
    engine, gen, evaluate = _engine(eval_episode_interval=4, eval_batch_size=4)
    seen = []

    def post(outputs):
        seen.append(len(outputs))
        return {"total": float(sum(o["y"].sum() for o in outputs))}

    engine.set_evaluator(Evaluator(evaluate, batch_size=5).set_post_process_func(post)
                         .set_dataset(list(range(10))))
    rows = engine.learn()
    assert rows[-1]["eval/total"] == 45.0 and "eval/y" not in rows[-1]
    assert seen == [2] and gen.eval_batches == [5, 5]
    assert engine.evaluate()["eval/total"] == 45.0  # on demand, too


def test_usage_errors():
    engine, _, evaluate = _engine(eval_episode_interval=1)
    with pytest.raises(ConfigError, match="no evaluator"):
        engine.evaluate()
    engine.set_evaluator(Evaluator(evaluate))
    with pytest.raises(ConfigError, match="evaluator has no prompts"):
        engine.learn()
    with pytest.raises(ConfigError, match="set_evaluator must be called before learn"):
        engine.set_evaluator(Evaluator(evaluate))
    with pytest.raises(TypeError, match="must be a @flow function"):
        Evaluator(lambda b: b)


def test_grpo_accuracy_on_held_out_problems():
    cfg = config(TINY_GRPO, num_episode=2, eval_episode_interval=1,
                 enable_eval_before_training=True)
    engine = build_grpo(cfg, with_evaluator=False)
    from fixtures.tiny_grpo import accuracy_by_split, split_problems

    _, held_out = split_problems()
    outputs = []

    def post(outs):
        outputs.append(outs)
        return accuracy_by_split(outs)

    mods = engine.modules

    @flow
    def evaluate(batch):
        out = mods["policy"].eval_step(batch)
        return out, mods["reward"].eval_step(out)

    engine.set_evaluator(Evaluator(evaluate, post).set_dataset(held_out))
    rows = engine.learn()
    assert [r["episode"] for r in rows] == [0, 1, 2]
    for row, outs in zip(rows, outputs):
        scores = torch.cat([o["score"] for o in outs])
        assert len(scores) == len(held_out) == 10  # every held-out problem, once
        assert set(sum((o["split"] for o in outs), [])) == {"held_out"}
        assert row["eval/accuracy_held_out"] == pytest.approx(scores.mean().item())
        assert row["eval/reward/accuracy"] == pytest.approx(scores.mean().item())
        assert 0.0 <= row["eval/accuracy_held_out"] <= 1.0
    # the scores are the exact-match rule on the decoded responses
    tok, out = mods["reward"].tokenizer, outputs[-1][0]
    for resp, mask, answer, score in zip(out["response"], out["response_mask"], out["answer"],
                                         out["score"]):
        assert math_answer_match(tok.decode(resp[: int(mask.sum())]), answer) == score


def test_evaluation_does_not_change_training():
    plain = build_grpo(config(TINY_GRPO, num_episode=3), with_evaluator=False)
    plain_rows = plain.learn()
    evaluated = build_grpo(config(TINY_GRPO, num_episode=3, eval_episode_interval=1,
                                  enable_eval_before_training=True))
    rows = evaluated.learn()
    assert [r["episode"] for r in rows] == [0, 1, 2, 3]
    strip = [{k: v for k, v in r.items() if not k.startswith("eval/")} for r in rows[1:]]
    assert comparable(strip) == comparable(plain_rows)
    a, b = module_tensors(plain), module_tensors(evaluated)
    for name in a:
        for key in a[name].get("model", {}):
            assert torch.equal(a[name]["model"][key], b[name]["model"][key]), (name, key)
