"""Checks a runtime can run on any schedule: state is on the device when an op needs it.

The executor runs ``ops[role]`` lists in episode order (``rollout x k, train x m, sync``,
sometimes ``eval``), each list many times. :func:`check_residency` simulates that order,
twice round, starting from "everything resident" (the state after setup), with
idempotent offload/onload, and fails on the first call or sync whose state is offloaded.
"""

from __future__ import annotations

from flowrl.compiler.ir import MemoryReport, Schedule
from flowrl.compiler.memory import SYNC_NEEDS_ALL_STATE
from flowrl.errors import CompileError

STATE_KINDS = ("weights", "grads", "optimizer")


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
    one = ["rollout"] * repeats + ["train"] * repeats + ["sync"]
    if "eval" in schedule.ops:
        one.append("eval")
    return [r for r in one + one if r in schedule.ops]


def check_residency(schedule: Schedule) -> None:
    """Raise :class:`CompileError` if some op would run with its state offloaded.

    Calls need their model's weights (``train_step``: weights, grads and optimizer state);
    syncs need the source and the destination fully onloaded (see
    :data:`~flowrl.compiler.memory.SYNC_NEEDS_ALL_STATE`). A ``streamed`` onload counts as
    onloaded: a runtime streams it through the op, or runs it as a plain transfer.
    """
    kinds = _kinds(schedule)
    state = {(m, k) for m, ks in kinds.items() for k in ks}
    for run, role in enumerate(episode_order(schedule)):
        graph = schedule.graphs.get(role)
        for i, op in enumerate(schedule.ops[role]):
            if op.kind == "offload":
                state -= {(op.model, k) for k in op.what}
                continue
            if op.kind == "onload":
                state |= {(op.model, k) for k in op.what if k in kinds.get(op.model, ())}
                continue
            if op.kind == "call":
                train = graph is not None and graph.call(op.node).is_train
                need = {(op.model, k) for k in (STATE_KINDS if train else ("weights",))
                        if k in kinds.get(op.model, ())}
            elif op.kind == "sync":
                sync_kinds = STATE_KINDS if SYNC_NEEDS_ALL_STATE else ("weights",)
                need = {(m, k) for m in (op.src, op.model) for k in sync_kinds
                        if k in kinds.get(m, ())}
            else:
                raise CompileError(f"{role} op {i}: unknown op kind {op.kind!r}")
            missing = sorted(need - state)
            if missing:
                what = ", ".join(f"{m}'s {k}" for m, k in missing)
                raise CompileError(
                    f"{role} op {i} '{op.label()}' (run {run + 1} of the episode order "
                    f"{episode_order(schedule)}) needs {what} on the device, but it is offloaded")
