"""``LocalExecutor``: runs a compiled :class:`~flowrl.compiler.ir.Schedule` in this process.

It is a worker in veRL's sense: it knows nothing of tracing or episodes, only how to run the
ops of one flow role (``rollout``, ``train``, ``eval``, ``sync``) on data it is handed.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from flowrl.ir import FLOW_INPUT, CallNode, Op, Schedule
from flowrl.errors import ConfigError, FlowRLError, StageError
from flowrl.models.base import BaseModule, nonfinite_policy
from flowrl.runtime.data import Batch, merge_outputs
from flowrl.runtime.guards import SKIPPED_METRIC, NonFiniteError, check_call_output
from flowrl.runtime.sync import SyncStats, check_sync_compatible, sync_parameters


class SetupError(FlowRLError):
    """A module's ``setup()`` raised; the message names the model and class, the cause is
    chained."""


@dataclass
class FlowResult:
    """What running one flow produced."""

    output: Batch | None
    values: dict[str, Any]
    metrics: list[tuple[str, float, str]] = field(default_factory=list)
    syncs: list[SyncStats] = field(default_factory=list)
    #: set when ``on_nonfinite: skip_batch`` dropped this batch: "model.method key"
    skipped: str | None = None


@dataclass
class OpRecord:
    """Measured time of one executed op (the profile that cost models can be checked against)."""

    role: str
    op: str
    model: str
    seconds: float
    bytes: int = 0


def write_op_profile(records: list["OpRecord"], path: Path) -> Path:
    """Measured op times, one JSON object per executed op (``flowrl explain --profile``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(asdict(r)) + "\n")
    return path


def call_seed(seed: int, node_id: str, iteration: int) -> int:
    """The RNG seed a call runs under: a function of the run's seed, the call and iteration.

    Seeding every call this way makes sampling independent of which process runs the call
    and of what ran before it, so the local and Ray runtimes, and a resumed run, draw the
    same random numbers.
    """
    return (seed * 1_000_003 + zlib.crc32(node_id.encode()) * 7919 + iteration) % (2**63 - 1)


def check_output(node: str, out: Any, is_train: bool, declared: list[str] | None) -> Any:
    """A step's return value, checked: a dict (train_step: None or a dict of metrics) whose
    keys match its ``@outputs`` declaration."""
    if is_train:
        if out is not None and not isinstance(out, dict):
            raise StageError(f"{node} returned {type(out).__name__}; train_step returns None or "
                             f"a dict of metrics")
        return out or {}
    if not isinstance(out, dict):
        raise StageError(f"{node} returned {type(out).__name__}; a step method returns a dict "
                         f"of new keys")
    if declared is not None and sorted(out) != declared:
        raise StageError(f"{node} returned keys {sorted(out)} but declared @outputs"
                         f"{tuple(declared)}; make them agree")
    return out


def call_metrics(model: str, logged: list[tuple[str, float, str]], out: Any,
                 is_train: bool) -> list[tuple[str, float, str]]:
    """Metrics of one call: what the module logged, plus a train_step's returned dict."""
    entries = [(f"{model}/{n}", v, r) for n, v, r in logged]
    if is_train:
        entries += [(f"{model}/{k}", float(v), "mean") for k, v in out.items()]
    return entries


def describe(value: Any) -> str:
    """Short description of a batch for error messages (keys and shapes)."""
    if isinstance(value, list):
        return f"list of {len(value)} micro-batches" + (f", first: {describe(value[0])}" if value else "")
    if isinstance(value, dict):
        parts = []
        for k, v in list(value.items())[:12]:
            parts.append(f"{k}:{tuple(v.shape)}" if isinstance(v, torch.Tensor) else
                         f"{k}:{type(v).__name__}")
        return "{" + ", ".join(parts) + (", ..." if len(value) > 12 else "") + "}"
    return type(value).__name__


def call_failure(call: CallNode, module: Any, episode: int, iteration: int, data: Any,
                 error: BaseException) -> StageError:
    """The error for a call that raised, the same in every runtime: call id, model,
    class.method, episode (1-based), iteration, call site, input and the real cause."""
    return StageError(
        f"{call.id} failed (model '{call.model}', {type(module).__name__}.{call.method}, "
        f"episode {episode}, iteration {iteration}, called at {call.source}) on input "
        f"{describe(data)}: {type(error).__name__}: {error}")


