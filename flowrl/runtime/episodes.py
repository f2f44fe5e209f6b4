"""The episode loop (ChatLearn semantics), independent of which executor runs the flows.

Per episode: ``sample_per_episode`` prompts -> rollout flow in ``generation_batch_size``
chunks -> replay buffer -> ``num_training_epoch`` passes of global batches (lists of
micro-batches) through the train flow -> parameter sync -> eval every
``eval_episode_interval`` episodes -> checkpoint every ``save_episode_interval`` episodes.

With ``num_inference_per_prompt = n > 1`` each prompt batch of ``generation_batch_size / n``
prompts is expanded so every prompt appears n times in a row (a GRPO group): the rollout flow
always sees ``generation_batch_size`` samples and ``sample_per_episode`` counts samples.

Checkpoints hold what makes a resumed run continue bit for bit: the modules' states (through
``state_dict_for_checkpoint``, or the executor's ``module_states()`` when it has one), the
episode and iteration counters, the prompt stream's position, the replay buffer, the global
RNG states and the metrics history (see :mod:`flowrl.runtime.checkpoint`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flowrl.config import FlowRLConfig
from flowrl.errors import FlowRLError
from flowrl.models.base import BaseModule
from flowrl.runtime.checkpoint import (Checkpoint, CheckpointManager, load_module_checkpoint_state,
                                      module_checkpoint_state, preserved_rng, rng_state,
                                       set_rng_state)
from flowrl.runtime.data import Batch, PromptStream
from flowrl.runtime.executor import FlowResult
from flowrl.runtime.guards import check_weights
from flowrl.runtime.resume import config_changes, config_record, flat_tensors
from flowrl.runtime.metrics import MetricsLogger, aggregate
from flowrl.runtime.replay import ReplayBuffer


class Executor(Protocol):
    episode: int

    def setup(self) -> None: ...

    def run(self, role: str, data: Any, iteration: int) -> FlowResult: ...

    def run_many(self, role: str, batches: list[Any], first_iteration: int
                 ) -> Iterator[FlowResult]: ...

    def build_dataset(self, model: str, prompts: list, is_eval: bool) -> Any: ...


def repeat_samples(batch: Batch, n: int) -> Batch:
    """Every sample of ``batch`` ``n`` times in a row (tensors along dim 0, lists item by item;
    batch-level scalars stay as they are)."""
    if n == 1:
        return batch
    out: Batch = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            out[k] = v.repeat_interleave(n, 0)
        elif isinstance(v, (list, tuple)):
            out[k] = [x for x in v for _ in range(n)]
        else:
            out[k] = v
    return out


class EpisodeRunner:
    """Drives episodes through an executor, logs one metrics row per episode, evaluates and
    checkpoints at the configured intervals, and resumes from a checkpoint."""

    def __init__(self, executor: Executor, config: FlowRLConfig, prompts: PromptStream,
                 logger: MetricsLogger, evaluate: Callable[[int], dict[str, float]] | None = None,
                 modules: dict[str, BaseModule] | None = None,
                 checkpoints: CheckpointManager | None = None) -> None:
        self.executor, self.config, self.prompts = executor, config, prompts
        self.logger, self.evaluate = logger, evaluate
        self.modules = modules or {}
        self.checkpoints = checkpoints
        self.args = config.runtime_args
        self.buffer = ReplayBuffer()
        self.train_iteration = 0
        self.episode = 0  # episodes completed

    def run(self, num_episode: int | None = None) -> list[dict[str, Any]]:
        """Run episodes until ``num_episode`` (default: the config's) have completed."""
        total = num_episode if num_episode is not None else self.args.num_episode
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
                every = self.args.save_episode_interval
                if self.checkpoints is not None and every and \
                        (self.episode % every == 0 or self.episode == total):
                    self.save_checkpoint()
                progress.advance(ep_task)
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
        return {"episode": self.episode, "train_iteration": self.train_iteration,
                "prompts": self.prompts.state_dict(), "replay": list(self.buffer.samples),
                "rng": rng_state(), "metrics": list(self.logger.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episode = int(state["episode"])
        self.train_iteration = int(state["train_iteration"])
        self.executor.episode = self.episode
        self.prompts.load_state_dict(state["prompts"])
        self.buffer.clear()
        self.buffer.samples.extend(state["replay"])
        set_rng_state(state["rng"])
        self.logger.restore(state["metrics"])

    def module_states(self) -> dict[str, Any]:
        get = getattr(self.executor, "module_states", None)
        if get is not None:  # an executor whose modules live elsewhere (Ray actors)
            return get()
        return {name: module_checkpoint_state(m) for name, m in self.modules.items()}

    def load_module_states(self, states: dict[str, Any]) -> None:
        missing = sorted(set(self.modules) - set(states))
        if missing:
            raise FlowRLError(f"the checkpoint has no state for model(s) {', '.join(missing)}; "
                              f"it was written by an engine with other models")
        states = {n: states[n] for n in self.modules}
        load = getattr(self.executor, "load_module_states", None)
        if load is not None:
            load(states)
            return
        for name, m in self.modules.items():
            load_module_checkpoint_state(m, states[name])

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
        a = self.args
        self.executor.episode = self.episode
        entries: list[tuple[str, float, str]] = []
        n_batches = a.sample_per_episode // a.generation_batch_size
        task = progress.add_task(f"  rollout {self.episode + 1}", total=n_batches) if progress else None

        t0 = time.perf_counter()
        self.buffer.clear()
        n = a.num_inference_per_prompt
        batches = [repeat_samples(self.prompts.next(), n) for _ in range(n_batches)]
        # run_many lets a distributed executor pipeline the batches across devices.
        for res in self.executor.run_many("rollout", batches, self.episode * n_batches):
            entries += res.metrics
            if task is not None:
                progress.advance(task)
            if res.skipped is not None:  # on_nonfinite: skip_batch dropped it (counted)
                continue
            if res.output is None:
                raise FlowRLError("the rollout flow returned nothing: return the outputs that "
                                  "form the training samples (e.g. `return reward_out`)")
            self.buffer.add_batch(res.output)
        if task is not None:
            progress.remove_task(task)
        t1 = time.perf_counter()

        per_epoch = len(self.buffer) // a.train_global_batch_size
        if per_epoch == 0:
            raise FlowRLError(
                f"the rollout flow produced {len(self.buffer)} samples this episode, fewer "
                f"than one global batch (runtime_args.train_global_batch_size="
                f"{a.train_global_batch_size}); with a flow that reduces samples (online DPO: "
                f"one pair per prompt) size the global batch to what it returns")
        task = progress.add_task(f"  train {self.episode + 1}", total=per_epoch *
                                 a.num_training_epoch) if progress else None
        for epoch in range(a.num_training_epoch):
            gen = None
            if a.shuffle:
                gen = torch.Generator().manual_seed(
                    (a.seed * 7919 + self.episode) * 1009 + epoch)
            for global_batch in self.buffer.global_batches(
                    a.train_global_batch_size, a.train_micro_batch_size, gen):
                res = self.executor.run("train", global_batch, self.train_iteration)
                self.train_iteration += 1
                entries += res.metrics
                if task is not None:
                    progress.advance(task)
        if task is not None:
            progress.remove_task(task)
        t2 = time.perf_counter()

        sync = self.executor.run("sync", None, self.episode)
        t3 = time.perf_counter()

        metrics = aggregate(entries)
        rollout_s, train_s, sync_s = t1 - t0, t2 - t1, t3 - t2
        for name, value, how in entries:
            if how == "sum" and name.endswith("tokens") and rollout_s > 0:
                metrics[f"{name}_per_s"] = metrics[name] / rollout_s
        metrics.update({
            "time/rollout_s": rollout_s, "time/train_s": train_s, "time/sync_s": sync_s,
            "time/episode_s": t3 - t0, "samples": float(len(self.buffer)),
        })
        if sync.syncs:
            nbytes = sum(s.bytes for s in sync.syncs)
            metrics["sync/bytes"] = float(nbytes)
            metrics["sync/gbps"] = nbytes / max(sync_s, 1e-9) / 1e9
        return metrics
