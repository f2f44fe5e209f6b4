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
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flowrl.algorithms.settings import DynamicSamplingSettings
from flowrl.config import FlowRLConfig
from flowrl.errors import FlowRLError
from flowrl.models.base import BaseModule
from flowrl.runtime.checkpoint import (Checkpoint, CheckpointManager, preserved_rng, rng_state,
                                      set_rng_state)
from flowrl.compiler.resources import episode_spec
from flowrl.runtime.batch import Batch
from flowrl.runtime.data import PromptStream
from flowrl.runtime.dynamic_sampling import DynamicSampler
from flowrl.runtime.protocol import Executor, FlowResult
from flowrl.runtime.guards import check_weights
from flowrl.runtime.resume import config_changes, config_record, flat_tensors
from flowrl.runtime.metrics import MetricsLogger, aggregate
from flowrl.runtime.replay import ReplayBuffer
from flowrl.runtime.staleness import (RolloutQueue, StalenessError, check_bound,
                                      staleness_metrics, tag_samples)


def repeat_samples(batch: dict[str, Any], n: int) -> dict[str, Any]:
    """Every sample of ``batch`` ``n`` times in a row (:meth:`Batch.repeat_interleave`)."""
    return batch if n == 1 else Batch(batch).repeat_interleave(n)


