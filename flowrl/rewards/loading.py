"""Finding a reward function from its spec: ``"file.py:fn"`` or ``"package.module:fn"``.

A function from a file is not importable by name in another process, so worker processes
are sent a :class:`RewardFunctionRef` (the file's absolute path and the function's name,
both picklable) and load the file themselves; they never receive the function object.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from flowrl.errors import ConfigError

RewardFn = Callable[..., Any]


class RewardFunctionError(ConfigError):
    """A reward function spec could not be resolved; names the spec, file and function."""


@dataclass(frozen=True)
class RewardFunctionRef:
    """Where a reward function lives: a file (absolute path) or an importable module."""

    spec: str
    attr: str
    path: Path | None = None
    module: str | None = None

    @property
    def name(self) -> str:
        """Short name used in logs and errors: ``rewards.py:score``."""
        return f"{self.path.name if self.path else self.module}:{self.attr}"

    def load(self) -> RewardFn:
        """Import the file or module and return the function (checked to be callable)."""
        mod = _import_file(self) if self.path is not None else _import_module(self)
        return _get_function(self, mod)


def resolve_reward_spec(spec: str, base_dir: str | Path | None = None) -> RewardFunctionRef:
    """Parse ``spec``; a file path is taken relative to ``base_dir`` (the config's directory,
    default the working directory). Nothing is imported yet."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise RewardFunctionError(
            f"reward function {spec!r}: expected 'file.py:function' or "
            f"'package.module:function'")
    where, attr = spec.split(":")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser()
        if not path.is_absolute():
            path = Path(base_dir or ".") / path
        path = path.resolve()
        if not path.is_file():
            raise RewardFunctionError(f"reward function {spec!r}: file {path} does not exist")
        return RewardFunctionRef(spec, attr, path=path)
    return RewardFunctionRef(spec, attr, module=where)


def load_reward_function(spec: str, base_dir: str | Path | None = None) -> RewardFn:
    """The callable named by ``spec`` (see :func:`resolve_reward_spec`)."""
    return resolve_reward_spec(spec, base_dir).load()


def _import_file(ref: RewardFunctionRef) -> Any:
    # One module name per file path: loading the same file twice reuses it, and two files
    # called rewards.py in different directories do not collide.
    digest = hashlib.sha1(str(ref.path).encode()).hexdigest()[:10]
    name = f"flowrl_reward_{ref.path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ref.path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # before exec: dataclasses/pickle look the module up by name
    try:
        spec.loader.exec_module(mod)
    except Exception as err:
        del sys.modules[name]
        raise RewardFunctionError(f"reward function {ref.spec!r}: importing {ref.path} "
                                  f"failed: {type(err).__name__}: {err}") from err
    return mod


def _import_module(ref: RewardFunctionRef) -> Any:
    try:
        return importlib.import_module(ref.module)
    except Exception as err:
        raise RewardFunctionError(f"reward function {ref.spec!r}: cannot import module "
                                  f"'{ref.module}': {type(err).__name__}: {err}") from err


def _get_function(ref: RewardFunctionRef, mod: Any) -> RewardFn:
    where = str(ref.path) if ref.path else f"module '{ref.module}'"
    obj: Any = mod
    for part in ref.attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(mod) if callable(getattr(mod, n)) and not n.startswith("_")]
            hint = difflib.get_close_matches(ref.attr, names, n=1)
            raise RewardFunctionError(
                f"reward function {ref.spec!r}: {where} has no function '{ref.attr}'"
                + (f"; did you mean '{hint[0]}'?" if hint else "")
                + f" (functions there: {', '.join(sorted(names)) or 'none'})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardFunctionError(f"reward function {ref.spec!r}: '{ref.attr}' in {where} is "
                                  f"a {type(obj).__name__}, not a function")
    _check_signature(ref, obj, where)
    return obj


def _check_signature(ref: RewardFunctionRef, fn: RewardFn, where: str) -> None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    if len(positional) < 2 and not varargs:
        raise RewardFunctionError(
            f"reward function {ref.spec!r}: '{ref.attr}' in {where} must take "
            f"(prompts, completions, **columns); it takes ({', '.join(p.name for p in params)})")
