"""Worker processes that run reward calls with a deadline each, and never hang the caller.

Every wait has a deadline. A call past its deadline has its worker killed and a fresh one
started in its place; a worker that dies mid-call (a crash, ``os._exit``) is replaced too.
Either way only that call's samples fail. A replacement takes calls once it has loaded
the function, so its start-up time never counts against a call's timeout.
"""

from __future__ import annotations

import pickle
import time
from collections import deque
from multiprocessing.connection import wait

from flowrl.rewards.loading import RewardFunctionError
from flowrl.rewards.worker import ProcessWorker, Target

#: Seconds a worker may take to start and load the function (spawn imports flowrl anew).
STARTUP_TIMEOUT_S = 120.0

#: (kind, value): ("ok", scores), ("error", message) or ("timeout", message).
Outcome = tuple[str, object]


class ProcessPool:
    """``size`` spawned workers for one reward function; :meth:`run` answers a list of calls."""

    def __init__(self, target: Target, spec: str, size: int, timeout_s: float) -> None:
        self.target, self.spec, self.timeout_s = target, spec, timeout_s
        self.name = getattr(target, "name", spec)
        self._count = 0
        self._idle: list[ProcessWorker] = []
        self._starting: list[ProcessWorker] = [self._spawn() for _ in range(size)]
        self.replaced = 0
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while self._starting:
                self._await_starting(deadline)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers now serving (for tests and diagnostics)."""
        return [w.proc.pid for w in self._idle + self._starting]

    def _spawn(self) -> ProcessWorker:
        self._count += 1
        return ProcessWorker(self.target, self._count)

    def _await_starting(self, deadline: float) -> None:
        left = max(0.0, deadline - time.monotonic())
        ready = wait([w.conn for w in self._starting], timeout=left)
        if not ready:
            raise RewardFunctionError(f"reward function {self.spec!r}: a worker process did "
                                      f"not start within {STARTUP_TIMEOUT_S:.0f}s")
        for w in [w for w in self._starting if w.conn in ready]:
            self._hello(w)

    def _hello(self, w: ProcessWorker) -> None:
        try:
            kind, value = w.conn.recv()
        except (EOFError, OSError):
            kind, value = "load_error", (
                f"the process died ({w.describe_exit()}; its error is on stderr). A script "
                f"that starts a RewardPool must do so under `if __name__ == \"__main__\":`, "
                f"since spawned workers re-import it")
        if kind != "ready":
            raise RewardFunctionError(f"reward function {self.spec!r}: loading it in a worker "
                                      f"process failed: {value}")
        self._starting.remove(w)
        self._idle.append(w)

    def _replace(self, w: ProcessWorker) -> None:
        w.kill()
        self.replaced += 1
        self._starting.append(self._spawn())

    def run(self, payloads: list[tuple]) -> list[Outcome]:
        """One outcome per ``(prompts, completions, columns)`` payload, in order."""
        out: list[Outcome | None] = [None] * len(payloads)
        pending = deque(range(len(payloads)))
        busy: dict[ProcessWorker, tuple[int, float]] = {}
        try:
            while pending or busy:
                self._dispatch(payloads, pending, busy, out)
                if not busy and not pending:
                    break
                if not busy:  # only replacements starting: wait for one, bounded
                    self._await_starting(time.monotonic() + STARTUP_TIMEOUT_S)
                    continue
                self._collect(busy, out)
        except BaseException:  # Ctrl-C or a failed replacement: no call keeps running
            for w in list(busy):
                self._replace(w)
            raise
        return out  # type: ignore[return-value]

    def _dispatch(self, payloads, pending, busy, out) -> None:
        while pending and self._idle:
            w, i = self._idle.pop(), pending.popleft()
            try:
                w.conn.send((i, *payloads[i]))
            except (pickle.PicklingError, TypeError, AttributeError) as err:
                # pickling fails before anything is written: the pipe is still clean
                out[i] = ("error", f"reward function '{self.name}': the call could not be "
                                   f"sent to a worker: {err}")
                self._idle.append(w)
            except OSError as err:
                out[i] = ("error", f"reward function '{self.name}': its worker died ({err})")
                self._replace(w)
            else:
                busy[w] = (i, time.monotonic() + self.timeout_s)

    def _collect(self, busy: dict, out: list) -> None:
        deadline = min(d for _, d in busy.values())
        conns = [w.conn for w in busy] + [w.conn for w in self._starting]
        ready = wait(conns, timeout=max(0.0, deadline - time.monotonic()))
        for w in [w for w in self._starting if w.conn in ready]:
            self._hello(w)
        for w in [w for w in busy if w.conn in ready]:
            i, _ = busy.pop(w)
            try:
                _, kind, value = w.conn.recv()
            except (EOFError, OSError):
                out[i] = ("error", f"reward function '{self.name}': its worker process died "
                                   f"during the call ({w.describe_exit()}); it was replaced")
                self._replace(w)
                continue
            out[i] = (kind, value)
            self._idle.append(w)
        now = time.monotonic()
        for w, (i, d) in list(busy.items()):
            if d <= now:
                del busy[w]
                out[i] = ("timeout", f"reward function '{self.name}' took longer than "
                                     f"{self.timeout_s}s; its worker process was killed "
                                     f"and replaced")
                self._replace(w)

    def close(self) -> None:
        """Stop every worker (idempotent): ask all, give them a second, kill the rest."""
        workers = self._idle + self._starting
        for w in workers:
            w.request_stop()
        deadline = time.monotonic() + 1.0
        for w in workers:
            w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            w.kill()
        self._idle, self._starting = [], []
