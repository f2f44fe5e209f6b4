"""Reward worker processes (started with ``spawn``: safe beside threads, CUDA and Ray).

A worker loads the function from its :class:`RewardFunctionRef` once, says it is ready, then
answers calls until told to stop. The parent never waits on a worker without a deadline;
a worker past its deadline is killed and replaced (:meth:`ProcessWorker.kill`).
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from multiprocessing.connection import Connection
from typing import Any

from flowrl.rewards.calling import RewardCallError, run_reward
from flowrl.rewards.loading import RewardFunctionRef, RewardFn

#: Target sent to a worker: a ref (loaded there) or a picklable module-level function.
Target = RewardFunctionRef | RewardFn


def _load(target: Target) -> tuple[RewardFn, str]:
    if isinstance(target, RewardFunctionRef):
        return target.load(), target.name
    return target, getattr(target, "__qualname__", repr(target))


def worker_main(conn: Connection, target: Target) -> None:
    """Worker loop: ``("ready", name)`` or ``("load_error", msg)`` first, then one
    ``(call_id, "ok" | "error", scores | message)`` per ``(call_id, prompts, completions,
    columns)`` received; ``None`` or a closed pipe ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        fn, name = _load(target)
    except Exception as err:
        conn.send(("load_error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", name))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        call_id, prompts, completions, columns = msg
        try:
            reply: tuple[Any, ...] = (call_id, "ok", run_reward(fn, name, prompts, completions,
                                                                columns))
        except RewardCallError as err:
            reply = (call_id, "error", str(err))
        conn.send(reply)


class ProcessWorker:
    """The parent's handle on one worker process and its pipe."""

    def __init__(self, target: Target, index: int) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=True)
        # daemon: a worker never outlives the run, even if close() is never reached
        self.proc = ctx.Process(target=worker_main, args=(child, target), daemon=True,
                                name=f"flowrl-reward-{index}")
        self.proc.start()
        child.close()
        self.index = index

    def describe_exit(self) -> str:
        """How the process ended, for messages (``exit code -9``)."""
        self.proc.join(timeout=1)
        return f"exit code {self.proc.exitcode}"

    def kill(self) -> None:
        """Kill the process (a hung call cannot be interrupted any other way)."""
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()

    def request_stop(self) -> None:
        """Ask the worker to stop after its current call (no waiting)."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
