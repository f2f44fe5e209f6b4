"""Tiny agent on CPU: learn to call a calculator tool and copy its result.

    python examples/agent_calculator.py -c examples/agent_calculator.yaml

Each problem is a two-digit subtraction with a one-digit answer ("47-39=" -> "8"), too hard
for the tiny policy to compute. A turn is one token: a digit is the final answer (reward 1 if
right), the marker ``!`` calls the calculator tool (format ``ARG!``, see
:class:`flowrl.agents.MarkerToolCallParser`; an empty argument means "the problem on the
screen"), whose result comes back as an observation (masked out of the loss). The first
successful call earns a small per-turn reward. Printed: reward, tool-call rate and accuracy
of the first and last episodes, and the seconds taken.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import flowrl  # noqa: E402
from flowrl import GRPOEngine  # noqa: E402
from tiny_agent_models import (AgentTrainer, CalculatorAgent, GroupAdvantage,  # noqa: E402
                               make_problems, summarise)


def build(config=None):
    flowrl.init(config)
    engine = GRPOEngine(CalculatorAgent("policy"), None, GroupAdvantage("advantage"),
                        AgentTrainer("trainer"))
    engine.set_dataset(make_problems())
    return engine


if __name__ == "__main__":
    torch.set_num_threads(1)  # models this small run fastest on one thread
    start = time.time()
    engine = build(None if "-c" in sys.argv else Path(__file__).with_name("agent_calculator.yaml"))
    history = engine.learn()
    first = history[0]
    print(f"episode 1: score {first['policy/agent/score']:.3f}, accuracy "
          f"{first['policy/agent/final_reward']:.3f}, tool-call rate "
          f"{first['policy/agent/tool_call_rate']:.3f}")
    for key, (a, b) in summarise(history, ("score", "final_reward", "tool_call_rate",
                                           "turns")).items():
        print(f"{key}: first fifth {a:.3f} -> last fifth {b:.3f}")
    print(f"{len(history)} episodes in {time.time() - start:.0f}s")
