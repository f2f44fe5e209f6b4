"""One reward call: pass the columns the function accepts, check what it returns.

Shared by every mode (inline, threads, worker processes), so a call fails the same way
wherever it runs: any problem becomes a :class:`RewardCallError` whose message names the
function; the pool turns it into ``error_score`` for the call's samples and counts it.
"""

from __future__ import annotations

import inspect
import math
import numbers
import traceback
from typing import Any, Mapping, Sequence

from flowrl.errors import FlowRLError
from flowrl.rewards.loading import RewardFn


class RewardCallError(FlowRLError):
    """One reward call raised or returned something that is not one float per sample."""


def accepted_columns(fn: RewardFn, columns: Mapping[str, Any]) -> dict[str, Any]:
    """The columns ``fn`` can take: all of them with ``**kwargs``, else those it names."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return dict(columns)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(columns)
    return {k: v for k, v in columns.items() if k in params}


def check_scores(result: Any, n: int, name: str) -> list[float]:
    """``result`` as ``n`` finite floats, or a :class:`RewardCallError` saying what is wrong."""
    if hasattr(result, "tolist") and not isinstance(result, (list, tuple)):
        result = result.tolist()  # numpy arrays and torch tensors
    if isinstance(result, (str, bytes)) or not isinstance(result, Sequence):
        raise RewardCallError(f"reward function '{name}' returned a {type(result).__name__}; "
                              f"expected a list of {n} floats")
    if len(result) != n:
        raise RewardCallError(f"reward function '{name}' returned {len(result)} scores for "
                              f"{n} completions")
    out = []
    for i, v in enumerate(result):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise RewardCallError(f"reward function '{name}' returned a {type(v).__name__} "
                                  f"at position {i}; expected a float")
        if not math.isfinite(v):
            raise RewardCallError(f"reward function '{name}' returned {v} at position {i}")
        out.append(float(v))
    return out


def run_reward(fn: RewardFn, name: str, prompts: list, completions: list,
               columns: Mapping[str, Any]) -> list[float]:
    """``fn(prompts, completions, **columns)`` checked; raises only :class:`RewardCallError`."""
    try:
        result = fn(prompts, completions, **accepted_columns(fn, columns))
    except Exception as err:
        frames = traceback.extract_tb(err.__traceback__)[1:]  # the user's frames only
        where = "".join(traceback.format_list(frames[-2:])).rstrip()
        raise RewardCallError(f"reward function '{name}' raised {type(err).__name__}: "
                              f"{err}\n{where}") from err
    return check_scores(result, len(completions), name)
