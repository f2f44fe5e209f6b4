"""Tiny agent on CPU: guess a secret digit from "higher"/"lower" feedback.

    python examples/agent_guess.py -c examples/agent_guess.yaml

The secret is a digit 0-9 the policy never sees. Each turn the policy says one digit; the
environment answers ``+`` (the secret is higher), ``-`` (lower), or ends the episode when
the guess is right, with a final reward that shrinks with the turns used
(``1 - turn_cost * (turns - 1)``). Within a few minutes the policy learns a search: its
first guess moves to the middle and its follow-ups use the feedback. Printed: mean reward,
success rate and turns, first vs last episodes, and the seconds taken.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import flowrl  # noqa: E402
from flowrl import GRPOEngine  # noqa: E402
from tiny_agent_models import (AgentTrainer, GroupAdvantage, GuessAgent,  # noqa: E402
                               make_games, summarise)


def build(config=None):
    flowrl.init(config)
    engine = GRPOEngine(GuessAgent("policy"), None, GroupAdvantage("advantage"),
                        AgentTrainer("trainer"))
    engine.set_dataset(make_games())
    return engine


if __name__ == "__main__":
    torch.set_num_threads(1)
    start = time.time()
    engine = build(None if "-c" in sys.argv else Path(__file__).with_name("agent_guess.yaml"))
    history = engine.learn()
    for key, (a, b) in summarise(history, ("final_reward", "truncated", "turns")).items():
        print(f"{key}: first fifth {a:.3f} -> last fifth {b:.3f}")
    print(f"{len(history)} episodes in {time.time() - start:.0f}s")
