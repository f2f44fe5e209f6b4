"""Token-id bookkeeping of multi-turn trajectories.

A trajectory is the prompt's ids followed by *segments*: the ids the policy sampled in a turn
(kept exactly as sampled) and the ids of environment/tool observations (encoded once, when
they arrive). Nothing is ever decoded and re-encoded on the training path, so the tokens a
trainer sees are the tokens that were sampled (no drift at turn boundaries).

Batch layout (one row per trajectory; keys the trainers already read):

* ``prompt`` ``[B, P]`` left-padded, ``prompt_mask`` ``[B, P]``;
* ``response`` ``[B, N]``: every token after the prompt, policy and environment, right-padded;
* ``response_mask`` ``[B, N]``: the LOSS mask, 1 only on policy-sampled tokens;
* ``response_attention_mask`` ``[B, N]``: 1 on every real token (policy and environment):
  what a model must attend to when it scores the response (:func:`full_sequence`);
* ``token_rewards`` ``[B, N]``: each turn's reward on the turn's last policy token, the final
  reward on the last policy token; ``score`` ``[B]``: their sum (the return);
* ``turns`` ``[B]``: policy turns taken.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from flowrl import algorithms as algo
from flowrl.agents.errors import TrajectoryError
from flowrl.models.sequences import full_sequence  # noqa: F401 (scoring a trajectory)


@dataclass
class Trajectory:
    """One episode's ids. ``ids`` and ``policy`` run in parallel over the response."""

    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)
    policy: list[bool] = field(default_factory=list)
    turn_ends: list[int] = field(default_factory=list)  # index of each turn's last policy id
    turn_rewards: list[float] = field(default_factory=list)
    final_reward: float = 0.0
    done: bool = False
    truncated: bool = False
    counts: Counter = field(default_factory=Counter)  # this episode's info counters

    @property
    def context(self) -> list[int]:
        """Prompt + response ids so far: what the policy conditions its next turn on."""
        return self.prompt_ids + self.ids

    @property
    def turns(self) -> int:
        return len(self.turn_ends)

    def add_policy(self, ids: list[int]) -> None:
        """Append a turn's sampled ids as they are (an empty turn still counts as a turn)."""
        self.ids += ids
        self.policy += [True] * len(ids)
        self.turn_ends.append(len(self.ids) - 1)
        self.turn_rewards.append(0.0)

    def add_observation(self, ids: list[int], budget: int) -> bool:
        """Append environment ids, cut to the token ``budget``; False when it was cut."""
        room = budget - len(self.ids)
        self.ids += ids[:max(0, room)]
        self.policy += [False] * min(len(ids), max(0, room))
        return len(ids) <= room

    @property
    def score(self) -> float:
        return sum(self.turn_rewards) + self.final_reward

    def policy_ids(self) -> list[int]:
        """The ids the policy sampled, in order (what a test compares to the sampled ids)."""
        return [t for t, p in zip(self.ids, self.policy) if p]


def to_batch(trajs: list[Trajectory], pad_id: int, prompt_width: int,
             response_width: int) -> dict[str, torch.Tensor]:
    """The trajectories as a rollout batch (layout in the module docstring)."""
    b = len(trajs)
    out = {k: torch.zeros(b, w, dtype=torch.long) for k, w in
           (("prompt_mask", prompt_width), ("response_mask", response_width),
            ("response_attention_mask", response_width))}
    out["prompt"] = torch.full((b, prompt_width), pad_id, dtype=torch.long)
    out["response"] = torch.full((b, response_width), pad_id, dtype=torch.long)
    out["token_rewards"] = torch.zeros(b, response_width)
    for i, t in enumerate(trajs):
        p, n = len(t.prompt_ids), len(t.ids)
        if p > prompt_width:
            raise TrajectoryError(f"a prompt of {p} tokens (with the reset observation) is "
                                  f"longer than max_prompt_len={prompt_width}")
        if n > response_width:
            raise TrajectoryError(f"a response of {n} tokens exceeds max_response_tokens="
                                  f"{response_width}")
        if p:
            out["prompt"][i, prompt_width - p:] = torch.tensor(t.prompt_ids)
            out["prompt_mask"][i, prompt_width - p:] = 1
        if n:
            out["response"][i, :n] = torch.tensor(t.ids)
            out["response_mask"][i, :n] = torch.tensor(t.policy, dtype=torch.long)
            out["response_attention_mask"][i, :n] = 1
        for end, r in zip(t.turn_ends, t.turn_rewards):
            if end >= 0:
                out["token_rewards"][i, end] += r
        if t.turn_ends and t.turn_ends[-1] >= 0:
            out["token_rewards"][i, t.turn_ends[-1]] += t.final_reward
    out["score"] = torch.tensor([t.score for t in trajs], dtype=torch.float32)
    out["turns"] = torch.tensor([t.turns for t in trajs], dtype=torch.long)
    return out


def multi_turn_gae(token_rewards: torch.Tensor, values: torch.Tensor,
                   response_mask: torch.Tensor, gamma: float = 1.0,
                   lam: float = 0.95) -> algo.AdvantageOutput:
    """GAE over the policy's tokens only, as if the observations between turns were not there
    (0 on environment tokens): the library's ``gae`` given an attention mask (see
    :func:`flowrl.algorithms.advantages.gae`). Equal to plain GAE on single-turn rows."""
    out = algo.compute_advantages("gae", token_rewards, response_mask, values=values,
                                  gamma=gamma, lam=lam,
                                  attention_mask=torch.ones_like(response_mask))
    return algo.AdvantageOutput(out.advantages.to(token_rewards.dtype),
                                out.returns.to(token_rewards.dtype))
