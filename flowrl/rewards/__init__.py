"""Reward functions: ``reward: {function: "rewards.py:score"}``, scored in a worker pool.

* :func:`load_reward_function` finds ``"file.py:fn"`` or ``"package.module:fn"``.
* :class:`RewardPool` runs it with a per-call timeout (:class:`RewardConfig`); failures score
  ``error_score`` and are counted (``reward/errors``, ``reward/timeouts``, ``time/reward_s``).
* :func:`decode_completions` turns completion ids into text without special tokens.
"""

from flowrl.rewards.calling import RewardCallError, check_scores
from flowrl.rewards.config import RewardConfig, parse_reward_config
from flowrl.rewards.decode import TokenizerTypeError, decode_completions
from flowrl.rewards.loading import (
    RewardFunctionError, RewardFunctionRef, load_reward_function, resolve_reward_spec)
from flowrl.rewards.pool import RewardInputError, RewardPool, RewardResult

__all__ = [
    "RewardConfig", "RewardPool", "RewardResult", "RewardFunctionRef", "RewardFunctionError",
    "RewardCallError", "RewardInputError", "TokenizerTypeError", "load_reward_function",
    "resolve_reward_spec", "check_scores", "decode_completions", "parse_reward_config",
]
