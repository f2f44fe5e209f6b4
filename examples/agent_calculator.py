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

import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import flowrl  # noqa: E402
from flowrl import GRPOEngine  # noqa: E402
from flowrl.agents import MarkerToolCallParser, StepResult, Tool, ToolEnvironment  # noqa: E402
from flowrl.engines.rewards import math_answer_match  # noqa: E402
from tiny_agent_models import AgentTrainer, GroupAdvantage, TinyAgent  # noqa: E402

_TERM = re.compile(r"[+-]?\d+")


def calculate(expression: str) -> int:
    """Integers joined by ``+`` and ``-`` (no eval)."""
    if not re.fullmatch(r"\d+([+-]\d+)*", expression):
        raise ValueError(f"cannot evaluate {expression!r}")
    return sum(int(t) for t in _TERM.findall(expression))


CALCULATOR = Tool("calculator", calculate, {
    "type": "object", "properties": {"expression": {"type": "string", "pattern": r"^[0-9+-]+$"}},
    "required": ["expression"]}, description="adds and subtracts integers")


class CalculatorEnv(ToolEnvironment):
    """The calculator task: tool ``calculator``; reward 1 for the right final answer plus
    ``call_bonus`` for the first successful tool call."""

    def __init__(self, call_bonus: float = 0.1) -> None:
        super().__init__([CALCULATOR], MarkerToolCallParser("calculator", "expression", "!"))
        self.call_bonus, self.rewarded_call = call_bonus, False

    def prepare_arguments(self, tool: str, arguments: dict) -> dict:
        if not arguments.get("expression"):
            return {"expression": self.sample["question"]}
        return arguments

    def final_reward(self, answer: str) -> float:
        return math_answer_match(answer, self.sample["answer"])

    def step(self, action: str) -> StepResult:
        res = super().step(action)
        ok_call = res.info.get("tool_calls") and not (res.info.get("tool_errors") or
                                                      res.info.get("tool_timeouts"))
        if ok_call and not self.rewarded_call:
            self.rewarded_call, res.reward = True, self.call_bonus
        return res


class CalculatorAgent(TinyAgent):
    class Args(TinyAgent.Args):
        call_bonus: float = 0.1

    def make_environment(self, sample):
        return CalculatorEnv(self.typed_args.call_bonus)


def make_problems(seed: int = 0) -> list[dict]:
    """Every ``a-b`` with ``10 <= b <= a <= 99`` and ``a - b <= 9``, shuffled."""
    rows = [{"prompt": f"{a}-{b}=", "question": f"{a}-{b}", "answer": str(a - b)}
            for b in range(10, 100) for a in range(b, min(b + 10, 100))]
    random.Random(seed).shuffle(rows)
    return rows


def build(config=None):
    flowrl.init(config)
    agent = CalculatorAgent("policy")
    engine = GRPOEngine(agent, None, GroupAdvantage("advantage"), AgentTrainer("trainer"))
    engine.set_dataset(make_problems())
    return engine


def summarise(history: list[dict], prefix: str = "policy/agent/") -> dict[str, tuple]:
    """(first, last) episode means of the score, final reward (accuracy), tool-call rate and
    turns: the first and last fifth of the run."""
    k = max(1, len(history) // 5)
    out = {}
    for key in ("score", "final_reward", "tool_call_rate", "turns"):
        vals = [r[prefix + key] for r in history]
        out[key] = (sum(vals[:k]) / k, sum(vals[-k:]) / k)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)  # models this small run fastest on one thread
    start = time.time()
    engine = build(None if "-c" in sys.argv else Path(__file__).with_name("agent_calculator.yaml"))
    history = engine.learn()
    for key, (first, last) in summarise(history).items():
        print(f"{key}: first episodes {first:.3f} -> last episodes {last:.3f}")
    print(f"{len(history)} episodes in {time.time() - start:.0f}s")
