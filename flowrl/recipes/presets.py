"""What each algorithm name means: its family (which engine file runs it), the data it reads,
and the ``algorithm:`` defaults it sets (a user's explicit keys win, see :func:`apply_preset`).

The values are the papers' (or, where a paper leaves one open, the reference
implementation's):

* **ppo** -- Schulman et al. 2017 (clip 0.2); GAE (Schulman et al. 2016) with gamma 1 and
  lambda 0.95 and a KL penalty in the reward of 0.02 as in InstructGPT (Ouyang et al. 2022)
  and OpenRLHF; a value model (the critic).
* **grpo** -- DeepSeekMath (Shao et al. 2024, sec. 4.1): group-normalised outcome
  advantages, the clipped loss averaged per sequence, and the k3 KL estimator in the loss
  with beta = 0.04.
* **dapo** -- Yu et al. 2025: clip-higher (eps_low 0.2, eps_high 0.28), token-level loss,
  soft overlong punishment (L_cache = 1/5 of the generation budget: 4096 of 20480 in the
  paper), no KL term, and dynamic sampling: groups whose rewards do not vary are dropped and
  more are generated until the batch is full (the episode loop refills,
  :mod:`flowrl.runtime.dynamic_sampling`; synchronous loop only).
* **dr_grpo** -- Liu et al. 2025 ("Understanding R1-Zero-Like Training"): no std division
  in the advantage, the token sum divided by a constant (the generation budget), no KL.
* **gspo** -- Zheng et al. 2025: sequence-level importance ratio clipped to
  [1 - 3e-4, 1 + 4e-4], no KL.
* **rloo** -- Ahmadian et al. 2024: leave-one-out baseline over k samples, KL in the reward
  (k1, beta 0.05 as in TRL's RLOOTrainer).
* **reinforce_pp** -- Hu 2025 (REINFORCE++): KL in the reward (k1, beta 0.01 as in OpenRLHF),
  returns whitened over the batch, PPO-clip 0.2 on tokens.
* **remax** -- Li et al. 2023: the reward of the greedy response to the same prompt as the
  baseline; the KL penalty in the reward as in its RLHF setup (k1, beta 0.01, OpenRLHF's
  default).
* **dpo** -- Rafailov et al. 2023: sigmoid loss, beta 0.1.
* **online_dpo** -- Guo et al. 2024 (OAIF): best-vs-worst of n samples ranked by the reward,
  DPO with beta 0.1.
* **sft** -- negative log-likelihood of the completion tokens.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

from flowrl.errors import ConfigError

Family = Literal["grpo", "ppo", "remax", "dpo", "online_dpo", "sft"]


@dataclass(frozen=True)
class Preset:
    """One algorithm name: the engine family that runs it, the data kind it reads, whether
    it samples a group of responses per prompt, and its ``algorithm:`` defaults."""

    family: Family
    data_kind: Literal["rl", "preference", "sft"] = "rl"
    groups: bool = False  # needs runtime_args.num_inference_per_prompt >= 2
    algorithm: dict[str, Any] = field(default_factory=dict)


def _kl(coef: float, estimator: str, placement: str) -> dict[str, Any]:
    return {"coef": coef, "estimator": estimator, "placement": placement}


PRESETS: dict[str, Preset] = {
    "ppo": Preset("ppo", algorithm={
        "advantage": {"estimator": "gae", "options": {"gamma": 1.0, "lam": 0.95}},
        "policy_loss": {"name": "ppo", "options": {"clip_low": 0.2}},
        "kl": _kl(0.02, "k1", "reward")}),
    "grpo": Preset("grpo", groups=True, algorithm={
        "advantage": {"estimator": "grpo"},
        "policy_loss": {"name": "grpo", "options": {"clip_low": 0.2}},
        "kl": _kl(0.04, "k3", "loss")}),
    "dapo": Preset("grpo", groups=True, algorithm={
        "advantage": {"estimator": "grpo"},
        "policy_loss": {"name": "dapo", "options": {"clip_low": 0.2, "clip_high": 0.28}},
        "kl": _kl(0.0, "k3", "loss"),
        "dynamic_sampling": {"enabled": True},
        "overlong": {"buffer_fraction": 0.2}}),   # resolved against max_new_tokens below
    "dr_grpo": Preset("grpo", groups=True, algorithm={
        "advantage": {"estimator": "dr_grpo"},
        "policy_loss": {"name": "dr_grpo"},        # max_length: the generation budget
        "kl": _kl(0.0, "k3", "loss")}),
    "gspo": Preset("grpo", groups=True, algorithm={
        "advantage": {"estimator": "grpo"},
        "policy_loss": {"name": "gspo", "options": {"clip_low": 3e-4, "clip_high": 4e-4}},
        "kl": _kl(0.0, "k3", "loss")}),
    "rloo": Preset("grpo", groups=True, algorithm={
        "advantage": {"estimator": "rloo"},
        "policy_loss": {"name": "ppo", "options": {"clip_low": 0.2}},
        "kl": _kl(0.05, "k1", "reward")}),
    "reinforce_pp": Preset("grpo", algorithm={
        "advantage": {"estimator": "reinforce_pp", "options": {"gamma": 1.0}},
        "policy_loss": {"name": "ppo", "options": {"clip_low": 0.2}},
        "kl": _kl(0.01, "k1", "reward")}),
    "remax": Preset("remax", algorithm={
        "advantage": {"estimator": "remax"},
        "policy_loss": {"name": "ppo", "options": {"clip_low": 0.2}},
        "kl": _kl(0.01, "k1", "reward")}),
    "dpo": Preset("dpo", data_kind="preference", algorithm={"beta": 0.1, "dpo_loss": "sigmoid"}),
    "online_dpo": Preset("online_dpo", groups=True,
                         algorithm={"beta": 0.1, "dpo_loss": "sigmoid"}),
    "sft": Preset("sft", data_kind="sft"),
}

#: Every algorithm ``flowrl train`` knows, in the order the docs list them.
ALGORITHMS: tuple[str, ...] = tuple(PRESETS)

#: Sections whose registered name decides which options are valid: a user who picks another
#: name gets none of the preset's options for that section.
_NAMED = {"advantage": "estimator", "policy_loss": "name"}


def preset(name: Any, where: str = "algorithm.name") -> Preset:
    """The preset of ``name``; an unknown name is a ConfigError with a "did you mean"."""
    if isinstance(name, str) and name in PRESETS:
        return PRESETS[name]
    hint = difflib.get_close_matches(str(name), ALGORITHMS, n=1)
    raise ConfigError(f"{where}: unknown algorithm {name!r}"
                      + (f"; did you mean '{hint[0]}'?" if hint else "")
                      + f" (known: {', '.join(ALGORITHMS)})")


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` written over it, recursively (``top`` wins; neither is changed)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_preset(user: dict[str, Any], max_new_tokens: int | None) -> dict[str, Any]:
    """The ``algorithm:`` section with the preset of ``user['name']`` under the user's keys.

    ``max_new_tokens`` (the policy's generation budget) resolves the budget-relative
    defaults: Dr. GRPO's constant normaliser and DAPO's overlong window.
    """
    defaults = copy.deepcopy(preset(user.get("name")).algorithm)
    for section, key in _NAMED.items():
        mine = user.get(section)
        if isinstance(mine, dict) and key in mine and \
                mine[key] != defaults.get(section, {}).get(key):
            defaults.pop(section, None)  # another estimator/loss: the preset's options misfit
    fraction = defaults.get("overlong", {}).pop("buffer_fraction", None)
    if fraction is not None:
        defaults.pop("overlong")
        if max_new_tokens:  # L = the budget, L_cache = the fraction of it
            defaults["overlong"] = {"max_length": max_new_tokens,
                                    "buffer": max(1, int(max_new_tokens * fraction))}
    loss = defaults.get("policy_loss", {})
    if loss.get("name") == "dr_grpo" and max_new_tokens:
        loss.setdefault("options", {})["max_length"] = max_new_tokens
    return deep_merge(defaults, user)
