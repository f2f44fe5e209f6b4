"""The pipelined episode as data: stages, the bounded buffer between them, versioned pushes.

With ``runtime_args.max_staleness = k >= 1`` (semantics: :mod:`flowrl.ir.episode`) the
compiler splits the episode into two stages: the **rollout stage** (every rollout run of an
episode) and the **train stage** (every train run, then the sync). They are joined by a
bounded buffer holding at most ``k`` rollout episodes besides the one in training, and the
sync becomes a *versioned push*: it publishes policy version ``e + 1`` into the inference
models once the rollout in flight (which reads version ``e``) has finished.

Steady state, per episode, with ``R`` the rollout stage, ``T`` the train runs and ``S`` the
sync (all in seconds, from the schedule's estimates):

* disjoint device groups: ``max(R, T) + S``. The train group works ``T``, then the push waits
  for the in-flight rollout (``max(0, R - T)``: the sync's wait), then runs ``S``; the push
  also holds the rollout group, so rollout ``e + k + 1`` starts after it.
* shared devices: ``R + T + S``, the synchronous time: staleness buys no overlap.

A :class:`PipelinePlan` exists only for ``k >= 1``; its JSON form is the ``pipeline`` object
of ``flowrl.schedule/1`` (absent for ``k = 0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: the roles it runs, the devices they use, seconds per episode.

    ``busy``: seconds the stage's device group works per steady-state episode (its roles
    plus, for the rollout stage, the push it receives); ``bubble``: seconds it idles.
    """

    name: str
    roles: tuple[str, ...]
    devices: tuple[int, ...]
    time: float
    busy: float
    bubble: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "roles": list(self.roles), "devices": list(self.devices),
                "time": self.time, "busy": self.busy, "bubble": self.bubble}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stage":
        return cls(d["name"], tuple(d["roles"]), tuple(d["devices"]), float(d["time"]),
                   float(d["busy"]), float(d["bubble"]))


@dataclass(frozen=True)
class Suggestion:
    """A placement that would overlap the stages, with its predicted steady state
    (``colocation``: the colocation groups it assumes, empty for the config's own)."""

    strategy: str
    steady_state_time: float
    speedup: float
    colocation: tuple[tuple[str, ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "steady_state_time": self.steady_state_time,
                "speedup": self.speedup, "colocation": [list(g) for g in self.colocation]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Suggestion":
        return cls(d["strategy"], float(d["steady_state_time"]), float(d["speedup"]),
                   tuple(tuple(g) for g in d.get("colocation", ())))


@dataclass(frozen=True)
class PipelinePlan:
    """The pipelined episode of a schedule compiled with ``max_staleness >= 1``.

    ``stages``: rollout stage, then train stage. ``buffer_depth``: rollout episodes the
    buffer holds besides the one in training (``= max_staleness``). ``pushes``: the versioned
    syncs (trainer, inference model). ``overlap``: the stages' devices are disjoint;
    ``shared_devices``: the devices they share (empty when they overlap).
    ``sync_time``/``sync_wait``: the push and its wait for the in-flight rollout.
    ``steady_state_time``: seconds per episode once the pipeline is full;
    ``synchronous_time``: the same episode with ``max_staleness = 0``; ``speedup``: their
    ratio. ``suggestion``: when the stages share devices, a placement that would overlap them.
    """

    max_staleness: int
    buffer_depth: int
    stages: tuple[Stage, ...]
    pushes: tuple[tuple[str, str], ...]
    overlap: bool
    shared_devices: tuple[int, ...]
    sync_time: float
    sync_wait: float
    steady_state_time: float
    synchronous_time: float
    speedup: float
    suggestion: Suggestion | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (``rollout`` or ``train``)."""
        return next(s for s in self.stages if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"max_staleness": self.max_staleness, "buffer_depth": self.buffer_depth,
                "stages": [s.to_dict() for s in self.stages],
                "pushes": [list(p) for p in self.pushes], "overlap": self.overlap,
                "shared_devices": list(self.shared_devices), "sync_time": self.sync_time,
                "sync_wait": self.sync_wait, "steady_state_time": self.steady_state_time,
                "synchronous_time": self.synchronous_time, "speedup": self.speedup,
                "suggestion": self.suggestion.to_dict() if self.suggestion else None,
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PipelinePlan":
        sug = d.get("suggestion")
        return cls(int(d["max_staleness"]), int(d["buffer_depth"]),
                   tuple(Stage.from_dict(s) for s in d["stages"]),
                   tuple((a, b) for a, b in d["pushes"]), bool(d["overlap"]),
                   tuple(d["shared_devices"]), float(d["sync_time"]), float(d["sync_wait"]),
                   float(d["steady_state_time"]), float(d["synchronous_time"]),
                   float(d["speedup"]), Suggestion.from_dict(sug) if sug else None,
                   tuple(d.get("notes", ())))
