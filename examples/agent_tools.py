"""The Python side of examples/agent_hf.yaml: a calculator tool and the answer's reward.

``flowrl train examples/agent_hf.yaml`` turns ``calculator`` into a tool (its JSON schema
comes from the signature: one required string ``expression``) and scores each episode's
final answer with ``score`` (same signature as any ``reward:`` function).
"""

import re


def calculator(expression: str) -> str:
    """Adds and subtracts integers: '47-39' -> '8'."""
    if not re.fullmatch(r"\s*\d+(\s*[-+]\s*\d+)*\s*", expression):
        raise ValueError(f"not a sum of integers: {expression!r}")
    total, sign = 0, 1
    for token in re.findall(r"\d+|[-+]", expression):
        if token in "+-":
            sign = 1 if token == "+" else -1
        else:
            total += sign * int(token)
    return str(total)


def score(prompts, completions, answer, **columns):
    """1 for the right final answer, else 0."""
    return [float(c.strip() == a) for c, a in zip(completions, answer)]
