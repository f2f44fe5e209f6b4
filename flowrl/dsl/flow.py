"""The ``@flow`` decorator."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Iterable

from flowrl.dsl.discover import find_modules
from flowrl.dsl.tracer import Tracer
from flowrl.errors import TraceError
from flowrl.ir import FlowGraph
from flowrl.models.base import BaseModule


class Flow:
    """A Python function over module calls, traced into a :class:`FlowGraph` on demand."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        functools.update_wrapper(self, fn)

    @property
    def location(self) -> str:
        """``file:line`` where the flow is defined."""
        return f"{self.fn.__code__.co_filename}:{self.fn.__code__.co_firstlineno}"

    def trace(self, modules: Iterable[BaseModule] = ()) -> FlowGraph:
        """Trace the function once into a fresh graph.

        The modules it may call are found in the function itself (closure variables,
        globals, defaults, sub-flows; see :mod:`flowrl.dsl.discover`) plus ``modules``.
        """
        return self.capture(modules)[0]

    def capture(self, modules: Iterable[BaseModule] = ()
                ) -> tuple[FlowGraph, dict[str, BaseModule]]:
        """Trace as :meth:`trace` does; also return ``model_name -> module`` for every
        module the flow calls (what an engine binds and runs)."""
        self._check_one_parameter()
        tracer = Tracer(self.name, [*find_modules(self.fn), *modules])
        graph = tracer.trace(self.fn)
        graph.source = self.location
        return graph, dict(tracer.called)

    def _check_one_parameter(self) -> None:
        # An engine runs a flow on one value (a prompt batch, or a train flow's list of
        # micro-batches); inlined sub-flows (see __call__) may take several flow values.
        signature = inspect.signature(self.fn)
        params = list(signature.parameters.values())
        if len(params) == 1 and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                   inspect.Parameter.POSITIONAL_OR_KEYWORD):
            return
        raise TraceError(
            f"flow '{self.name}' at {self.location} takes {signature}; a flow takes exactly one "
            f"parameter, its input batch (for a train flow: the global batch, a list of "
            f"micro-batch dicts). Other values reach modules through their config (args)")

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
