"""The episode loop (ChatLearn semantics), independent of which executor runs the flows.

Per episode, the roles of its :class:`~flowrl.ir.EpisodeSpec` in order: ``sample_per_episode``
prompts -> rollout flow in ``generation_batch_size`` chunks (the spec's rollout runs) ->
replay buffer -> ``num_training_epoch`` passes of global batches (lists of micro-batches)
through the train flow -> parameter sync -> eval every ``eval_episode_interval`` episodes ->
checkpoint every ``save_episode_interval`` episodes.

With ``num_inference_per_prompt = n > 1`` each prompt batch of ``generation_batch_size / n``
prompts is expanded so every prompt appears n times in a row (a GRPO group): the rollout flow
always sees ``generation_batch_size`` samples and ``sample_per_episode`` counts samples.

Checkpoints hold what makes a resumed run continue bit for bit: the modules' states (the
executor's ``module_states()``, i.e. each module's ``state_dict_for_checkpoint``), the
episode and iteration counters, the prompt stream's position, the replay buffer, the global
RNG states and the metrics history (see :mod:`flowrl.runtime.checkpoint`), and, with
``max_staleness >= 1``, the rollouts generated ahead (with their versions).

Every rollout sample gets ``weight_version``, the version of the weights that generated it
(see :mod:`flowrl.runtime.staleness`). With ``runtime_args.max_staleness = k >= 1`` episodes
follow the pipelined order of :mod:`flowrl.ir.episode` (:meth:`EpisodeRunner._pipelined`);
``k = 0`` runs the synchronous code path unchanged. An episode's row reports the rollout
metrics of the samples it trained (generated up to ``k`` versions earlier), plus
``staleness/mean|max``; its ``time/rollout_s`` is the time the loop spent submitting and
waiting for that rollout (its generation time in the local runtime; with Ray the part not
hidden behind training), and ``time/rollout_wait_s`` what the loop waited for rollouts in it.

With DAPO's dynamic sampling on (``dynamic_sampling`` settings enabled; ``k = 0`` only) the
rollout phase drops groups whose scores do not vary and refills from the same prompt stream
(:mod:`flowrl.runtime.dynamic_sampling`); off, the loop is unchanged.

The rollout phase lives in :mod:`flowrl.runtime.episode_rollout`, the pipelined episode in
:mod:`flowrl.runtime.episode_pipeline` and checkpoint/resume in
:mod:`flowrl.runtime.episode_checkpoint` (mixins of :class:`EpisodeRunner`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flowrl.algorithms.settings import DynamicSamplingSettings
from flowrl.config import FlowRLConfig
from flowrl.errors import FlowRLError
from flowrl.models.base import BaseModule
from flowrl.runtime.checkpoint import CheckpointManager, preserved_rng
from flowrl.compiler.resources import episode_spec
from flowrl.runtime.data import PromptStream
from flowrl.runtime.dynamic_sampling import DynamicSampler
from flowrl.runtime.episode_checkpoint import CheckpointingMixin
from flowrl.runtime.episode_pipeline import PipelineMixin
from flowrl.runtime.episode_rollout import RolloutMixin, repeat_samples
from flowrl.runtime.protocol import Executor, FlowResult
from flowrl.runtime.metrics import MetricsLogger, aggregate
from flowrl.runtime.replay import ReplayBuffer
from flowrl.runtime.staleness import RolloutQueue

__all__ = ["EpisodeRunner", "repeat_samples"]


class EpisodeRunner(CheckpointingMixin, RolloutMixin, PipelineMixin):
    """Drives episodes through an executor, logs one metrics row per episode, evaluates and
    checkpoints at the configured intervals, and resumes from a checkpoint (the rollout phase,
    the pipelined k >= 1 episode and checkpointing live in the mixins' files)."""

    def __init__(self, executor: Executor, config: FlowRLConfig, prompts: PromptStream,
                 logger: MetricsLogger, evaluate: Callable[[int], dict[str, float]] | None = None,
                 modules: dict[str, BaseModule] | None = None,
                 checkpoints: CheckpointManager | None = None,
                 dynamic_sampling: DynamicSamplingSettings | None = None) -> None:
        self.executor, self.config, self.prompts = executor, config, prompts
        self.logger, self.evaluate = logger, evaluate
        self.modules = modules or {}
        self.checkpoints = checkpoints
        self.args = config.runtime_args
        #: the episode's shape: role order, rollout runs, syncs (read here, not re-derived)
        self.spec = episode_spec(self.args, has_eval=evaluate is not None)
        self.buffer = ReplayBuffer()
        #: rollouts generated ahead: episode -> (tagged samples, their rollout metrics)
        self.queue = RolloutQueue(self.spec.max_staleness)
        self.horizon = self.args.num_episode  # episodes the pipeline fills up to
        self._waited = 0.0  # seconds this episode waited for rollouts (pipelined)
        self.train_iteration = 0
        self.episode = 0  # episodes completed
        #: the engine's callback hooks: after each optimizer step (step, its metrics) and
        #: after each episode's row (episode, row) -> True to stop after this episode
        self.on_train_step: Callable[[int, dict[str, float]], None] | None = None
        self.on_episode_end: Callable[[int, dict[str, Any]], bool] | None = None
        #: DAPO's dynamic sampling (None: off, the rollout phase keeps every sample)
        self.sampler = DynamicSampler(dynamic_sampling, self.args, len(prompts.dataset) //
                                      prompts.batch_size) \
            if dynamic_sampling is not None and dynamic_sampling.enabled else None
        self._sampling: dict[str, float] = {}  # this episode's dynamic_sampling/* metrics

    def run(self, num_episode: int | None = None) -> list[dict[str, Any]]:
        """Run episodes until ``num_episode`` (default: the config's) have completed."""
        total = num_episode if num_episode is not None else self.args.num_episode
        self.horizon = max(self.args.num_episode, total)
        rows = []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.logger.console,
                      disable=not self.args.progress, transient=False) as progress:
            if self.episode == 0 and not self.logger.history and \
                    self.args.enable_eval_before_training and self.evaluate:
                self.logger.log(0, self.run_eval(0))
                rows.append(self.logger.history[-1])
            ep_task = progress.add_task("episodes", total=total, completed=self.episode)
            while self.episode < total:
                metrics = self.run_episode(progress)
                self.episode += 1
                if self.evaluate and self.args.eval_episode_interval and \
                        self.episode % self.args.eval_episode_interval == 0:
                    metrics.update(self.run_eval(self.episode))
                self.logger.log(self.episode, metrics)
                rows.append(self.logger.history[-1])
                stop = bool(self.on_episode_end and self.on_episode_end(self.episode, rows[-1]))
                every = self.args.save_episode_interval
                if self.checkpoints is not None and every and \
                        (self.episode % every == 0 or self.episode == total or stop):
                    self.save_checkpoint()
                progress.advance(ep_task)
                if stop:
                    break
        return rows

    def run_eval(self, episode: int) -> dict[str, float]:
        """Evaluate without disturbing the training RNG streams (so eval changes no result)."""
        t0 = time.perf_counter()
        with preserved_rng():
            metrics = dict(self.evaluate(episode))
        metrics["time/eval_s"] = time.perf_counter() - t0
        return metrics

    def run_episode(self, progress: Progress | None = None) -> dict[str, float]:
        """One episode: the spec's roles in order (eval is run by :meth:`run`), timed."""
        self.executor.episode = self.episode
        if self.spec.max_staleness:
            return self._pipelined(progress)
        phases = {"rollout": self._rollout, "train": self._train, "sync": self._sync}
        entries: list[tuple[str, float, str]] = []
        seconds: dict[str, float] = {}
        syncs = []
        t_start = time.perf_counter()
        for role in self.spec.roles:
            if role not in self.spec.repeats:
                continue  # eval follows only some episodes: run() decides
            t0 = time.perf_counter()
            for res in phases[role](progress):
                entries += res.metrics
                syncs += res.syncs
            seconds[role] = time.perf_counter() - t0
        metrics = self._episode_metrics(entries, seconds, syncs, time.perf_counter() - t_start)
        metrics.update(self._sampling)
        return metrics
    def _train(self, progress: Progress | None) -> list[FlowResult]:
        """``num_training_epoch`` passes over the buffer in global batches. The number of
        batches is the buffer's (the spec's ``train_runs`` when the rollout flow keeps every
        sample; fewer when it reduces them, as online DPO's pairs do)."""
        a = self.args
        per_epoch = len(self.buffer) // a.train_global_batch_size
        if per_epoch == 0 and self.sampler is not None:
            # dynamic sampling kept too few groups: skip training, never crash (warned)
            self._sampling["dynamic_sampling/train_skipped"] = 1.0
            self.logger.console.print(self.sampler.skip_note(self.episode, len(self.buffer), a),
                                      highlight=False, soft_wrap=True)
            return []
        if per_epoch == 0:
            raise FlowRLError(
                f"the rollout flow produced {len(self.buffer)} samples this episode, fewer "
                f"than one global batch (runtime_args.train_global_batch_size="
                f"{a.train_global_batch_size}); with a flow that reduces samples (online DPO: "
                f"one pair per prompt) size the global batch to what it returns")
        task = progress.add_task(f"  train {self.episode + 1}", total=per_epoch *
                                 a.num_training_epoch) if progress else None
        results = []
        for epoch in range(a.num_training_epoch):
            gen = None
            if a.shuffle:
                gen = torch.Generator().manual_seed(
                    (a.seed * 7919 + self.episode) * 1009 + epoch)
            for global_batch in self.buffer.global_batches(
                    a.train_global_batch_size, a.train_micro_batch_size, gen):
                results.append(self.executor.run("train", global_batch, self.train_iteration))
                self.train_iteration += 1
                if self.on_train_step is not None:
                    self.on_train_step(self.train_iteration, aggregate(results[-1].metrics))
                if task is not None:
                    progress.advance(task)
        if task is not None:
            progress.remove_task(task)
        return results

    def _sync(self, progress: Progress | None) -> list[FlowResult]:
        """The spec's parameter syncs (trainer weights -> inference twins)."""
        return [self.executor.run("sync", None, self.episode) for _ in range(self.spec.syncs)]

    def _episode_metrics(self, entries: list[tuple[str, float, str]],
                         seconds: dict[str, float], syncs: list, total: float
                         ) -> dict[str, float]:
        """The episode's metrics row: aggregated call metrics, times, throughput, sync."""
        metrics = aggregate(entries)
        rollout_s = seconds.get("rollout", 0.0)
        for name, value, how in entries:
            if how == "sum" and name.endswith("tokens") and rollout_s > 0:
                metrics[f"{name}_per_s"] = metrics[name] / rollout_s
        metrics.update({f"time/{r}_s": seconds.get(r, 0.0) for r in ("rollout", "train", "sync")})
        metrics.update({"time/episode_s": total, "samples": float(len(self.buffer))})
        if syncs:
            nbytes = sum(s.bytes for s in syncs)
            metrics["sync/bytes"] = float(nbytes)
            metrics["sync/gbps"] = nbytes / max(seconds.get("sync", 0.0), 1e-9) / 1e9
        return metrics
