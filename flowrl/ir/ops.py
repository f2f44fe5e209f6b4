"""Schedule parts as data: ops, meshes, worker groups, the memory report and the estimates.

:class:`~flowrl.ir.schedule.Schedule` holds them; :mod:`flowrl.ir.serialize` gives their
JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx


OpKind = Literal["call", "offload", "onload", "sync"]


@dataclass
class Op:
    """One step of a schedule.

    ``call`` runs a graph node; ``offload``/``onload`` move a model's state off/onto its
    devices; ``sync`` copies a trainer's weights into an inference model (``model`` is the
    destination, ``src`` the trainer).
    """

    kind: OpKind
    model: str
    node: str | None = None
    src: str | None = None
    what: tuple[str, ...] = ()  # offload/onload: which state ("weights", "grads", "optimizer")
    devices: tuple[int, ...] = ()
    start: float = 0.0  # estimated, seconds from the start of the flow
    duration: float = 0.0  # estimated seconds
    bytes: int = 0  # bytes moved (offload/onload/sync)
    #: offload/onload of optimizer state that a device runtime streams chunk by chunk through
    #: the adjacent op (the onload precedes it, the offload follows), ZeRO-Offload style, so
    #: only one chunk is on the device at a time. Without streaming: a plain transfer.
    streamed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "node": self.node, "src": self.src,
                "what": list(self.what), "devices": list(self.devices), "start": self.start,
                "duration": self.duration, "bytes": self.bytes, "streamed": self.streamed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Op":
        return cls(kind=d["kind"], model=d["model"], node=d.get("node"), src=d.get("src"),
                   what=tuple(d.get("what", ())), devices=tuple(d.get("devices", ())),
                   start=float(d.get("start", 0.0)), duration=float(d.get("duration", 0.0)),
                   bytes=int(d.get("bytes", 0)), streamed=bool(d.get("streamed", False)))

    def label(self) -> str:
        if self.kind == "call":
            return self.node or self.model
        if self.kind == "sync":
            return f"sync {self.src} -> {self.model}"
        return f"{self.kind} {self.model} ({'+'.join(self.what)})"


@dataclass(frozen=True)
class Mesh:
    """Where one model runs: its device ids and parallel sizes (``len(devices) == tp*pp*dp``)."""

    devices: tuple[int, ...]
    tp: int = 1
    pp: int = 1
    dp: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"devices": list(self.devices), "tp": self.tp, "pp": self.pp, "dp": self.dp}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Mesh":
        return cls(tuple(d["devices"]), d["tp"], d["pp"], d["dp"])


@dataclass
class MemoryPoint:
    """Per-device bytes in use while one call/sync op runs (``before``: nothing offloaded)."""

    role: str
    index: int  # position of the op in ``Schedule.ops[role]``
    label: str
    time: float  # estimated start, seconds from the start of the iteration
    before: list[int]
    after: list[int]
    resident: dict[str, list[str]] = field(default_factory=dict)  # model -> kinds, after offload


@dataclass
class MemoryReport:
    """The memory pass's and offload pass's result, per device (list index = device id)."""

    capacity: list[int]
    peak_before: list[int]
    peak_after: list[int]
    timeline: list[MemoryPoint]
    state: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> kind -> B/device
    #: host RAM per node: usable bytes (0: not checked), peak bytes of offloaded state over
    #: the iteration, and what each model had offloaded there at that peak
    host_capacity: int = 0
    host_peak: list[int] = field(default_factory=list)
    host_models: list[dict[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "peak_before": self.peak_before,
                "peak_after": self.peak_after, "state": self.state,
                "timeline": [{"role": p.role, "index": p.index, "label": p.label,
                              "time": p.time, "before": p.before, "after": p.after,
                              "resident": p.resident} for p in self.timeline],
                "host_capacity": self.host_capacity, "host_peak": self.host_peak,
                "host_models": self.host_models}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MemoryReport":
        return cls(list(d["capacity"]), list(d["peak_before"]), list(d["peak_after"]),
                   [MemoryPoint(p["role"], p["index"], p["label"], p["time"], list(p["before"]),
                                list(p["after"]), {k: list(v) for k, v in p["resident"].items()})
                    for p in d["timeline"]],
                   {m: dict(k) for m, k in d["state"].items()},
                   int(d.get("host_capacity", 0)), list(d.get("host_peak", [])),
                   [dict(x) for x in d.get("host_models", [])])


@dataclass
class Estimates:
    """Estimated times (seconds) from the cost model.

    ``role_time[r]``: one run of role ``r`` entered from the role that usually precedes it;
    ``role_repeat_time[r]``: what each further run adds (entered from itself, so its entry
    transfers are no-ops; for ``pipelined`` roles, runs overlap across devices and this is
    the average period). ``iteration_time``: one episode,
    ``sum(role_time[r] + (repeats[r] - 1) * role_repeat_time[r])``.
    """

    iteration_time: float
    repeats: dict[str, int]
    role_time: dict[str, float]
    role_repeat_time: dict[str, float]
    transfer_bytes: int  # offload + onload bytes per iteration
    sync_bytes: int  # parameter-sync bytes per iteration
    #: role -> [start, duration] of each op in a repeat run (``Op.start``/``duration``: first)
    repeat_ops: dict[str, list[list[float]]] = field(default_factory=dict)
    pipelined: list[str] = field(default_factory=list)  # roles whose runs overlap
    #: per episode: samples trained on, tokens generated, useful model FLOPs (2PBS scoring,
    #: 2P per processed or generated token, 6PGS training) and device-seconds some op keeps
    #: a device busy (what throughput, MFU and idle time are computed from)
    samples: int = 0
    generated_tokens: int = 0
    model_flops: float = 0.0
    busy_device_s: float = 0.0
    #: the best plans the placement search rejected, best first (filled by the search)
    candidates: list["PlanSummary"] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"iteration_time": self.iteration_time, "repeats": self.repeats,
                "role_time": self.role_time, "role_repeat_time": self.role_repeat_time,
                "transfer_bytes": self.transfer_bytes, "sync_bytes": self.sync_bytes,
                "repeat_ops": self.repeat_ops, "pipelined": self.pipelined,
                "samples": self.samples, "generated_tokens": self.generated_tokens,
                "model_flops": self.model_flops, "busy_device_s": self.busy_device_s,
                "candidates": [c.to_dict() for c in self.candidates]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Estimates":
        return cls(d["iteration_time"], dict(d["repeats"]), dict(d["role_time"]),
                   dict(d["role_repeat_time"]), d["transfer_bytes"], d["sync_bytes"],
                   {r: [list(x) for x in v] for r, v in d.get("repeat_ops", {}).items()},
                   list(d.get("pipelined", [])), int(d.get("samples", 0)),
                   int(d.get("generated_tokens", 0)), float(d.get("model_flops", 0.0)),
                   float(d.get("busy_device_s", 0.0)),
                   [PlanSummary.from_dict(c) for c in d.get("candidates", [])])


@dataclass
class WorkerGroup:
    """Models that share worker processes because they share devices.

    ``replicas``: processes of the group (its largest data-parallel size); a model with ``dp``
    replicas lives on the group's first ``dp`` workers (``dp[model]``).
    """

    name: str
    models: list[str]
    replicas: int
    devices: list[int]
    dp: dict[str, int] = field(default_factory=dict)


def group_workers(placement: dict[str, Mesh], order: list[str] | None = None) -> list[WorkerGroup]:
    """Worker groups of a placement: models whose device sets overlap (transitively) share
    workers. Groups and members follow ``order`` (default: the placement's order)."""
    models = list(order) if order is not None else list(placement)
    g = nx.Graph()
    g.add_nodes_from(models)
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            if set(placement[a].devices) & set(placement[b].devices):
                g.add_edge(a, b)
    groups = []
    for comp in sorted(nx.connected_components(g), key=lambda c: min(models.index(m) for m in c)):
        members = sorted(comp, key=models.index)
        dp = {m: placement[m].dp for m in members}
        devices = sorted(set().union(*(placement[m].devices for m in members)))
        groups.append(WorkerGroup("+".join(members), members, max(dp.values()), devices, dp))
    return groups


@dataclass
class PlanSummary:
    """One compiled plan in the numbers ``flowrl explain`` compares plans by.

    ``time``: seconds per episode (the pipelined steady state when the plan is pipelined);
    ``idle_device_s``: device-seconds per episode no op runs (``devices x time - busy``);
    ``bubble_s``: of those, the device-seconds a pipelined stage waits for the other (0 for a
    synchronous plan); ``transfer_bytes``: offload + onload per episode; ``sync_s``: seconds
    of parameter sync per episode; ``peak_memory``: the fullest device after offload;
    ``layout``: model -> ``"devices 0-3 TP2xDP2"``-style text. Built by
    :func:`flowrl.compiler.summary.summarize`; the placement search keeps its runner-ups in
    :attr:`Estimates.candidates`.
    """

    strategy: str
    time: float
    samples_per_s: float
    tokens_per_s: float
    mfu: float
    idle_device_s: float
    bubble_s: float
    transfer_bytes: int
    sync_s: float
    peak_memory: int
    layout: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "time": self.time,
                "samples_per_s": self.samples_per_s, "tokens_per_s": self.tokens_per_s,
                "mfu": self.mfu, "idle_device_s": self.idle_device_s,
                "bubble_s": self.bubble_s, "transfer_bytes": self.transfer_bytes,
                "sync_s": self.sync_s, "peak_memory": self.peak_memory, "layout": self.layout}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PlanSummary":
        return cls(d["strategy"], float(d["time"]), float(d["samples_per_s"]),
                   float(d["tokens_per_s"]), float(d["mfu"]), float(d["idle_device_s"]),
                   float(d["bubble_s"]), int(d["transfer_bytes"]), float(d["sync_s"]),
                   int(d["peak_memory"]), dict(d.get("layout", {})))
