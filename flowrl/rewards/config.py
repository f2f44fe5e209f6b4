"""The ``reward:`` section: which function scores completions and how it is run."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flowrl.config.sections import validate_section

#: How calls run. ``process``: a pool of spawned worker processes; a call past its timeout has
#: its worker killed and replaced (the only mode that can stop a hung function). ``thread``:
#: threads of this process; a call past its timeout is scored ``error_score`` but its thread
#: is left running. ``inline``: in the caller, one call after another, no timeout (cheap pure
#: functions; debuggers and tracebacks work as usual).
RewardMode = Literal["process", "thread", "inline"]


class RewardConfig(BaseModel):
    """A reward function and how to run it.

    >>> RewardConfig(function="rewards.py:score", timeout_s=5, error_score=-1.0)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: str = Field(description="'file.py:fn' (relative to the config file's directory) "
                                      "or 'package.module:fn'")
    timeout_s: float = Field(30.0, gt=0, description="seconds one call may take")
    error_score: float = Field(0.0, description="score of every sample of a call that raised, "
                                                "timed out or returned a wrong value")
    num_workers: int = Field(4, ge=1, description="concurrent calls (processes or threads)")
    mode: RewardMode = "process"
    call_batch_size: int | None = Field(
        None, ge=1, description="samples per call; default: the batch split evenly over "
                                "the workers")


def parse_reward_config(data: Any) -> RewardConfig:
    """The ``reward:`` section as a :class:`RewardConfig`; errors are ``ConfigError``s naming
    ``reward.<field>``."""
    return validate_section(RewardConfig, data, "reward")
