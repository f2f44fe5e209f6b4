"""Finding the modules a flow function uses, from the function itself (no registry).

A flow reaches its modules through Python names, so the modules are among the values those
names hold: closure variables, the globals its code names (also in nested functions,
lambdas and comprehensions), default arguments, and the same again for the sub-flows and
plain helper functions it calls. Containers (list, tuple, set, dict) and the attributes of
plain objects (``self.policy`` in a flow defined in a method) are looked into two levels
deep. What the search cannot reach, the tracer reports as a :class:`TraceError` when the
flow calls it (see :class:`flowrl.dsl.tracer.Tracer`).
"""

from __future__ import annotations

import builtins
import inspect
import types
from typing import Any, Callable, Iterator

from flowrl.models.base import BaseModule

_MAX_FUNCTION_DEPTH = 4  # flow -> sub-flow / helper -> ...: deeper helpers are not searched
_MAX_VALUE_DEPTH = 2  # containers / object attributes looked into below a name


def find_modules(fn: Callable[..., Any]) -> list[BaseModule]:
    """The modules ``fn`` can reach through its names, in first-found order."""
    search = _Search()
    search.function(fn, 0)
    return list(search.found.values())


class _Search:
    def __init__(self) -> None:
        self.found: dict[int, BaseModule] = {}
        self.seen: set[int] = set()

    def function(self, fn: Any, depth: int) -> None:
        fn = inspect.unwrap(fn)  # a Flow (functools.update_wrapper) -> its function
        if not inspect.isfunction(fn) or id(fn) in self.seen or depth > _MAX_FUNCTION_DEPTH:
            return
        self.seen.add(id(fn))
        for value in _names_of(fn):
            self.value(value, depth, 0)

    def value(self, value: Any, fn_depth: int, depth: int) -> None:
        if isinstance(value, BaseModule):
            self.found.setdefault(id(value), value)
        elif inspect.isfunction(value) or "__wrapped__" in getattr(value, "__dict__", {}):
            self.function(value, fn_depth + 1)
        elif inspect.ismethod(value):
            self.value(value.__self__, fn_depth, depth)
            self.function(value.__func__, fn_depth + 1)
        elif depth < _MAX_VALUE_DEPTH and id(value) not in self.seen:
            self.seen.add(id(value))
            for item in _contents(value):
                self.value(item, fn_depth, depth + 1)


def _names_of(fn: types.FunctionType) -> Iterator[Any]:
    """Values of the closure cells, referenced globals and defaults of ``fn``."""
    for cell in fn.__closure__ or ():
        try:
            yield cell.cell_contents
        except ValueError:  # a cell not assigned yet
            continue
    yield from fn.__defaults__ or ()
    yield from (fn.__kwdefaults__ or {}).values()
    missing = object()
    for name in _global_names(fn.__code__):
        value = fn.__globals__.get(name, missing)
        if value is not missing:
            yield value


def _global_names(code: types.CodeType) -> Iterator[str]:
    """Names ``code`` and its nested code objects look up (globals, attributes)."""
    yield from (n for n in code.co_names if not hasattr(builtins, n))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _global_names(const)


def _contents(value: Any) -> list[Any]:
    """What a container or a plain object holds (nothing for modules, classes, ...)."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, (type, types.ModuleType, str, bytes)) or callable(value):
        return []
    attrs = getattr(value, "__dict__", None)
    return list(attrs.values()) if isinstance(attrs, dict) else []
