"""Checks a runtime can run on any schedule: state is on the device when an op needs it.

An :class:`~flowrl.ir.interpreter.OpInterpreter`. The executor runs ``ops[role]`` lists in episode order (``rollout x k, train x m, sync``,
sometimes ``eval``), each list many times. :func:`check_residency` simulates that order,
twice round, starting from "everything resident" (the state after setup), with
idempotent offload/onload, and fails on the first call or sync whose state is offloaded.
"""

from __future__ import annotations

from flowrl.compiler.memory import SYNC_NEEDS_ALL_STATE
from flowrl.compiler.resources import STATE_KINDS
from flowrl.errors import CompileError
from flowrl.ir import CallNode, EpisodeSpec, MemoryReport, Op, OpInterpreter, Schedule
from flowrl.ir.episode import ordered_roles


def _kinds(schedule: Schedule) -> dict[str, set[str]]:
    """Kinds of state each model holds: from the memory report, else trainers hold all."""
    if isinstance(schedule.memory, MemoryReport):
        return {m: set(k) for m, k in schedule.memory.state.items()}
    out: dict[str, set[str]] = {}
    for g in schedule.graphs.values():
        for c in g.calls():
            out.setdefault(c.model, {"weights"})
            if c.is_train:
                out[c.model] |= {"grads", "optimizer"}
    for ops in schedule.ops.values():
        for op in ops:
            out.setdefault(op.model, {"weights"})
            if op.src:
                out.setdefault(op.src, {"weights"})
    return out


def episode_order(schedule: Schedule, repeats: int = 2) -> list[str]:
    """Roles as an executor runs them over two episodes (each repeatable role twice)."""
    spec = EpisodeSpec(tuple(ordered_roles(schedule.ops)), repeats, repeats)
    return [r for r in spec.run_order(episodes=2, runs=repeats) if r in schedule.ops]


class _ResidencyCheck(OpInterpreter):
    """Tracks which (model, state kind) are on the device; fails on a call or sync whose state
    is not. Offload/onload are idempotent."""

    def __init__(self, schedule: Schedule) -> None:
        super().__init__(schedule)
        self.kinds = _kinds(schedule)
        self.state = {(m, k) for m, ks in self.kinds.items() for k in ks}
        self.order = episode_order(schedule)
        self.run_number = 0

    def offload(self, op: Op) -> None:
        self.state -= {(op.model, k) for k in op.what}

    def onload(self, op: Op) -> None:
        self.state |= {(op.model, k) for k in op.what if k in self.kinds.get(op.model, ())}

    def call(self, op: Op, node: CallNode | None) -> None:
        train = node is not None and node.is_train
        self._require(op, {(op.model, k) for k in (STATE_KINDS if train else ("weights",))
                           if k in self.kinds.get(op.model, ())})

    def sync(self, op: Op) -> None:
        sync_kinds = STATE_KINDS if SYNC_NEEDS_ALL_STATE else ("weights",)
        self._require(op, {(m, k) for m in (op.src, op.model) for k in sync_kinds
                           if k in self.kinds.get(m, ())})

    def _require(self, op: Op, need: set[tuple[str, str]]) -> None:
        missing = sorted(need - self.state)
        if missing:
            what = ", ".join(f"{m}'s {k}" for m, k in missing)
            raise CompileError(
                f"{self.role} op {self.index} '{op.label()}' (run {self.run_number + 1} of the "
                f"episode order {self.order}) needs {what} on the device, but it is offloaded")


def check_residency(schedule: Schedule) -> None:
    """Raise :class:`CompileError` if some op would run with its state offloaded.

    Calls need their model's weights (``train_step``: weights, grads and optimizer state);
    syncs need the source and the destination fully onloaded (see
    :data:`~flowrl.compiler.memory.SYNC_NEEDS_ALL_STATE`). A ``streamed`` onload counts as
    onloaded: a runtime streams it through the op, or runs it as a plain transfer.
    """
    check = _ResidencyCheck(schedule)
    for run, role in enumerate(check.order):
        check.run_number = run
        check.run(role)
