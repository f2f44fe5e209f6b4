"""``FunctionReward``: a user's reward function as a model of the flow.

>>> reward = FunctionReward("reward", RewardConfig(function="rewards.py:score"),
...                         base_dir=".", tokenizer_path="./my_model")

Completions are decoded without special tokens (:func:`flowrl.rewards.decode_completions`)
and scored by ``fn(prompts, completions, **columns)`` in a :class:`~flowrl.rewards.RewardPool`
(per-call timeout; a call that raises or times out scores ``error_score`` and is counted).
The pool opens in ``setup`` (process mode starts its workers there) and closes in
``shutdown``, which the engine calls when it is torn down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flowrl.errors import ConfigError
from flowrl.models.base import BaseModule, outputs
from flowrl.models.builtin.inference import require_keys
from flowrl.models.hf import load_tokenizer
from flowrl.rewards import RewardConfig, RewardPool, decode_completions, resolve_reward_spec

#: How each pool metric adds up over an episode's calls (logged as ``<model>/<metric>``).
METRIC_REDUCE = {"reward/calls": "sum", "reward/errors": "sum", "reward/timeouts": "sum",
                 "reward/failed_samples": "sum", "time/reward_s": "sum", "reward/mean": "mean"}

#: Columns the function gets positionally (as prompts), not again by name.
_NOT_COLUMNS = frozenset({"prompt_text"})


class FunctionReward(BaseModule):
    """``forward_step`` -> ``score`` ``[B]`` (float32) of ``response``; ``baseline_step`` ->
    ``baseline_score`` of ``baseline_response`` (ReMax). Prompts given to the function are
    the ``prompt_text`` column (else the decoded prompt); every other non-tensor column of
    the batch (``answer`` ...) is passed by name."""

    def __init__(self, name: str, reward: RewardConfig, base_dir: str | Path | None = None,
                 tokenizer_path: str | Path | None = None) -> None:
        super().__init__(name)
        if not isinstance(reward, RewardConfig):
            raise ConfigError(f"models.{name}: FunctionReward takes a RewardConfig as reward=, "
                              f"got a {type(reward).__name__}")
        if tokenizer_path is None:
            raise ConfigError(f"models.{name}: FunctionReward needs tokenizer_path= (the "
                              f"policy's model dir) to decode completions")
        self.reward = reward
        self.base_dir = base_dir
        self.tokenizer_path = Path(tokenizer_path)
        self.ref = resolve_reward_spec(reward.function, base_dir)  # a bad spec fails now
        self.pool: RewardPool | None = None
        self.tokenizer: Any = None

    # ---- life cycle -------------------------------------------------------------------------
    def setup(self) -> None:
        if not (self.tokenizer_path / "tokenizer_config.json").is_file():
            raise ConfigError(f"models.{self.name}: no tokenizer in {self.tokenizer_path} "
                              f"(tokenizer_config.json) to decode completions with")
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.pool = RewardPool(self.reward, self.base_dir)

    def shutdown(self) -> None:
        """Stop the pool's worker processes (safe to call twice)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def reset(self) -> None:
        self.shutdown()
        super().reset()

    # ---- steps ------------------------------------------------------------------------------
    def _score_responses(self, batch: dict, method: str, response: str) -> torch.Tensor:
        """Scores of ``batch[response]`` (masked by ``<response>_mask``), one per row."""
        require_keys(self.name, method, batch, (response, f"{response}_mask"))
        if self.pool is None:
            raise ConfigError(f"models.{self.name}: {method} before setup (the reward pool "
                              f"opens in setup)")
        completions = decode_completions(self.tokenizer, batch[response], batch[f"{response}_mask"])
        n = len(completions)
        prompts = batch.get("prompt_text")
        if prompts is None:
            require_keys(self.name, method, batch, ("prompt", "prompt_mask"))
            prompts = decode_completions(self.tokenizer, *_right_aligned(batch))
        columns = {k: v for k, v in batch.items() if k not in _NOT_COLUMNS
                   and isinstance(v, (list, tuple)) and len(v) == n}
        result = self.pool.score(list(prompts), completions, **columns)
        for key, value in result.metrics.items():
            self.log(key, value, METRIC_REDUCE.get(key, "mean"))
        return torch.tensor(result.scores, dtype=torch.float32)

    @outputs("score")
    def forward_step(self, batch: dict, iteration: int = 0) -> dict:
        return {"score": self._score_responses(batch, "forward_step", "response")}

    @outputs("baseline_score")
    def baseline_step(self, batch: dict, iteration: int = 0) -> dict:
        return {"baseline_score": self._score_responses(batch, "baseline_step",
                                                       "baseline_response")}


def _right_aligned(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts as (ids, mask) whose real tokens come first, for decoding."""
    mask = batch["prompt_mask"].long()
    order = torch.sort(1 - mask, dim=1, stable=True).indices
    return torch.gather(batch["prompt"], 1, order), torch.gather(mask, 1, order)
