"""Tiny online DPO on CPU: sample 4 responses per prompt, rank them, DPO on best vs worst.

    python examples/online_dpo_tiny.py -c examples/online_dpo_tiny.yaml

The ranking rule is the PPO example's (fraction of vowels in the response), so the mean
reward of the samples rises as the policy learns from its own ranked pairs.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import flowrl  # noqa: E402
from flowrl import OnlineDPOEngine  # noqa: E402
from ppo_tiny import make_prompts  # noqa: E402
from tiny_dpo_models import DPOReference, DPOTrainer, PolicyInference, VowelPairs  # noqa: E402


def build(config=None):
    flowrl.init(config)
    engine = OnlineDPOEngine(PolicyInference("policy"), VowelPairs("reward"),
                             DPOReference("reference"), DPOTrainer("dpo_policy"))
    engine.set_dataset(make_prompts(512))
    return engine


if __name__ == "__main__":
    torch.set_num_threads(1)  # models this small run fastest on one thread
    engine = build(None if "-c" in sys.argv else Path(__file__).with_name("online_dpo_tiny.yaml"))
    history = engine.learn()
    reward = [r["reward/reward"] for r in history]
    k = max(1, len(reward) // 5)
    print(f"mean reward of samples: first {k} episodes {sum(reward[:k]) / k:.3f} -> last {k} "
          f"episodes {sum(reward[-k:]) / k:.3f}; DPO margin {history[0]['dpo_policy/margin']:.3f}"
          f" -> {history[-1]['dpo_policy/margin']:.3f}")
