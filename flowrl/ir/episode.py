"""The shape of one episode (iteration), defined once.

An episode runs its roles in :data:`ROLE_ORDER`: ``rollout`` ``k`` times
(``sample_per_episode / generation_batch_size`` batches), ``train`` ``m`` times
(``num_training_epoch * sample_per_episode / train_global_batch_size`` optimizer steps), one
``sync`` (trainer weights -> inference twins) and, after some episodes, ``eval``. The memory,
offload, residency, timeline and report code and the episode loop read the order, the run
counts and what may precede each role from an :class:`EpisodeSpec`. It is built from plain
numbers (see :meth:`EpisodeSpec.from_counts`), not from the config loader.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Roles in the order an episode runs them (eval, when present, follows the sync).
ROLE_ORDER = ("rollout", "train", "sync", "eval")
#: Roles whose runs the episode loop submits together, so they may overlap across devices.
PIPELINED = ("rollout",)
#: Pseudo predecessor of the first rollout: the state right after every module's setup().
ALL_RESIDENT = "<setup>"


@dataclass(frozen=True)
class EpisodeSpec:
    """Roles in order and how often each runs per episode.

    ``roles``: the roles this episode has, in :data:`ROLE_ORDER` (``sync`` always; ``eval``
    only with an eval flow). ``rollout_runs``/``train_runs``: runs per episode; ``sync`` runs
    once; ``eval`` is not counted in the iteration (it follows only some episodes).
    """

    roles: tuple[str, ...]
    rollout_runs: int
    train_runs: int

    @classmethod
    def from_counts(cls, sample_per_episode: int, generation_batch_size: int,
                    train_global_batch_size: int, num_training_epoch: int,
                    has_eval: bool = False) -> "EpisodeSpec":
        """The spec of an episode with these batch settings (``runtime_args`` numbers)."""
        roles = tuple(r for r in ROLE_ORDER if r != "eval" or has_eval)
        return cls(roles, sample_per_episode // generation_batch_size,
                   num_training_epoch * (sample_per_episode // train_global_batch_size))

    @property
    def repeats(self) -> dict[str, int]:
        """Runs per episode of each role counted in the iteration (eval is not)."""
        return {"rollout": self.rollout_runs, "train": self.train_runs, "sync": 1}

    @property
    def syncs(self) -> int:
        """Parameter syncs per episode."""
        return self.repeats["sync"]

    def pipelined(self, role: str) -> bool:
        """Whether the runs of ``role`` are submitted together (and so may overlap)."""
        return role in PIPELINED

    def predecessors(self) -> dict[str, list[str]]:
        """Roles that may run right before each role (the first listed is the usual one);
        :data:`ALL_RESIDENT` stands for the state after setup."""
        last_eval = "eval" in self.roles
        out = {"rollout": ["sync", "rollout", ALL_RESIDENT] + (["eval"] if last_eval else []),
               "train": ["rollout", "train"], "sync": ["train"], "eval": ["sync"]}
        return {r: out[r] for r in self.roles}

    def run_order(self, episodes: int = 2, runs: int = 2) -> list[str]:
        """Roles as an executor runs them over ``episodes`` episodes, each repeatable role
        ``runs`` times (enough to exercise every role-to-role transition)."""
        one = ["rollout"] * runs + ["train"] * runs + ["sync"]
        if "eval" in self.roles:
            one.append("eval")
        return one * episodes


def ordered_roles(roles) -> list[str]:
    """``roles`` sorted into episode order; unknown roles follow, in their given order."""
    roles = list(roles)
    return [r for r in ROLE_ORDER if r in roles] + [r for r in roles if r not in ROLE_ORDER]
