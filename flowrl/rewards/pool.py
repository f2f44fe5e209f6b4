"""RewardPool: score completions with a user function, robust to its failures.

>>> pool = RewardPool(RewardConfig(function="rewards.py:score", timeout_s=5), base_dir=".")
>>> result = pool.score(prompts, completions, answer=answers)
>>> result.scores, result.metrics["reward/errors"], result.metrics["time/reward_s"]

A batch is cut into calls (``call_batch_size`` samples, default: split evenly over the
workers). A call that raises, times out or returns anything but one finite float per sample
scores ``error_score`` for its samples, is logged with the function's name, and is counted in
the metrics; the run goes on.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from flowrl.errors import FlowRLError
from flowrl.rewards.calling import RewardCallError, run_reward
from flowrl.rewards.config import RewardConfig
from flowrl.rewards.loading import resolve_reward_spec
from flowrl.rewards.process_pool import Outcome, ProcessPool

log = logging.getLogger("flowrl.rewards")


class RewardInputError(FlowRLError, ValueError):
    """The batch given to the pool is inconsistent; names the column."""


@dataclass
class RewardResult:
    """Scores (one per completion) and this batch's metrics."""

    scores: list[float]
    metrics: dict[str, float]
    failures: list[str] = field(default_factory=list)


class RewardPool:
    """Runs ``config.function(prompts, completions, **columns) -> list[float]``.

    ``base_dir`` is the directory a ``file.py:fn`` spec is relative to (the config file's).
    The function is loaded here first, so a bad spec fails at construction; process mode
    then starts ``num_workers`` workers, which load it again from the file or module.
    Use as a context manager, or call :meth:`close`, to stop the workers.
    """

    def __init__(self, config: RewardConfig, base_dir: str | Path | None = None) -> None:
        self.config = config
        self.ref = resolve_reward_spec(config.function, base_dir)
        self.fn = self.ref.load()
        self.name = self.ref.name
        self.totals: Counter[str] = Counter()
        self._procs = (ProcessPool(self.ref, config.function, config.num_workers,
                                   config.timeout_s) if config.mode == "process" else None)

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (threads left behind by timed-out calls are daemons)."""
        if self._procs is not None:
            self._procs.close()

    @property
    def replaced_workers(self) -> int:
        """Worker processes killed and replaced so far (process mode)."""
        return self._procs.replaced if self._procs else 0

    def score(self, prompts: Sequence, completions: Sequence, **columns: Sequence) -> RewardResult:
        """Score one batch; ``columns`` hold one value per completion (``answer=[...]``)."""
        n = len(completions)
        _check_lengths(n, prompts, columns)
        t0 = time.perf_counter()
        bounds = self._call_bounds(n)
        payloads = [(list(prompts[a:b]), list(completions[a:b]),
                     {k: list(v[a:b]) for k, v in columns.items()}) for a, b in bounds]
        outcomes = self._run(payloads)
        scores: list[float] = []
        failures: list[str] = []
        counts: Counter[str] = Counter(calls=len(bounds))
        for (a, b), (kind, value) in zip(bounds, outcomes):
            if kind == "ok":
                scores.extend(value)  # type: ignore[arg-type]
                continue
            counts["errors" if kind == "error" else "timeouts"] += 1
            counts["failed_samples"] += b - a
            msg = (f"{value}\n  -> samples {a}..{b - 1} score {self.config.error_score} "
                   f"({self.config.mode} mode)")
            log.warning(msg)
            failures.append(msg)
            scores.extend([self.config.error_score] * (b - a))
        self.totals.update(counts)
        metrics = {f"reward/{k}": float(counts[k])
                   for k in ("calls", "errors", "timeouts", "failed_samples")}
        metrics["reward/mean"] = math.fsum(scores) / n if n else 0.0
        metrics["time/reward_s"] = time.perf_counter() - t0
        return RewardResult(scores, metrics, failures)

    def _call_bounds(self, n: int) -> list[tuple[int, int]]:
        size = self.config.call_batch_size or max(1, math.ceil(n / self.config.num_workers))
        return [(a, min(a + size, n)) for a in range(0, n, size)]

    def _run(self, payloads: list[tuple]) -> list[Outcome]:
        if self._procs is not None:
            return self._procs.run(payloads)
        if self.config.mode == "thread":
            return self._run_threads(payloads)
        return [self._call(p) for p in payloads]

    def _call(self, payload: tuple) -> Outcome:
        try:
            return ("ok", run_reward(self.fn, self.name, *payload))
        except RewardCallError as err:
            return ("error", str(err))

    def _run_threads(self, payloads: list[tuple]) -> list[Outcome]:
        # Up to num_workers calls at a time, each on its own daemon thread: a thread past
        # its deadline cannot be stopped, so it is abandoned and never blocks later calls.
        out: list[Outcome] = []
        width = self.config.num_workers
        for start in range(0, len(payloads), width):
            boxes: list[list[Outcome]] = [[] for _ in payloads[start:start + width]]
            threads = [threading.Thread(target=lambda b=b, p=p: b.append(self._call(p)),
                                        daemon=True, name="flowrl-reward")
                       for b, p in zip(boxes, payloads[start:start + width])]
            for t in threads:
                t.start()
            deadline = time.monotonic() + self.config.timeout_s
            for t, box in zip(threads, boxes):
                t.join(max(0.0, deadline - time.monotonic()))
                out.append(box[0] if box else (
                    "timeout", f"reward function '{self.name}' took longer than "
                               f"{self.config.timeout_s}s; its thread was left running "
                               f"(process mode can stop it)"))
        return out


def _check_lengths(n: int, prompts: Sequence, columns: dict[str, Sequence]) -> None:
    for key, values in {"prompts": prompts, **columns}.items():
        try:
            got = len(values)
        except TypeError:
            raise RewardInputError(f"reward column '{key}' is a {type(values).__name__}; "
                                   f"expected one value per completion") from None
        if got != n:
            raise RewardInputError(f"reward column '{key}' has {got} values for {n} "
                                   f"completions")
