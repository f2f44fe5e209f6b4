"""DAPO's dynamic sampling in the episode loop (Yu et al., 2025).

After each rollout batch is scored, the groups (the ``num_inference_per_prompt`` consecutive
samples of one prompt) whose ``score`` is the same for every sample are dropped: their
group-normalised advantage is 0 and they would train nothing. The loop draws more rollout
batches from the same seeded prompt stream until the episode holds ``sample_per_episode``
samples of kept groups (cut to exactly that many, whole groups, earliest first), or
``max_batches`` rollout batches were drawn in the episode; then it trains on what was kept.
An episode with fewer kept samples than one global batch skips training (a warning and the
``dynamic_sampling/train_skipped`` metric), never a crash or a hang.

A "batch" is one rollout-flow call of ``runtime_args.generation_batch_size`` samples.
``max_batches: None`` means at most one pass over the prompt dataset per episode (and never
fewer than an episode's own batches), so a policy that solved every prompt cannot hang the
loop. The first round draws the episode's usual batches; each refill round draws as many
batches as the missing groups need if all of them were kept.

Only the synchronous loop (``runtime_args.max_staleness = 0``) refills; the settings are
checked by :func:`check_settings` when the engine is built.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from pydantic import ValidationError

from flowrl.algorithms.sampling import varying_groups
from flowrl.algorithms.settings import DynamicSamplingSettings
from flowrl.config import RuntimeArgs
from flowrl.errors import ConfigError
from flowrl.runtime.batch import Batch
from flowrl.runtime.protocol import FlowResult

#: The rollout output key holding each sample's scalar reward (the batch-key contract).
SCORE_KEY = "score"
#: How the settings are named in a config (``algorithm:`` section of ``flowrl train``).
FIELD = "algorithm.dynamic_sampling"


def as_settings(value: Any) -> DynamicSamplingSettings:
    """``value`` (settings, a dict or ``None``) as validated settings; bad ones name the field."""
    if value is None:
        return DynamicSamplingSettings()
    if isinstance(value, DynamicSamplingSettings):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{FIELD}: expected DynamicSamplingSettings or a dict, got "
                          f"{type(value).__name__}")
    try:
        return DynamicSamplingSettings.model_validate(value)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{FIELD}.{where}: {err['msg']} (got {err.get('input')!r})") from None


def check_settings(settings: DynamicSamplingSettings, args: RuntimeArgs) -> None:
    """Refuse settings the loop cannot honour, naming the fields involved."""
    if not settings.enabled:
        return
    if args.max_staleness:
        raise ConfigError(
            f"{FIELD}.enabled: dynamic sampling refills an episode's batch before it trains, "
            f"which the pipelined loop of runtime_args.max_staleness={args.max_staleness} "
            f"does not do; set runtime_args.max_staleness: 0 or {FIELD}.enabled: false")
    if args.num_inference_per_prompt < 2:
        raise ConfigError(
            f"{FIELD}.enabled: runtime_args.num_inference_per_prompt="
            f"{args.num_inference_per_prompt}; a group of one sample never varies, so every "
            f"group would be dropped (sample at least 2 per prompt)")
    runs = args.sample_per_episode // args.generation_batch_size
    if settings.max_batches is not None and settings.max_batches < runs:
        raise ConfigError(
            f"{FIELD}.max_batches={settings.max_batches} is fewer than the {runs} rollout "
            f"batches of one episode (runtime_args.sample_per_episode="
            f"{args.sample_per_episode} / generation_batch_size={args.generation_batch_size}); "
            f"raise it to at least {runs}")


class DynamicSampler:
    """Draws rollout batches for one episode and keeps the groups whose scores vary.

    ``batches_per_pass``: prompt batches in one pass over the dataset (the cap when
    ``settings.max_batches`` is ``None``). :attr:`drawn` counts every rollout batch drawn
    since the start (the rollout iteration of the next one; checkpointed).
    """

    def __init__(self, settings: DynamicSamplingSettings, args: RuntimeArgs,
                 batches_per_pass: int) -> None:
        check_settings(settings, args)
        self.group_size = args.num_inference_per_prompt
        self.batch_size = args.generation_batch_size
        self.target_groups = args.sample_per_episode // self.group_size
        self.first_round = args.sample_per_episode // args.generation_batch_size
        self.max_batches = settings.max_batches or max(self.first_round, batches_per_pass)
        self.drawn = 0

    def state_dict(self) -> dict[str, int]:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.drawn = int(state["drawn"])

    def keep(self, res: FlowResult, samples: list[dict[str, Any]]
             ) -> tuple[list[list[dict[str, Any]]], int]:
        """The varying groups of one rollout result (``samples`` are its per-sample dicts)
        and how many groups were dropped."""
        out = Batch(res.output)
        if SCORE_KEY not in out:
            raise ConfigError(
                f"{FIELD}.enabled: the rollout flow's output has no {SCORE_KEY!r} key (it "
                f"has {sorted(out)}); return the reward step's output, whose '{SCORE_KEY}' "
                f"holds one reward per sample")
        scores = torch.as_tensor(out[SCORE_KEY]).float().reshape(len(samples), -1)
        if scores.shape[1] != 1:
            raise ConfigError(f"{FIELD}.enabled: rollout output {SCORE_KEY!r} must hold one "
                              f"number per sample, got shape {tuple(scores.shape)}")
        vary = varying_groups(scores[:, 0], self.group_size).tolist()
        n = self.group_size
        groups = [samples[i * n:(i + 1) * n] for i, v in enumerate(vary) if v]
        return groups, len(vary) - len(groups)

    def collect(self, draw: Callable[[int, int], Iterable[FlowResult]],
                samples_of: Callable[[FlowResult], list[dict[str, Any]]]
                ) -> tuple[list[FlowResult], list[dict[str, Any]], dict[str, float]]:
        """One episode's rollouts: ``draw(count, first_iteration)`` runs ``count`` new
        rollout batches; returns (every result, the kept samples, the metrics)."""
        results: list[FlowResult] = []
        groups: list[list[dict[str, Any]]] = []
        dropped = batches = 0
        per_batch = self.batch_size // self.group_size
        while len(groups) < self.target_groups and batches < self.max_batches:
            missing = self.target_groups - len(groups)
            count = self.first_round if batches == 0 else math.ceil(missing / per_batch)
            count = min(count, self.max_batches - batches)
            for res in draw(count, self.drawn):
                results.append(res)
                self.drawn += 1
                batches += 1
                if res.skipped is not None:  # on_nonfinite: skip_batch dropped it
                    continue
                kept, lost = self.keep(res, samples_of(res))
                groups += kept
                dropped += lost
        surplus = max(0, len(groups) - self.target_groups)
        groups = groups[:self.target_groups]
        metrics = {"dynamic_sampling/kept_groups": float(len(groups)),
                   "dynamic_sampling/dropped_groups": float(dropped),
                   "dynamic_sampling/surplus_groups": float(surplus),
                   "dynamic_sampling/batches": float(batches),
                   "dynamic_sampling/exhausted": float(len(groups) < self.target_groups),
                   "dynamic_sampling/train_skipped": 0.0}
        return results, [s for g in groups for s in g], metrics

    def exhausted_note(self, episode: int, metrics: dict[str, float]) -> str:
        """The warning for an episode (0-based) that hit ``max_batches`` short of its groups."""
        return (f"dynamic sampling: episode {episode + 1} drew "
                f"{metrics['dynamic_sampling/batches']:.0f} rollout batches (the limit) and kept "
                f"{metrics['dynamic_sampling/kept_groups'] * self.group_size:.0f} of "
                f"{self.target_groups * self.group_size} samples; it trains on those")

    @staticmethod
    def skip_note(episode: int, kept: int, args: RuntimeArgs) -> str:
        """The warning for an episode whose kept samples fill no global batch."""
        return (f"dynamic sampling: episode {episode + 1} kept {kept} samples, fewer than one "
                f"global batch (runtime_args.train_global_batch_size="
                f"{args.train_global_batch_size}); its training is skipped")
