"""Tiny GRPO on CPU: learn single-digit addition ("3+4=" -> "7") from an exact-match reward.

    python examples/grpo_tiny.py -c examples/grpo_tiny.yaml

Each prompt is sampled ``num_inference_per_prompt`` times; the rule-based reward (no reward
model) scores 1 for the right answer; advantages are normalised within each prompt's group.
An Evaluator measures near-greedy accuracy on held-out problems every few episodes.
"""

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import flowrl  # noqa: E402
from flowrl import Evaluator, GRPOEngine, RuleReward, flow  # noqa: E402
from flowrl.engines.rewards import math_answer_match  # noqa: E402
from flowrl.models.toy_tokenizer import ToyTokenizer  # noqa: E402
from tiny_grpo_models import (GRPOTrainer, MathPolicy, PolicyReference,  # noqa: E402
                              accuracy_by_split, make_problems)


def split_problems(seed: int = 0, n_held_out: int = 10) -> tuple[list[dict], list[dict]]:
    """The 55 problems ``a+b=`` with ``a + b <= 9``: (train, held-out), shuffled by ``seed``."""
    problems = make_problems()
    random.Random(seed).shuffle(problems)
    held_out = [{**p, "split": "held_out"} for p in problems[:n_held_out]]
    return problems[n_held_out:], held_out


def build(config=None, with_evaluator: bool = True):
    flowrl.init(config)
    policy = MathPolicy("policy")
    reference = PolicyReference("reference")
    reward = RuleReward("reward", ToyTokenizer(), rule=math_answer_match)
    trainer = GRPOTrainer("grpo_policy")
    engine = GRPOEngine(policy, reference, reward, trainer)

    @flow
    def evaluate(batch):
        out = policy.eval_step(batch)
        return out, reward.eval_step(out)

    train, held_out = split_problems()
    engine.set_dataset(train)
    if not with_evaluator:
        return engine
    # Near-greedy accuracy on every training problem and on problems never trained on.
    engine.set_evaluator(Evaluator(evaluate, accuracy_by_split).set_dataset(train + held_out))
    return engine


if __name__ == "__main__":
    torch.set_num_threads(1)  # models this small run fastest on one thread (3x on 2 cores)
    engine = build(None if "-c" in sys.argv else Path(__file__).with_name("grpo_tiny.yaml"))
    history = engine.learn()
    train_acc = [r["reward/accuracy"] for r in history if "reward/accuracy" in r]
    evals = [r for r in history if "eval/accuracy_train" in r]
    k = max(1, len(train_acc) // 5)
    print(f"rollout accuracy (sampled, T=1): first {k} episodes {sum(train_acc[:k]) / k:.3f} "
          f"-> last {k} episodes {sum(train_acc[-k:]) / k:.3f}")
    for name in ("train", "held_out"):
        print(f"eval accuracy on {name} problems (near-greedy): " + ", ".join(
            f"ep{r['episode']}={r[f'eval/accuracy_{name}']:.2f}" for r in evals))
