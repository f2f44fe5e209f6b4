"""Environment and tool calls with a deadline each: a slow or hanging call never stalls the
rollout.

Every call runs in its own daemon thread; at most ``num_workers`` run at once. The caller
waits for a call until ``timeout_s`` after it started: past that it gets a ``"timeout"``
outcome, the call's slot is freed, and the thread is abandoned (a daemon: it never keeps the
process alive). An exception becomes an ``"error"`` outcome with its type and message.
Environments are Python objects with state, so they run in threads of the process that owns
them (the rollout module's worker, local or Ray); tools that may hang in C code should bound
their own work (the abandoned thread keeps running until it returns).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

from flowrl.errors import ConfigError

OutcomeKind = Literal["ok", "error", "timeout"]


@dataclass(frozen=True)
class Outcome:
    """How a call ended: ``value`` is its result (``ok``) or a message (``error``/``timeout``)."""

    kind: OutcomeKind
    value: Any
    seconds: float


class PendingCall:
    """A call submitted to a :class:`CallPool`; :meth:`CallPool.wait` turns it into an
    :class:`Outcome`."""

    def __init__(self, name: str, fn: Callable[..., Any], args: tuple) -> None:
        self.name, self.fn, self.args = name, fn, args
        self.started: float | None = None
        self.finished = threading.Event()
        self.outcome: Outcome | None = None
        self.abandoned = False
        self.lock = threading.Lock()


class CallPool:
    """Runs calls concurrently, ``num_workers`` at a time, each with a ``timeout_s``."""

    def __init__(self, num_workers: int = 8, timeout_s: float = 10.0) -> None:
        if num_workers < 1:
            raise ConfigError(f"agent pool: num_workers must be >= 1, got {num_workers}")
        if not timeout_s > 0:
            raise ConfigError(f"agent pool: timeout_s must be > 0, got {timeout_s}")
        self.num_workers, self.timeout_s = num_workers, timeout_s
        self._slots = threading.Semaphore(num_workers)
        self.timeouts = 0  # calls abandoned so far

    def submit(self, name: str, fn: Callable[..., Any], *args: Any) -> PendingCall:
        """Start ``fn(*args)`` (``name`` is used in messages) as soon as a slot is free."""
        call = PendingCall(name, fn, args)
        threading.Thread(target=self._run, args=(call,), daemon=True,
                         name=f"flowrl-agent-{name}").start()
        return call

    def _run(self, call: PendingCall) -> None:
        self._slots.acquire()
        call.started = time.monotonic()
        try:
            result: Outcome = Outcome("ok", call.fn(*call.args), 0.0)
        except Exception as err:  # noqa: BLE001 - any failure becomes an observation
            result = Outcome("error", f"{type(err).__name__}: {err}", 0.0)
        with call.lock:
            if call.abandoned:  # the waiter gave up and already freed the slot
                return
            call.outcome = Outcome(result.kind, result.value, time.monotonic() - call.started)
            self._slots.release()
        call.finished.set()

    def wait(self, call: PendingCall) -> Outcome:
        """The call's outcome, waiting at most until ``timeout_s`` after it started."""
        while not call.finished.is_set():
            if call.started is None:  # queued behind other calls: its clock has not started
                call.finished.wait(0.005)
                continue
            left = call.started + self.timeout_s - time.monotonic()
            if left <= 0 or not call.finished.wait(left):
                with call.lock:
                    if call.outcome is None:
                        call.abandoned = True
                        self._slots.release()
                        self.timeouts += 1
                        call.outcome = Outcome(
                            "timeout", f"{call.name} took longer than {self.timeout_s:g}s",
                            time.monotonic() - call.started)
                        call.finished.set()
        assert call.outcome is not None
        return call.outcome

    def run(self, name: str, fn: Callable[..., Any], arg_list: list[tuple]) -> list[Outcome]:
        """``fn(*args)`` for every ``args`` of ``arg_list``, concurrently; outcomes in order."""
        calls = [self.submit(name, fn, *args) for args in arg_list]
        return [self.wait(c) for c in calls]


def call_with_timeout(name: str, fn: Callable[..., Any], args: tuple,
                      timeout_s: float) -> Outcome:
    """One call with a deadline, in a daemon thread (a tool called by an environment)."""
    pool = CallPool(1, timeout_s)
    return pool.wait(pool.submit(name, fn, *args))
