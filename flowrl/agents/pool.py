"""Environment and tool calls with a deadline each: a slow or hanging call never stalls the
rollout.

Every call runs in its own daemon thread; at most ``num_workers`` run at once. The caller
waits for a call until ``timeout_s`` after it started: past that it gets a ``"timeout"``
outcome, the call's slot is freed, and the thread is abandoned (a daemon: it never keeps the
process alive). An exception becomes an ``"error"`` outcome with its type and message.
Environments are Python objects with state, so they run in threads of the process that owns
them (the rollout module's worker, local or Ray). A tool that may hang where a thread cannot
be stopped (C code, a busy loop) runs in a :class:`ToolProcessPool` instead: its process is
killed at the deadline.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

from flowrl.agents.errors import AgentError
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


def _tool_worker(conn) -> None:
    """A tool worker process: ``("ready",)``, then one ``(kind, value)`` per ``(fn, args)``
    received, until ``None`` or a closed pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, args = msg
        try:
            reply = ("ok", fn(*args))
        except Exception as err:  # noqa: BLE001 - any failure becomes an observation
            reply = ("error", f"{type(err).__name__}: {err}")
        try:
            conn.send(reply)
        except Exception as err:  # noqa: BLE001 - an unpicklable result
            conn.send(("error", f"the result could not be sent back: {err}"))


class ToolProcessPool:
    """Tool calls in ``num_workers`` spawned processes, for tools that may hang where a thread
    cannot be stopped (C code, busy loops): a call past ``timeout_s`` has its process killed
    and a fresh one started in the background. ``fn`` and its arguments must pickle
    (module-level functions). Thread-safe: environments stepping in a :class:`CallPool` share
    one. Pass it to :class:`~flowrl.agents.ToolEnvironment` as ``runner``; :meth:`close` it.
    """

    def __init__(self, num_workers: int = 2, timeout_s: float = 10.0,
                 startup_timeout_s: float = 120.0) -> None:
        if num_workers < 1 or not timeout_s > 0:
            raise ConfigError(f"tool process pool: num_workers must be >= 1 and timeout_s > 0, "
                              f"got {num_workers} and {timeout_s}")
        self.timeout_s, self.startup_timeout_s = timeout_s, startup_timeout_s
        self._ctx = mp.get_context("spawn")  # safe beside threads, CUDA and Ray
        self._idle: queue.Queue = queue.Queue()
        self.replaced = 0
        self._procs: list = []
        for _ in range(num_workers):
            self._idle.put(self._spawn())

    def _spawn(self):
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_tool_worker, args=(child,), daemon=True,
                                 name="flowrl-tool")
        proc.start()
        child.close()
        self._procs.append(proc)
        if not parent.poll(self.startup_timeout_s):
            proc.kill()
            raise AgentError(f"a tool worker process did not start within "
                             f"{self.startup_timeout_s:g}s")
        parent.recv()
        return proc, parent

    def _replace(self, proc, conn) -> None:
        proc.kill()
        proc.join(timeout=5)
        conn.close()
        self.replaced += 1
        # the new process starts in the background: the caller's episode goes on at once
        threading.Thread(target=lambda: self._idle.put(self._spawn()), daemon=True).start()

    def call(self, name: str, fn: Callable[..., Any], args: tuple) -> Outcome:
        """``fn(*args)`` in a worker process, waiting at most ``timeout_s`` once it started."""
        proc, conn = self._idle.get()
        start = time.monotonic()
        try:
            conn.send((fn, args))
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            self._idle.put((proc, conn))  # nothing was written: the pipe is still clean
            return Outcome("error", f"{name} could not be sent to a worker process: {err}", 0.0)
        if not conn.poll(self.timeout_s):
            self._replace(proc, conn)
            return Outcome("timeout", f"{name} took longer than {self.timeout_s:g}s; its "
                                      f"worker process was killed", time.monotonic() - start)
        try:
            kind, value = conn.recv()
        except (EOFError, OSError):
            self._replace(proc, conn)
            return Outcome("error", f"{name}: its worker process died (exit code "
                                    f"{proc.exitcode})", time.monotonic() - start)
        self._idle.put((proc, conn))
        return Outcome(kind, value, time.monotonic() - start)

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        while not self._idle.empty():
            _, conn = self._idle.get_nowait()
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for proc in self._procs:
            proc.join(timeout=1)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        self._procs = []
