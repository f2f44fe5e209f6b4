"""Tracing a ``@flow`` function into a :class:`~flowrl.ir.FlowGraph`.

Like ``torch.fx``'s symbolic tracing: the function runs once on a :class:`DataProxy`
standing for its input batch. While it runs, the public methods of the modules the flow uses
(found from the function itself, see :mod:`flowrl.dsl.discover`) are shadowed by recorders,
so ``policy.forward_step(batch)`` records a call node instead of computing. A module the
search did not find would run its real code on a proxy: every module class's methods are
guarded for the duration, so such a call is a :class:`~flowrl.errors.TraceError` naming the
module. Data-dependent Python (``if``, ``for``, ``len``, indexing) on a proxy raises a
:class:`~flowrl.errors.TraceError` naming the offending line.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
from typing import Any, Callable, Iterable, Iterator, NoReturn

from flowrl.errors import ConfigError, KeyCollisionError, TraceError
from flowrl.ir import FLOW_INPUT, CallNode, FlowGraph
from flowrl.models.base import BaseModule, is_lifecycle

# Frames in these files are flowrl's tracing machinery, never the user's line.
_SKIP = (os.path.dirname(os.path.abspath(__file__)) + os.sep,
         os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "models", "base.py")))


def user_frame_location() -> str:
    """``file:line`` of the innermost frame outside flowrl's own sources (the user's code)."""
    frame = sys._getframe(1)
    while frame is not None:
        fname = os.path.abspath(frame.f_code.co_filename)
        if not fname.startswith(_SKIP):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


class DataProxy:
    """The symbolic output of a call (or the flow's input batch) during tracing."""

    __slots__ = ("_tracer", "_node", "_keys", "_label")

    def __init__(self, tracer: "Tracer", node: str, keys: frozenset[str] | None, label: str):
        self._tracer, self._node, self._keys, self._label = tracer, node, keys, label

    def _refuse(self, what: str) -> TraceError:
        return TraceError(
            f"{what} on the output of {self._label} at {user_frame_location()}: a flow is "
            f"traced once, before any data exists, so Python control flow cannot depend on "
            f"data. Move the data-dependent logic inside a module's step method.")

    def __bool__(self) -> bool:
        raise self._refuse("'if'/'while'/'and'/'or' (truth test)")

    def __iter__(self):
        raise self._refuse("iteration ('for', unpacking)")

    def __len__(self) -> int:
        raise self._refuse("len()")

    def __contains__(self, item: Any) -> bool:
        raise self._refuse("'in' test")

    def __getitem__(self, item: Any) -> Any:
        raise self._refuse(f"indexing [{item!r}]")

    def __int__(self) -> int:
        raise self._refuse("int()")

    def __float__(self) -> float:
        raise self._refuse("float()")

    def __index__(self) -> int:
        raise self._refuse("use as an index")

    def __repr__(self) -> str:
        return f"DataProxy({self._label})"


class _Recorder:
    """Stands in for ``module.method`` while tracing; each call adds a node."""

    def __init__(self, tracer: "Tracer", module: BaseModule, method: str) -> None:
        self.tracer, self.module, self.method = tracer, module, method

    def __call__(self, *args: Any, **kwargs: Any) -> DataProxy:
        return self.tracer.record(self.module, self.method, args, kwargs)


class _Forbidden:
    def __init__(self, module: BaseModule, method: str) -> None:
        self.module, self.method = module, method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TraceError(
            f"'{self.module.name}.{self.method}' is part of the module's life cycle and cannot "
            f"be called inside a flow (at {user_frame_location()}); flowrl calls it for you")


class _Undiscovered:
    """Stands in, on a module *class*, for a method while a flow is traced: reached only by a
    module the tracer did not find (found modules are shadowed per instance)."""

    def __init__(self, tracer: "Tracer", method: str, original: Callable[..., Any]) -> None:
        self.tracer, self.method, self.original = tracer, method, original
        self.thread = threading.get_ident()

    def __get__(self, module: Any, owner: type) -> Any:
        # Class attribute access (flow_methods, dir) and other threads see the real method.
        if module is None or threading.get_ident() != self.thread:
            return self.original.__get__(module, owner)
        return lambda *args, **kwargs: self.tracer.refuse_undiscovered(module, self.method)


def _module_classes() -> Iterator[type]:
    """BaseModule and every subclass alive now."""
    todo, seen = [BaseModule], set()
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            yield cls
            todo.extend(cls.__subclasses__())


class Tracer:
    """Records module calls made by a flow function into a :class:`FlowGraph`.

    ``modules`` are the modules the flow may call (the ones :func:`find_modules` found in
    it, plus any its caller knows of); after :meth:`trace`, :attr:`called` maps each
    ``model_name`` the flow called to its module.
    """

    def __init__(self, name: str, modules: Iterable[BaseModule] = ()) -> None:
        self.graph = FlowGraph(name)
        self.modules = list(dict.fromkeys(modules))
        self.called: dict[str, BaseModule] = {}
        self._counts: dict[str, int] = {}

    def trace(self, fn: Callable[..., Any]) -> FlowGraph:
        shadowed = self._shadow(self.modules)
        guarded = self._guard_classes()
        try:
            result = fn(DataProxy(self, FLOW_INPUT, None, "the flow's input batch"))
        finally:
            for cls, n, original in guarded:
                setattr(cls, n, original)
            for module, names in shadowed:
                for n in names:
                    module.__dict__.pop(n, None)
        self.graph.outputs = self._result_nodes(result)
        if len(self.graph) == 0:
            raise TraceError(f"flow '{self.graph.name}' calls no module methods")
        return self.graph

    def _shadow(self, modules: list[BaseModule]) -> list[tuple[BaseModule, list[str]]]:
        # Every public function: life-cycle ones refuse, the rest record. Whether the class
        # implements a recorded method (flow_methods) the engine and validate pass check.
        shadowed = []
        for m in modules:
            names = []
            for n in dir(type(m)):
                if n.startswith("_") or not inspect.isfunction(getattr(type(m), n, None)):
                    continue
                m.__dict__[n] = _Forbidden(m, n) if is_lifecycle(n) else _Recorder(self, m, n)
                names.append(n)
            shadowed.append((m, names))
        return shadowed

    def _guard_classes(self) -> list[tuple[type, str, Any]]:
        guarded = []
        for cls in _module_classes():
            for n, original in list(vars(cls).items()):
                if not n.startswith("_") and inspect.isfunction(original):
                    setattr(cls, n, _Undiscovered(self, n, original))
                    guarded.append((cls, n, original))
        return guarded

    def refuse_undiscovered(self, module: BaseModule, method: str) -> NoReturn:
        """The error for a call on a module the flow's search did not find."""
        name = module.__dict__.get("name", "?")
        raise TraceError(
            f"flow '{self.graph.name}' calls {name}.{method} at {user_frame_location()}, but "
            f"module '{name}' ({type(module).__name__}) is not among the modules found in the "
            f"flow: refer to it by a name the flow function sees (a global, a variable of an "
            f"enclosing function, a default argument, or an attribute of one of those)")

    def record(self, module: BaseModule, method: str, args: tuple, kwargs: dict) -> DataProxy:
        where = user_frame_location()
        if kwargs:
            raise TraceError(
                f"{module.name}.{method} called with keyword arguments {sorted(kwargs)} at "
                f"{where}; module calls in a flow take flow values as positional arguments")
        inputs: list[DataProxy] = []
        for a in args:
            if not isinstance(a, DataProxy):
                raise TraceError(
                    f"{module.name}.{method} got a {type(a).__name__} at {where}; module calls "
                    f"in a flow take only flow values (the flow's input or other calls' outputs)")
            if a._tracer is not self:
                raise TraceError(f"{module.name}.{method} got a value from another flow at {where}")
            if all(a._node != b._node for b in inputs):
                inputs.append(a)
        check_key_collisions(inputs, f"the inputs of {module.name}.{method} at {where}")
        self._check_unique_name(module)
        k = self._counts.get(f"{module.name}.{method}", 0) + 1
        self._counts[f"{module.name}.{method}"] = k
        node_id = f"{module.name}.{method}" + (f"#{k}" if k > 1 else "")
        declared = getattr(getattr(type(module), method), "__flowrl_outputs__", None)
        self.graph.add_call(CallNode(
            id=node_id, model=module.name, method=method,
            inputs=tuple(p._node for p in inputs), outputs=declared, source=where,
            order=len(self.graph)))
        return DataProxy(self, node_id, declared, node_id)

    def _check_unique_name(self, module: BaseModule) -> None:
        other = self.called.setdefault(module.name, module)
        if other is not module:
            raise ConfigError(
                f"model_name '{module.name}' is already used by a {type(other).__name__}; every "
                f"module needs a unique model_name (its config section is keyed by it)")

    def _result_nodes(self, result: Any) -> tuple[str, ...]:
        if result is None:
            return ()
        items = list(result) if isinstance(result, (tuple, list)) else [result]
        for r in items:
            if not isinstance(r, DataProxy):
                raise TraceError(
                    f"flow '{self.graph.name}' returned a {type(r).__name__}; return None, a "
                    f"call's output, or a tuple of call outputs")
        check_key_collisions(items, f"the result of flow '{self.graph.name}'")
        return tuple(dict.fromkeys(r._node for r in items))


def check_key_collisions(proxies: list[DataProxy], where: str) -> None:
    """Raise if two proxies with declared keys share a key (flowrl never overwrites)."""
    seen: dict[str, str] = {}
    for p in proxies:
        for key in sorted(p._keys or ()):
            if key in seen:
                raise KeyCollisionError(
                    f"key '{key}' is produced by both {seen[key]} and {p._label}, which both "
                    f"feed {where}; rename one of them")
            seen[key] = p._label
