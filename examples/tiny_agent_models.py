"""The tasks of the tiny agent examples: a calculator tool and guess-the-number.

The model side (a TinyGPT policy restricted to a few action tokens, its reference, GRPO
advantages of the episode return, the trainer) is :mod:`flowrl.agents.tiny`; this file holds
what a user writes for a task: tools, environments, data, and the agent module that ties an
environment to the policy.
"""

from __future__ import annotations

import random
import re

from flowrl.agents import Environment, MarkerToolCallParser, StepResult, Tool, ToolEnvironment
from flowrl.agents.tiny import AgentTrainer, GroupAdvantage, TinyAgent, TinyReference
from flowrl.engines.rewards import math_answer_match

__all__ = ["CalculatorAgent", "CalculatorEnv", "GuessAgent", "GuessEnv", "AgentTrainer",
           "GroupAdvantage", "TinyReference", "calculate", "make_problems", "make_games",
           "summarise"]

# ---- calculator ---------------------------------------------------------------------------
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



# ---- guess the number ---------------------------------------------------------------------
class GuessEnv(Environment):
    """Guess-the-number with higher/lower feedback."""

    def __init__(self, turn_cost: float = 0.1) -> None:
        self.turn_cost, self.secret, self.turns = turn_cost, 0, 0

    def reset(self, sample: dict) -> str:
        self.secret, self.turns = int(sample["secret"]), 0
        return ""

    def step(self, action: str) -> StepResult:
        self.turns += 1
        if not action.isdigit():  # the action vocabulary allows EOS: an empty guess
            return StepResult("", 0.0, True, {"invalid": 1})
        guess = int(action)
        if guess == self.secret:
            return StepResult("", 1.0 - self.turn_cost * (self.turns - 1), True)
        return StepResult("+" if self.secret > guess else "-")


class GuessAgent(TinyAgent):
    class Args(TinyAgent.Args):
        turn_cost: float = 0.1
        actions: str = "0123456789"

    def make_environment(self, sample):
        return GuessEnv(self.typed_args.turn_cost)


def make_games(copies: int = 4) -> list[dict]:
    return [{"prompt": "guess", "secret": s} for s in range(10)] * copies



def summarise(history: list[dict], keys: tuple[str, ...],
              prefix: str = "policy/agent/") -> dict[str, tuple[float, float]]:
    """(first, last) means of ``keys`` over the first and last fifth of the run."""
    k = max(1, len(history) // 5)
    out = {}
    for key in keys:
        vals = [r[prefix + key] for r in history]
        out[key] = (sum(vals[:k]) / k, sum(vals[-k:]) / k)
    return out