class EpisodeRunner:
    """Drives episodes through an executor, logs one metrics row per episode, evaluates and
    checkpoints at the configured intervals, and resumes from a checkpoint."""

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

    # ---- checkpoint and resume -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The loop's own state (module states are saved beside it)."""
        state = {"episode": self.episode, "train_iteration": self.train_iteration,
                 "prompts": self.prompts.state_dict(), "replay": list(self.buffer.samples),
                 "rng": rng_state(), "metrics": list(self.logger.history),
                 "in_flight": self.queue.state_dict()}
        if self.sampler is not None:
            state["dynamic_sampling"] = self.sampler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episode = int(state["episode"])
        self.train_iteration = int(state["train_iteration"])
        self.executor.episode = self.episode
        self.executor.set_weight_version(self.episode)  # one sync per finished episode
        self.queue.load_state_dict(state.get("in_flight", {}))
        self.prompts.load_state_dict(state["prompts"])
        self.buffer.clear()
        self.buffer.samples.extend(state["replay"])
        set_rng_state(state["rng"])
        self.logger.restore(state["metrics"])
        if self.sampler is not None:  # written with it off: the plain loop's batch count
            self.sampler.load_state_dict(state.get("dynamic_sampling", {
                "drawn": self.episode * self.spec.rollout_runs}))

    def module_states(self) -> dict[str, Any]:
        return self.executor.module_states()

    def load_module_states(self, states: dict[str, Any]) -> None:
        missing = sorted(set(self.modules) - set(states))
        if missing:
            raise FlowRLError(f"the checkpoint has no state for model(s) {', '.join(missing)}; "
                              f"it was written by an engine with other models")
        self.executor.load_module_states({n: states[n] for n in self.modules})

    def save_checkpoint(self) -> Path:
        """Checkpoint the state after ``self.episode`` episodes (atomically)."""
        if self.checkpoints is None:
            raise FlowRLError("no checkpoint directory: set runtime_args.output_dir or "
                              "checkpoint_dir")
        t0 = time.perf_counter()
        parts = {"runner": self.state_dict(), "config": config_record(self.config)}
        states = self.module_states()
        for name, st in states.items():  # a checkpoint never holds NaN/inf weights
            check_weights(name, dict(flat_tensors(st)), "checkpoint")
        parts.update({f"modules/{n}": st for n, st in states.items()})
        path = self.checkpoints.save(self.episode, parts)
        self.logger.console.print(f"saved checkpoint {path} ({time.perf_counter() - t0:.2f}s)",
                                  highlight=False, soft_wrap=True)
        return path

    def resume(self) -> Checkpoint | None:
        """Load the newest good checkpoint (bad ones are reported and skipped); ``None`` and a
        fresh start when there is none."""
        ckpt = self.checkpoints.load_latest() if self.checkpoints is not None else None
        if ckpt is None:
            self.logger.console.print("no checkpoint to resume from; starting at episode 1",
                                      highlight=False)
            return None
        for line in config_changes(ckpt.parts.get("config"), self.config):
            self.logger.console.print(f"resume: {line}", highlight=False, soft_wrap=True)
        self.load_module_states(ckpt.modules())
        for name, m in self.modules.items():  # optimizer settings the current config changed
            for line in getattr(m, "resume_notes", []):
                self.logger.console.print(f"resume: {name}: {line}", highlight=False,
                                          soft_wrap=True)
        self.load_state_dict(ckpt.parts["runner"])
        self.logger.console.print(f"resumed from {ckpt.path} (episode {ckpt.episode})",
                                  highlight=False, soft_wrap=True)
        return ckpt

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

    def _rollout(self, progress: Progress | None) -> list[FlowResult]:
        """The spec's rollout runs (pipelined by a distributed executor) into the buffer."""
        if self.sampler is not None:
            return self._sampled_rollout(progress)
        n_batches = self.spec.rollout_runs
        task = progress.add_task(f"  rollout {self.episode + 1}", total=n_batches) \
            if progress else None
        self.buffer.clear()
        batches = self._prompt_batches()
        results = []
        # run_many lets a distributed executor pipeline the batches across devices.
        for res in self.executor.run_many("rollout", batches, self.episode * n_batches):
            results.append(res)
            if task is not None:
                progress.advance(task)
            if res.skipped is not None:  # on_nonfinite: skip_batch dropped it (counted)
                continue
            self.buffer.samples.extend(self._samples(res, self.episode))
        if task is not None:
            progress.remove_task(task)
        check_bound(self.buffer.samples, self.episode, 0)
        return results

    def _sampled_rollout(self, progress: Progress | None) -> list[FlowResult]:
        """Dynamic sampling: rollout batches until the kept groups fill the episode (or its
        batch limit), into the buffer; each rollout batch's iteration is the count drawn."""
        n = self.args.num_inference_per_prompt
        task = progress.add_task(f"  rollout {self.episode + 1}", total=None) \
            if progress else None

        def draw(count: int, first: int) -> Any:
            batches = [repeat_samples(self.prompts.next(), n) for _ in range(count)]
            for res in self.executor.run_many("rollout", batches, first):
                if task is not None:
                    progress.advance(task)
                yield res

        self.buffer.clear()
        results, kept, self._sampling = self.sampler.collect(
            draw, lambda res: self._samples(res, self.episode))
        if task is not None:
            progress.remove_task(task)
        self.buffer.samples.extend(kept)
        check_bound(self.buffer.samples, self.episode, 0)
        if self._sampling["dynamic_sampling/exhausted"]:
            self.logger.console.print(self.sampler.exhausted_note(self.episode, self._sampling),
                                      highlight=False, soft_wrap=True)
        return results

    def _prompt_batches(self) -> list[dict[str, Any]]:
        """The next episode's prompt batches, each prompt repeated ``num_inference_per_prompt``
        times in a row (the rollout flow always sees ``generation_batch_size`` samples)."""
        n = self.args.num_inference_per_prompt
        return [repeat_samples(self.prompts.next(), n) for _ in range(self.spec.rollout_runs)]

    def _samples(self, res: FlowResult, episode: int, expected: int | None = None
                 ) -> list[dict[str, Any]]:
        """The samples of one rollout result for ``episode``, tagged with their version,
        which must be ``expected`` (default: the spec's
        :meth:`~flowrl.ir.EpisodeSpec.behaviour_version`)."""
        if res.output is None:
            raise FlowRLError("the rollout flow returned nothing: return the outputs that "
                              "form the training samples (e.g. `return reward_out`)")
        if expected is None:
            expected = self.spec.behaviour_version(episode)
        version = res.weight_version if res.weight_version is not None else \
            self.executor.weight_version
        if version != expected:
            raise StalenessError(
                f"the rollout of episode {episode + 1} ran on weight version {version}, not "
                f"{expected} (runtime_args.max_staleness={self.spec.max_staleness}): the "
                f"sync overtook it (a runtime ordering bug; please report it)")
        return tag_samples(Batch(res.output).samples(), version)

    # ---- max_staleness >= 1: the pipelined order of flowrl.ir.episode -----------------------
    def _pipelined(self, progress: Progress | None) -> dict[str, float]:
        """Episode ``e``: submit the rollouts of :meth:`EpisodeSpec.rollouts_in` (``e + k``;
        ``0 .. k`` in episode 0) without waiting, train ``e`` on the queued samples of
        rollout ``e`` meanwhile, collect the new rollouts (their generating weights must be
        untouched until they finish), then sync."""
        e, k = self.episode, self.spec.max_staleness
        self._waited = 0.0
        # (episode, the version that will generate it)
        ahead = [(i, self.spec.behaviour_version(i)) for i in self.spec.rollouts_in(
            e, self.horizon)]
        if e not in self.queue and e not in dict(ahead):
            # learn() ran past the horizon it filled the pipeline for: generate rollout(e)
            # now, by the current version (inside the bound, just fresher)
            ahead.insert(0, (e, self.executor.weight_version))
        t_start = time.perf_counter()
        handles = [(i, v, *self._submit_rollout(i)) for i, v in ahead]
        for h in [h for h in handles if h[0] == e]:  # train(e) needs it now
            self._collect_rollout(*h)
        samples, entries, rollout_s = self.queue.take(e)
        self.buffer.clear()
        self.buffer.samples.extend(samples)
        versions = check_bound(self.buffer.samples, e, k)
        t0 = time.perf_counter()
        train = self._train(progress)
        seconds = {"rollout": rollout_s, "train": time.perf_counter() - t0}
        for h in [h for h in handles if h[0] != e]:
            self._collect_rollout(*h)
        t0 = time.perf_counter()
        sync = self._sync(progress)
        seconds["sync"] = time.perf_counter() - t0
        entries = [tuple(x) for x in entries] + [m for r in train + sync for m in r.metrics]
        metrics = self._episode_metrics(entries, seconds, [s for r in sync for s in r.syncs],
                                        time.perf_counter() - t_start)
        metrics.update(staleness_metrics(versions, e))
        metrics["time/rollout_wait_s"] = sum(h[3] for h in handles) + self._waited
        return metrics

    def _submit_rollout(self, episode: int) -> tuple[Any, float]:
        """Submit the rollout whose samples train ``episode``: the next prompt batches (the
        synchronous loop's episode ``episode`` draws the same), iterations and error
        messages of that episode."""
        n_batches, batches = self.spec.rollout_runs, self._prompt_batches()
        current, self.executor.episode = self.executor.episode, episode
        t0 = time.perf_counter()
        try:
            handle = self.executor.submit_many("rollout", batches, episode * n_batches)
        finally:
            self.executor.episode = current
        return handle, time.perf_counter() - t0

    def _collect_rollout(self, episode: int, version: int, handle: Any, submit_s: float
                         ) -> None:
        """Wait for a submitted rollout (generated by weight ``version``) and queue its
        tagged samples, metrics and seconds (``submit_s`` submitting it plus the wait)."""
        t0 = time.perf_counter()
        samples, entries = [], []
        for res in self.executor.collect_many(handle):
            entries += [list(m) for m in res.metrics]
            if res.skipped is None:  # on_nonfinite: skip_batch dropped it (counted)
                samples += self._samples(res, episode, version)
        waited = time.perf_counter() - t0
        self._waited += waited
        self.queue.put(episode, (samples, entries, submit_s + waited))

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
