"""Rule-based rewards: score responses with a Python rule instead of a reward model.

GRPO on math is usually trained this way: the reward is 1 when the response's answer equals
the reference answer and 0 otherwise.
"""

from __future__ import annotations

import re
from typing import Any, Callable, get_args

import torch

from flowrl.algorithms.advantages import StdEstimator
from flowrl.engines.grpo import group_advantages
from flowrl.errors import ConfigError
from flowrl.models.base import BaseModule, outputs
from flowrl.rewards import decode_completions

Rule = Callable[[str, Any], float]

_NUMBER = re.compile(r"-?\d+")


def normalize_answer(text: str) -> str:
    """Lower-case, trim and collapse runs of spaces."""
    return " ".join(str(text).lower().split())


def exact_match(response: str, answer: Any) -> float:
    """1.0 when the whole response equals the answer (after :func:`normalize_answer`)."""
    return float(normalize_answer(response) == normalize_answer(answer))


def first_number(text: str) -> int | None:
    """The first integer in ``text`` (``"x = -12."`` -> ``-12``), or ``None``."""
    m = _NUMBER.search(text)
    return int(m.group()) if m else None


def math_answer_match(response: str, answer: Any) -> float:
    """1.0 when the response's first integer equals the integer answer, else 0.0."""
    got = first_number(response)
    return float(got is not None and got == int(answer))


class RuleReward(BaseModule):
    """A reward "model" that is a rule: ``rule(response_text, answer) -> float``.

    It decodes ``response`` (masked by ``response_mask``) with ``tokenizer.decode``, special
    tokens skipped, and reads
    each sample's reference answer from ``data[answer_key]``. ``forward_step`` (rollout) also
    returns GRPO ``advantages`` over groups of ``runtime_args.num_inference_per_prompt``
    consecutive samples; ``eval_step`` returns ``score`` only. It logs ``score`` (mean) and
    ``accuracy`` (fraction of samples scoring at least ``correct_at``).

    Group normalisation (:func:`flowrl.engines.grpo.group_advantages`): ``group_std`` is
    ``"population"`` (divide the variance by G, DeepSeekMath/veRL; the default) or
    ``"unbiased"`` (G - 1, TRL); ``group_scale=False`` only centres the scores (Dr. GRPO);
    ``group_eps`` is added to the std.

    Raises:
        ConfigError: an unknown ``group_std`` or a negative ``group_eps``.
    """

    def __init__(self, name: str, tokenizer: Any, rule: Rule = exact_match,
                 answer_key: str = "answer", correct_at: float = 1.0,
                 group_std: StdEstimator = "population", group_scale: bool = True,
                 group_eps: float = 1e-6) -> None:
        super().__init__(name)
        if group_std not in get_args(StdEstimator):
            raise ConfigError(f"RuleReward '{name}': group_std must be one of "
                              f"{', '.join(map(repr, get_args(StdEstimator)))}, got {group_std!r}")
        if not group_eps >= 0:
            raise ConfigError(f"RuleReward '{name}': group_eps must be >= 0, got {group_eps!r}")
        self.tokenizer, self.rule = tokenizer, rule
        self.answer_key, self.correct_at = answer_key, correct_at
        self.group_std, self.group_scale, self.group_eps = group_std, group_scale, group_eps

    def texts(self, data: dict) -> list[str]:
        # Special tokens skipped: a Hugging Face tokenizer would otherwise decode '6<eos>'.
        return decode_completions(self.tokenizer, data["response"], data["response_mask"])

    def score(self, data: dict) -> torch.Tensor:
        if self.answer_key not in data:
            raise KeyError(f"'{self.name}' needs the reference answers under key "
                           f"'{self.answer_key}'; the batch has {sorted(data)}")
        answers = data[self.answer_key]
        scores = torch.tensor([float(self.rule(t, a)) for t, a in zip(self.texts(data), answers)])
        self.log("score", scores.mean().item())
        self.log("accuracy", (scores >= self.correct_at).float().mean().item())
        return scores

    @outputs("score", "advantages")
    def forward_step(self, data: dict, iteration: int = 0) -> dict:
        scores = self.score(data)
        adv = group_advantages(scores, self.runtime_args.num_inference_per_prompt,
                               scale=self.group_scale, std=self.group_std, eps=self.group_eps)
        return {"score": scores, "advantages": adv}

    @outputs("score")
    def eval_step(self, data: dict, iteration: int = 0) -> dict:
        return {"score": self.score(data)}
