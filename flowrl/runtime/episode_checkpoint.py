"""Checkpoint and resume of the episode loop (:class:`~flowrl.runtime.episodes.EpisodeRunner`).

Checkpoints hold what makes a resumed run continue bit for bit: the modules' states (the
executor's ``module_states()``), the episode and iteration counters, the prompt stream's
position, the replay buffer, the global RNG states, the metrics history and, with
``max_staleness >= 1``, the rollouts generated ahead (see :mod:`flowrl.runtime.checkpoint`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flowrl.errors import FlowRLError
from flowrl.runtime.checkpoint import Checkpoint, rng_state, set_rng_state
from flowrl.runtime.guards import check_weights
from flowrl.runtime.resume import config_changes, config_record, flat_tensors


class CheckpointingMixin:
    """The runner's state, module states, checkpoint save and resume; mixed into
    :class:`~flowrl.runtime.episodes.EpisodeRunner`, whose attributes it reads."""

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
