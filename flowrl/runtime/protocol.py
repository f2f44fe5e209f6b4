"""What an executor is to its callers: the :class:`Executor` protocol and the records it keeps.

The engine and the episode loop use an executor only through this protocol, never by probing
for methods; :class:`~flowrl.runtime.executor.LocalExecutor` (in-process) and
:class:`~flowrl.runtime.ray_executor.RayExecutor` (Ray actors) implement all of it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

from flowrl.ir import Schedule
from flowrl.runtime.batch import Batch
from flowrl.runtime.sync import SyncStats


@dataclass
class FlowResult:
    """What running one flow produced."""

    output: Batch | None
    values: dict[str, Any]
    metrics: list[tuple[str, float, str]] = field(default_factory=list)
    syncs: list[SyncStats] = field(default_factory=list)
    #: set when ``on_nonfinite: skip_batch`` dropped this batch: "model.method key"
    skipped: str | None = None
    #: the weight version (syncs received) of the synced models this run called, as they
    #: saw it when they ran; ``None`` when it called none
    weight_version: int | None = None


@dataclass
class OpRecord:
    """Measured time of one executed op (the profile that cost models can be checked against)."""

    role: str
    op: str
    model: str
    seconds: float
    bytes: int = 0


def write_op_profile(records: list[OpRecord], path: Path) -> Path:
    """Measured op times, one JSON object per executed op (``flowrl explain --profile``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(asdict(r)) + "\n")
    return path


def write_trace_events(events: list[dict], path: str | Path) -> Path:
    """A Chrome/Perfetto trace file of ``events`` (complete events, microseconds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"traceEvents": events}))
    return path


@runtime_checkable
class Executor(Protocol):
    """Runs the ops of a schedule's flow roles on data it is handed; knows nothing of
    tracing or episodes. ``episode`` (0-based) is set by the episode loop before each
    episode so errors can name it (1-based)."""

    schedule: Schedule
    episode: int
    #: the version (syncs) the inference side holds once all submitted work has run
    weight_version: int
    records: list[OpRecord]
    offload_ops: int
    onload_ops: int
    offload_bytes: int
    onload_bytes: int

    def setup(self) -> None:
        """Start the modules (their ``setup()``); a failure names the model."""

    def check_sync_pairs(self, pairs: list[tuple[str, str]]) -> None:
        """Right after setup: each (trainer, inference) pair has syncable, matching weights."""

    def build_dataset(self, model: str, prompts: list, is_eval: bool) -> Any:
        """``model``'s ``build_dataset(prompts, is_eval)``, run where the model lives."""

    def run(self, role: str, data: Any, iteration: int) -> FlowResult:
        """Run every op of ``role`` on ``data``."""

    def run_many(self, role: str, batches: list[Any], first_iteration: int
                 ) -> Iterator[FlowResult]:
        """Run ``role`` on several batches (iterations ``first_iteration``, ...), in order."""

    def submit_many(self, role: str, batches: list[Any], first_iteration: int) -> Any:
        """Start ``role`` on several batches and return a handle for :meth:`collect_many`
        without waiting where the executor can (a distributed one lets the work overlap
        with what is submitted next; an in-process one runs it now: same data, same order)."""

    def collect_many(self, handle: Any) -> list[FlowResult]:
        """The results of a :meth:`submit_many`, in batch order (waits for them)."""

    def set_weight_version(self, version: int) -> None:
        """Record that the synced (inference) models hold weight version ``version`` (after
        a resume: the sync that made it ran before the checkpoint)."""

    def module_states(self) -> dict[str, dict]:
        """Every module's checkpoint state."""

    def load_module_states(self, states: dict[str, dict]) -> None:
        """Restore modules from checkpoint states (model -> state)."""

    def write_trace(self, path: str | Path) -> Path:
        """Write a Chrome/Perfetto trace of the ops as they really ran."""

    def shutdown(self) -> None:
        """Release the modules (and processes) this executor holds."""
