"""Traced flows as data: :class:`CallNode` calls and the :class:`FlowGraph` that links them.

A traced ``@flow`` becomes a :class:`FlowGraph`: a ``networkx.DiGraph`` whose nodes are
module calls and whose edges are data dependencies. Nothing here touches model weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

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
