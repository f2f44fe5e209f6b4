"""Reward functions written into tmp dirs by the tests: one behaviour per completion text."""

from __future__ import annotations

from pathlib import Path

#: "boom" raises, "hang" sleeps past any timeout, "die" kills its process, "short" returns
#: too few scores, "text" a string, "nan" NaN; anything else scores 1.0 when it equals answer.
BEHAVIOURS = '''
import math, os, time

def score(prompts, completions, answer, **columns):
    c = completions[0]
    if c == "boom":
        raise ValueError("no score for boom")
    if c == "hang":
        time.sleep(60)
    if c == "die":
        os._exit(3)
    if c == "short":
        return [1.0] * (len(completions) - 1)
    if c == "text":
        return "1.0"
    if c == "nan":
        return [math.nan] * len(completions)
    return [float(x == a) for x, a in zip(completions, answer)]

def only_answer(prompts, completions, answer):
    return [float(len(a)) for a in answer]

def pid(prompts, completions, **columns):
    return [float(os.getpid())] * len(completions)

not_a_function = 3

def one_arg(completions):
    return [0.0] * len(completions)
'''


def write_rewards(directory: Path, name: str = "rewards.py") -> Path:
    """``directory/name`` holding :data:`BEHAVIOURS`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(BEHAVIOURS)
    return path
