"""The intermediate representation shared by the DSL, the compiler and the runtimes.

A traced ``@flow`` becomes a :class:`FlowGraph`: a ``networkx.DiGraph`` whose nodes are
module calls (:class:`CallNode`) and whose edges are data dependencies. The compiler turns
graphs into a :class:`Schedule`, an ordered list of :class:`Op` per flow that the runtimes
execute. Nothing here touches model weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import networkx as nx

#: Pseudo node id standing for the batch a flow is called with.
FLOW_INPUT = "<input>"


@dataclass(frozen=True)
class CallNode:
    """One recorded ``module.method(*inputs)`` call.

    Attributes:
        id: unique within its graph, ``"model.method"`` (``"#k"`` appended for repeat calls).
        model: the module's ``model_name``.
        method: the method called (``forward_step``, ``train_step``, ``generate`` ...).
        inputs: node ids (or :data:`FLOW_INPUT`) whose outputs are merged into the call's data.
        outputs: keys the method declared with ``@outputs`` (``None``: not declared).
        source: ``"file:line"`` of the call in the user's flow, for error messages.
        order: position in trace order (ties in topological order break on it).
    """

    id: str
    model: str
    method: str
    inputs: tuple[str, ...]
    outputs: frozenset[str] | None = None
    source: str = ""
    order: int = 0

    @property
    def is_train(self) -> bool:
        """A training call (updates weights)."""
        return self.method == "train_step"


@dataclass
class FlowGraph:
    """A traced flow: call nodes, data edges and the nodes whose outputs form the result."""

    name: str
    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    outputs: tuple[str, ...] = ()
    source: str = ""

    def add_call(self, node: CallNode) -> None:
        self.graph.add_node(node.id, call=node)
        for src in node.inputs:
            if src != FLOW_INPUT:
                self.graph.add_edge(src, node.id)

    def call(self, node_id: str) -> CallNode:
        return self.graph.nodes[node_id]["call"]

    def calls(self) -> list[CallNode]:
        """Calls in deterministic topological order (trace order breaks ties)."""
        order = nx.lexicographical_topological_sort(self.graph, key=lambda n: self.call(n).order)
        return [self.call(n) for n in order]

    def __iter__(self) -> Iterator[CallNode]:
        return iter(self.calls())

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def models(self) -> list[str]:
        """Model names in first-use order."""
        seen: dict[str, None] = {}
        for c in self.calls():
            seen.setdefault(c.model, None)
        return list(seen)

    def entry_calls(self) -> list[CallNode]:
        """Calls that read the flow's input batch."""
        return [c for c in self.calls() if FLOW_INPUT in c.inputs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodes": [
                {"id": c.id, "model": c.model, "method": c.method, "inputs": list(c.inputs),
                 "outputs": sorted(c.outputs) if c.outputs is not None else None,
                 "source": c.source}
                for c in self.calls()
            ],
            "outputs": list(self.outputs),
        }

    def __str__(self) -> str:
        lines = [f"flow {self.name}:"]
        for c in self.calls():
            ins = ", ".join("batch" if i == FLOW_INPUT else i for i in c.inputs)
            lines.append(f"  {c.id}({ins})")
        lines.append("  return " + ", ".join(self.outputs))
        return "\n".join(lines)


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

    def to_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "peak_before": self.peak_before,
                "peak_after": self.peak_after, "state": self.state,
                "timeline": [{"role": p.role, "index": p.index, "label": p.label,
                              "time": p.time, "before": p.before, "after": p.after,
                              "resident": p.resident} for p in self.timeline]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MemoryReport":
        return cls(list(d["capacity"]), list(d["peak_before"]), list(d["peak_after"]),
                   [MemoryPoint(p["role"], p["index"], p["label"], p["time"], list(p["before"]),
                                list(p["after"]), {k: list(v) for k, v in p["resident"].items()})
                    for p in d["timeline"]],
                   {m: dict(k) for m, k in d["state"].items()})


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

    def to_dict(self) -> dict[str, Any]:
        return {"iteration_time": self.iteration_time, "repeats": self.repeats,
                "role_time": self.role_time, "role_repeat_time": self.role_repeat_time,
                "transfer_bytes": self.transfer_bytes, "sync_bytes": self.sync_bytes,
                "repeat_ops": self.repeat_ops, "pipelined": self.pipelined}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Estimates":
        return cls(d["iteration_time"], dict(d["repeats"]), dict(d["role_time"]),
                   dict(d["role_repeat_time"]), d["transfer_bytes"], d["sync_bytes"],
                   {r: [list(x) for x in v] for r, v in d.get("repeat_ops", {}).items()},
                   list(d.get("pipelined", [])))


@dataclass
class Schedule:
    """What a runtime executes: the traced graphs and, per flow, the ordered ops.

    ``ops`` is keyed by flow role (``"rollout"``, ``"train"``, ``"sync"``, ``"eval"``).
    The compiler fills ``placement`` (model -> :class:`Mesh`), ``memory``
    (:class:`MemoryReport`), ``estimates`` (:class:`Estimates`) and ``cluster`` (a
    ``ClusterSpec``); a schedule built with :func:`flowrl.compiler.lower.lower` (no
    cluster) has only the ops and empty dicts there.
    """

    graphs: dict[str, FlowGraph]
    ops: dict[str, list[Op]]
    placement: dict[str, Mesh] = field(default_factory=dict)
    memory: MemoryReport | dict[str, Any] = field(default_factory=dict)
    estimates: Estimates | dict[str, Any] = field(default_factory=dict)
    cluster: Any = None
    strategy: str = "none"

    def ops_for(self, role: str) -> list[Op]:
        return self.ops.get(role, [])

    # The renderers live in flowrl.compiler.report (rich, matplotlib), imported on use so the
    # IR stays a light contract module.
    def explain(self) -> str:
        """A human-readable report: DAG, meshes, ops with times, memory, iteration time."""
        from flowrl.compiler.report import explain_text

        return explain_text(self)

    def to_json(self) -> dict[str, Any]:
        """The documented ``flowrl.schedule/1`` JSON object (see docs/compiler.md)."""
        from flowrl.compiler.report import schedule_to_json

        return schedule_to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Schedule":
        """Inverse of :meth:`to_json`."""
        from flowrl.compiler.report import schedule_from_json

        return schedule_from_json(data)

    def to_chrome_trace(self, path: str) -> str:
        """Write the estimated iteration timeline as a Chrome/Perfetto trace; returns the path."""
        from flowrl.compiler.report import write_chrome_trace

        return write_chrome_trace(self, path)

    def plot_memory(self, path: str) -> str:
        """Plot per-device memory over the iteration (before/after offload) to a PNG."""
        from flowrl.compiler.report import plot_memory

        return plot_memory(self, path)
