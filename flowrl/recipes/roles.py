"""Which models an algorithm runs, by role, and their generated ``models.<role>`` sections.

The names follow the roles (ChatLearn's policy / reference / reward / value / ppo_policy /
ppo_value, spelt for what each does):

=================  ==========================================================  ============
role               what it is                                                  weights
=================  ==========================================================  ============
``policy``         generates (vLLM or HF ``generate``); synced from ``actor``  model.path
``reference``      frozen log-probs for the KL term (absent when kl.coef = 0)  model.reference
``critic``         value head (PPO); synced from ``critic_trainer``            model.critic
``reward``         a reward model, or the ``reward:`` function (no weights)    model.reward_model
``advantage``      the algorithm's advantage math (no weights)                 --
``feed``           hands data batches on (offline DPO, SFT; no weights)        --
``actor``          trains the policy (PPO/GRPO loss, DPO, SFT)                 model.path
``critic_trainer`` trains the value head (PPO)                                 model.critic
=================  ==========================================================  ============

The weightless roles share the device (and the Ray worker) of the role whose output they
read: ``colocation_group: policy`` for policy, reward function and advantage,
``colocation_group: actor`` for actor and feed (a ``models.<role>`` key of yours wins).
"""

from __future__ import annotations

from typing import Any

#: The roles of each engine family, in flow order; "reference" is dropped when no KL term.
FAMILY_ROLES: dict[str, tuple[str, ...]] = {
    "grpo": ("policy", "reference", "reward", "advantage", "actor"),
    "remax": ("policy", "reference", "reward", "advantage", "actor"),
    "ppo": ("policy", "reference", "critic", "reward", "advantage", "actor", "critic_trainer"),
    "online_dpo": ("policy", "reward", "reference", "actor"),
    "dpo": ("feed", "actor"),  # its reference: the trainer's frozen copy of its weights
    "sft": ("feed", "actor"),
}

#: Roles without weights (the reward is one unless model.reward_model is set).
WEIGHTLESS = ("reward", "advantage", "feed")

#: Families whose reference is always needed (the DPO loss is relative to it).
_REFERENCE_ALWAYS = ("online_dpo",)


def roles(family: str, kl_coef: Any, agent: bool = False) -> tuple[str, ...]:
    """The roles ``family`` runs; without a KL term (``kl_coef == 0``) no reference; with an
    ``agent:`` no reward (the policy's environment scores its episodes)."""
    names = FAMILY_ROLES[family]
    drop = family not in _REFERENCE_ALWAYS and kl_coef == 0
    return tuple(r for r in names
                 if not (drop and r == "reference") and not (agent and r == "reward"))


def model_sections(family: str, kl_coef: Any, model: dict[str, Any],
                   agent: bool = False) -> dict[str, dict]:
    """The generated ``models:`` sections of ``family`` from the ``model:`` section (raw:
    this runs before validation, so it only copies values; the validation checks them)."""
    path = model.get("path")
    weights = {
        "policy": path, "actor": path,
        "reference": model.get("reference") or path,
        "critic": model.get("critic") or path,
        "critic_trainer": model.get("critic") or path,
        "reward": model.get("reward_model"),
    }
    names = roles(family, kl_coef, agent)
    out: dict[str, dict] = {}
    for role in names:
        section: dict[str, Any] = {}
        if weights.get(role):
            section["model_path"] = weights[role]
            if model.get("dtype") is not None:
                section["dtype"] = model["dtype"]
        out[role] = section
    # Weightless roles run where the data they read is made, on no device of their own
    # (Ray: one worker process less each): the reward function and the advantage beside the
    # policy, the feed beside the actor.
    host = "policy" if "policy" in names else "actor"
    guests = [r for r in names if r in WEIGHTLESS and not (r == "reward" and weights["reward"])]
    for role in [host, *guests] if guests else []:
        out[role]["colocation_group"] = host
    return out
