"""The ``@flow`` decorator."""

from __future__ import annotations

import functools
from typing import Any, Callable

from flowrl.compiler.ir import FlowGraph
from flowrl.dsl.tracer import Tracer
from flowrl.errors import TraceError


class Flow:
    """A Python function over module calls, traced into a :class:`FlowGraph` on demand."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        functools.update_wrapper(self, fn)

    def trace(self) -> FlowGraph:
        """Trace the function once into a fresh graph (modules must already exist)."""
        graph = Tracer(self.name).trace(self.fn)
        graph.source = f"{self.fn.__code__.co_filename}:{self.fn.__code__.co_firstlineno}"
        return graph

    def __call__(self, *args: Any) -> Any:
        # Called from inside another flow's trace: inline it (its calls join the outer graph).
        from flowrl.dsl.tracer import DataProxy

        if args and all(isinstance(a, DataProxy) for a in args):
            return self.fn(*args)
        raise TraceError(
            f"flow '{self.name}' is not called directly; hand it to an Engine "
            f"(Engine(rollout, train).learn()) or call {self.name}.trace() to see its graph")

    def __repr__(self) -> str:
        return f"<flow {self.name}>"


def flow(fn: Callable[..., Any] | None = None, *, name: str | None = None):
    """Mark a function as a flow of module calls: ``@flow`` or ``@flow(name="rollout")``."""
    if fn is None:
        return lambda f: Flow(f, name)
    return Flow(fn, name)
