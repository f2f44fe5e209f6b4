"""Tiny PPO on CPU: the ChatLearn main-file shape, reward rising within minutes.

    python examples/ppo_tiny.py -c examples/ppo_tiny.yaml
"""

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import flowrl  # noqa: E402
from flowrl import RLHFEngine  # noqa: E402
from tiny_ppo_models import (PolicyInference, PolicyReference, PolicyTrainer,  # noqa: E402
                             RewardInference, ValueInference, ValueTrainer)


def make_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    letters = "bcdfghjklmnpqrstvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 6))) for _ in range(n)]


if __name__ == "__main__":
    torch.set_num_threads(1)  # models this small run fastest on one thread (no sync overhead)
    flowrl.init(None if "-c" in sys.argv else Path(__file__).with_name("ppo_tiny.yaml"))
    policy = PolicyInference("policy")
    reference = PolicyReference("reference")
    reward = RewardInference("reward")
    value = ValueInference("value")
    ppo_policy = PolicyTrainer("ppo_policy")
    ppo_value = ValueTrainer("ppo_value")

    engine = RLHFEngine(policy, reference, reward, value, ppo_policy, ppo_value)
    engine.set_dataset(make_prompts(512))
    history = engine.learn()

    first, last = history[0]["reward/reward"], history[-1]["reward/reward"]
    print(f"mean reward: first episode {first:.3f} -> last episode {last:.3f}")