class LocalExecutor:
    """Runs schedule ops on in-process modules, counting offloads and timing every op."""

    def __init__(self, schedule: Schedule, modules: dict[str, BaseModule], seed: int = 0,
                 on_nonfinite: str | None = None) -> None:
        self.schedule = schedule
        self.seed = seed
        self.on_nonfinite = on_nonfinite or nonfinite_policy()  # default: the active config
        self.modules = modules
        self.records: list[OpRecord] = []
        self.offload_bytes = 0
        self.onload_bytes = 0
        self.offload_ops = 0
        self.onload_ops = 0
        self.episode = 0

    def setup(self) -> None:
        for name, m in self.modules.items():
            try:
                m.ensure_setup()
            except FlowRLError:
                raise
            except Exception as e:  # name the module; the real cause stays chained
                raise SetupError(f"setup() of model '{name}' ({type(m).__name__}) failed: "
                                 f"{type(e).__name__}: {e}") from e

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

    def run(self, role: str, data: Any, iteration: int) -> FlowResult:
        """Run every op of ``role`` on ``data`` (a batch dict, or micro-batches for train)."""
        graph = self.schedule.graphs.get(role)
        values: dict[str, Any] = {FLOW_INPUT: data}
        result = FlowResult(None, values)
        for op in self.schedule.ops_for(role):
            if result.skipped is not None and op.kind == "call":
                continue  # the batch is dropped; offload/onload ops still keep residency right
            t0 = time.perf_counter()
            moved = self._run_op(role, op, values, iteration, result)
            self.records.append(OpRecord(role, op.label(), op.model, time.perf_counter() - t0, moved))
        if graph is not None and graph.outputs and result.skipped is None:
            parts = [(n, values[n]) for n in graph.outputs]
            result.output = parts[0][1] if len(parts) == 1 else merge_outputs(
                parts, f"the result of flow '{graph.name}'")
        return result

    def _run_op(self, role: str, op: Op, values: dict[str, Any], iteration: int,
                result: FlowResult) -> int:
        module = self.modules[op.model]
        if op.kind == "call":
            call = self.schedule.graphs[role].call(op.node)
            values[call.id] = self._call(call, module, values, iteration, result)
            return 0
        if op.kind == "offload":
            moved = module.offload(op.what)
            self.offload_bytes += moved
            self.offload_ops += 1
            return moved
        if op.kind == "onload":
            moved = module.onload(op.what)
            self.onload_bytes += moved
            self.onload_ops += 1
            return moved
        if op.kind == "sync":
            stats = sync_parameters(self.modules[op.src], module)
            result.syncs.append(stats)
            return stats.bytes
        raise FlowRLError(f"unknown op kind {op.kind!r}")

    def _inputs(self, call: CallNode, values: dict[str, Any]) -> Any:
        parts = [(src, values[src]) for src in call.inputs]
        if len(parts) == 1:
            return parts[0][1]
        if any(not isinstance(v, dict) for _, v in parts):
            raise StageError(
                f"{call.id} at {call.source} takes several inputs, so each must be a dict; got "
                + ", ".join(f"{s}: {describe(v)}" for s, v in parts))
        labels = [("the flow's input batch" if s == FLOW_INPUT else s, v) for s, v in parts]
        return merge_outputs(labels, f"the inputs of {call.id} at {call.source}")

    def _call(self, call: CallNode, module: BaseModule, values: dict[str, Any], iteration: int,
              result: FlowResult) -> Any:
        data = self._inputs(call, values)
        torch.manual_seed(call_seed(self.seed, call.id, iteration))
        try:
            out = getattr(module, call.method)(data, iteration)
        except NonFiniteError as e:  # found inside the module: add the call site
            raise e.located(call.method, self.episode + 1, iteration) from None
        except FlowRLError:
            raise
        except Exception as e:  # keep the real cause, add where it happened
            raise call_failure(call, module, self.episode + 1, iteration, data, e) from e
        out = check_output(call.id, out, call.is_train,
                           sorted(call.outputs) if call.outputs is not None else None)
        bad = check_call_output(call.model, call.method, out, call.is_train, self.on_nonfinite,
                                self.episode + 1, iteration)
        logged = module.drain_logged()
        if bad is not None:  # skip_batch: count it and keep NaN out of the metrics/buffer
            result.metrics.append((f"{call.model}/{SKIPPED_METRIC}", 1.0, "sum"))
            if call.is_train:  # the sync refuses non-finite weights if the step went ahead
                out = {k: v for k, v in out.items() if k != bad}
            else:  # a rollout batch: the rest of the flow is skipped and the batch dropped
                result.skipped = f"{call.id} key '{bad}'"
        result.metrics.extend(call_metrics(call.model, logged, out, call.is_train))
        return out
