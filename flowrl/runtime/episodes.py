"""The episode loop (ChatLearn semantics), independent of which executor runs the flows.

Per episode: ``sample_per_episode`` prompts -> rollout flow in ``generation_batch_size``
chunks -> replay buffer -> ``num_training_epoch`` passes of global batches (lists of
micro-batches) through the train flow -> parameter sync -> eval every
``eval_episode_interval`` episodes.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flowrl.config import FlowRLConfig
from flowrl.errors import FlowRLError
from flowrl.runtime.data import PromptStream
from flowrl.runtime.executor import FlowResult
from flowrl.runtime.metrics import MetricsLogger, aggregate
from flowrl.runtime.replay import ReplayBuffer


class Executor(Protocol):
    episode: int

    def setup(self) -> None: ...

    def run(self, role: str, data: Any, iteration: int) -> FlowResult: ...


class EpisodeRunner:
    """Drives episodes through an executor and logs one metrics row per episode."""

    def __init__(self, executor: Executor, config: FlowRLConfig, prompts: PromptStream,
                 logger: MetricsLogger, evaluate: Callable[[int], dict[str, float]] | None = None,
                 ) -> None:
        self.executor, self.config, self.prompts = executor, config, prompts
        self.logger, self.evaluate = logger, evaluate
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
            ep_task = progress.add_task("episodes", total=total, completed=self.episode)
            while self.episode < total:
                metrics = self.run_episode(progress)
                self.episode += 1
                if self.evaluate and self.args.eval_episode_interval and \
                        self.episode % self.args.eval_episode_interval == 0:
                    metrics.update(self.evaluate(self.episode))
                self.logger.log(self.episode, metrics)
                rows.append(self.logger.history[-1])
                progress.advance(ep_task)
        return rows

    def run_episode(self, progress: Progress | None = None) -> dict[str, float]:
        a = self.args
        self.executor.episode = self.episode
        entries: list[tuple[str, float, str]] = []
        n_batches = a.sample_per_episode // a.generation_batch_size
        task = progress.add_task(f"  rollout {self.episode + 1}", total=n_batches) if progress else None

        t0 = time.perf_counter()
        self.buffer.clear()
        for i in range(n_batches):
            batch = self.prompts.next()
            res = self.executor.run("rollout", batch, self.episode * n_batches + i)
            if res.output is None:
                raise FlowRLError("the rollout flow returned nothing: return the outputs that "
                                  "form the training samples (e.g. `return reward_out`)")
            self.buffer.add_batch(res.output)
            entries += res.metrics
            if task is not None:
                progress.advance(task)
        if task is not None:
            progress.remove_task(task)
        t1 = time.perf_counter()

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
