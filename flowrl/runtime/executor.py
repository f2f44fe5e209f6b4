"""``LocalExecutor``: runs a compiled :class:`~flowrl.ir.Schedule` in this process.

It is a worker in veRL's sense: it knows nothing of tracing or episodes, only how to run the
ops of one flow role (``rollout``, ``train``, ``eval``, ``sync``) on data it is handed. Each
run walks the role's ops with :class:`LocalRun`, an :class:`~flowrl.ir.OpInterpreter`; a
call goes through the one call protocol (:func:`flowrl.runtime.calls.run_call`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

from flowrl.errors import ConfigError
from flowrl.ir import FLOW_INPUT, CallNode, Op, Schedule
from flowrl.ir.interpreter import OpInterpreter
from flowrl.models.base import BaseModule
from flowrl.runtime.batch import Batch
from flowrl.runtime.calls import SetupError, call_seed  # noqa: F401 (imported from here)
from flowrl.runtime.calls import CallContext, merge_inputs, run_call, setup_modules
from flowrl.runtime.checkpoint import load_module_checkpoint_state, module_checkpoint_state
from flowrl.runtime.protocol import (FlowResult, OpRecord, write_op_profile,  # noqa: F401
                                     write_trace_events)
from flowrl.runtime.sync import check_sync_compatible, sync_parameters


class LocalRun(OpInterpreter):
    """One run of a flow role on in-process modules: values flow between calls in a dict."""

    def __init__(self, executor: "LocalExecutor", data: Any, iteration: int) -> None:
        super().__init__(executor.schedule)
        self.ex, self.iteration = executor, iteration
        self.values: dict[str, Any] = {FLOW_INPUT: data}
        self.result = FlowResult(None, self.values)
        self.ctx = CallContext(executor.seed, executor.episode + 1, executor.on_nonfinite)

    def run_op(self, op: Op) -> Any:
        """Run one op, timing it into the executor's records (a call of a dropped batch is
        not run and not recorded)."""
        t0 = time.perf_counter()
        moved = super().run_op(op)
        if moved is not None:
            self.ex.record(self.role, op, t0, moved)
        return moved

    def call(self, op: Op, node: CallNode | None) -> int | None:
        if self.result.skipped is not None:
            return None  # the batch is dropped; offload/onload ops still keep residency right
        data = merge_inputs(node, [(s, self.values[s]) for s in node.inputs])
        module = self.ex.modules[op.model]
        if op.model in self.ex.synced:  # the version these weights are (oldest one called)
            v = getattr(module, "weight_version", 0)
            old = self.result.weight_version
            self.result.weight_version = v if old is None else min(old, v)
        outcome = run_call(module, node, data, self.iteration, self.ctx)
        self.values[node.id] = outcome.out
        self.result.metrics.extend(outcome.metrics)
        self.result.skipped = outcome.skipped
        return 0

    def offload(self, op: Op) -> int:
        moved = self.ex.modules[op.model].offload(op.what)
        self.ex.offload_bytes += moved
        self.ex.offload_ops += 1
        return moved

    def onload(self, op: Op) -> int:
        moved = self.ex.modules[op.model].onload(op.what)
        self.ex.onload_bytes += moved
        self.ex.onload_ops += 1
        return moved

    def sync(self, op: Op) -> int:
        stats = sync_parameters(self.ex.modules[op.src], self.ex.modules[op.model])
        # a sync run for episode e (its iteration) publishes version e + 1
        self.ex.modules[op.model].weight_version = self.iteration + 1
        self.result.syncs.append(stats)
        return stats.bytes

    def end(self, role: str, ops: list[Op]) -> FlowResult:
        graph = self.graphs.get(role)
        if graph is not None and graph.outputs and self.result.skipped is None:
            parts = [(n, self.values[n]) for n in graph.outputs]
            self.result.output = parts[0][1] if len(parts) == 1 else Batch.merge(
                parts, f"the result of flow '{graph.name}'")
        return self.result


class LocalExecutor:
    """Runs schedule ops on in-process modules, counting offloads and timing every op.
    Implements :class:`~flowrl.runtime.protocol.Executor`."""

    def __init__(self, schedule: Schedule, modules: dict[str, BaseModule], seed: int = 0,
                 on_nonfinite: str | None = None) -> None:
        self.schedule = schedule
        self.seed = seed
        self.on_nonfinite = on_nonfinite or "raise"  # make_executor passes the config's
        self.modules = modules
        self.records: list[OpRecord] = []
        self.trace_events: list[dict] = []
        self.offload_bytes = 0
        self.onload_bytes = 0
        self.offload_ops = 0
        self.onload_ops = 0
        self.episode = 0
        #: models a sync writes (inference twins): their weights have versions
        self.synced = {op.model for op in schedule.ops_for("sync") if op.kind == "sync"}
        self.weight_version = 0

    def setup(self) -> None:
        setup_modules(self.modules)
        self.set_weight_version(0)  # modules reused from an earlier engine start over

    def check_sync_pairs(self, pairs: list[tuple[str, str]]) -> None:
        """Right after setup: every sync pair has weights of the same names and shapes (an
        error now instead of after the first rollout)."""
        for src, dst in pairs:
            tensors = {}
            for name in (src, dst):
                m = self.modules[name]
                try:
                    tensors[name] = m.named_sync_tensors()
                except (NotImplementedError, RuntimeError) as e:
                    raise ConfigError(f"sync {src} -> {dst}: model '{name}' "
                                      f"({type(m).__name__}) has no weights to sync: {e}") from e
            if not (self.modules[src].offloaded_state or self.modules[dst].offloaded_state):
                check_sync_compatible(tensors[src], tensors[dst], src, dst)

    def build_dataset(self, model: str, prompts: list, is_eval: bool) -> Any:
        """The model's ``build_dataset`` (after its ``setup``, where tokenizers get built)."""
        return self.modules[model].build_dataset(prompts, is_eval)

    def run_many(self, role: str, batches: list[Any], first_iteration: int
                 ) -> Iterator[FlowResult]:
        """Run a role on several batches (in this process: one after the other)."""
        for i, b in enumerate(batches):
            yield self.run(role, b, first_iteration + i)

    def submit_many(self, role: str, batches: list[Any], first_iteration: int
                    ) -> list[FlowResult]:
        """In this process: run the batches now (the handle is their results)."""
        return list(self.run_many(role, batches, first_iteration))

    def collect_many(self, handle: list[FlowResult]) -> list[FlowResult]:
        return handle

    def set_weight_version(self, version: int) -> None:
        self.weight_version = version
        for name in self.synced:
            self.modules[name].weight_version = version

    def run(self, role: str, data: Any, iteration: int) -> FlowResult:
        """Run every op of ``role`` on ``data`` (a batch dict, or micro-batches for train).
        The sync role of episode ``iteration`` publishes weight version ``iteration + 1``
        (also with no sync op: the version counts the episodes' sync steps)."""
        result = LocalRun(self, data, iteration).run(role)
        if role == "sync":
            self.weight_version = iteration + 1
        return result

    def record(self, role: str, op: Op, t0: float, moved: int) -> None:
        """Record an op that started at ``t0`` (``perf_counter``) and just ended."""
        seconds = time.perf_counter() - t0
        self.records.append(OpRecord(role, op.label(), op.model, seconds, moved))
        self.trace_events.append({"name": op.label(), "ph": "X", "pid": os.getpid(), "tid": 0,
                                  "ts": t0 * 1e6, "dur": seconds * 1e6,
                                  "args": {"model": op.model, "episode": self.episode + 1}})

    # ---- checkpoints, trace, shutdown --------------------------------------------------------
    def module_states(self) -> dict[str, dict]:
        return {name: module_checkpoint_state(m) for name, m in self.modules.items()}

    def load_module_states(self, states: dict[str, dict]) -> None:
        for name, state in states.items():
            load_module_checkpoint_state(self.modules[name], state)

    def write_trace(self, path: str | Path) -> Path:
        """Chrome/Perfetto trace of every op as it really ran (one row: this process)."""
        return write_trace_events(self.trace_events, path)

    def shutdown(self) -> None:
        for m in self.modules.values():
            m.shutdown()
