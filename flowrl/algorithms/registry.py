"""Name -> function registries for advantage estimators, policy losses and KL estimators.

A user adds an algorithm with one decorator; config files and engines then refer to it by
name::

    from flowrl.algorithms import register_advantage

    @register_advantage("my_baseline")
    def my_baseline(rewards, mask, *, group_size=1, **_):
        ...

Looking up an unknown name raises :class:`~flowrl.errors.UnknownAlgorithmError` naming the
kind and the name, suggesting the closest registered name and listing all of them.
Registering a name twice is an error (a silent override would change a run's math without
a trace); pass ``replace=True`` to override on purpose.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Generic, TypeVar

from flowrl.errors import AlgorithmError, UnknownAlgorithmError

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[F]):
    """Named functions of one kind (``"advantage estimator"``, ``"policy loss"`` ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, F] = {}

    def register(self, name: str, *, replace: bool = False) -> Callable[[F], F]:
        """Decorator registering a function under ``name``; returns the function unchanged."""
        if not isinstance(name, str) or not name:
            raise AlgorithmError(f"a {self.kind} needs a non-empty string name, got {name!r}")

        def decorate(fn: F) -> F:
            if not callable(fn):
                raise AlgorithmError(f"{self.kind} {name!r}: expected a function, got "
                                     f"{type(fn).__name__}")
            old = self._entries.get(name)
            if old is not None and old is not fn and not replace:
                raise AlgorithmError(
                    f"{self.kind} {name!r} is already registered ({_where(old)}); pass "
                    f"replace=True to override it")
            self._entries[name] = fn
            return fn

        return decorate

    def get(self, name: str) -> F:
        """The function registered under ``name``."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            pass
        known = self.names()
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownAlgorithmError(f"unknown {self.kind} {name!r}{hint}; registered: "
                                    f"{', '.join(known) or 'none'}")

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and plugins that register temporarily)."""
        self.get(name)
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def call(self, name: str, *args: Any, **options: Any) -> Any:
        """``get(name)(*args, **options)``, with unknown options reported as
        :class:`~flowrl.errors.AlgorithmError` naming the function, the option and the options
        it accepts (rather than a bare ``TypeError``)."""
        fn = self.get(name)
        check_options(f"{self.kind} {name!r}", fn, options)
        return fn(*args, **options)


def check_options(what: str, fn: Callable[..., Any], options: dict[str, Any]) -> None:
    """Raise if ``fn`` takes none of some keyword in ``options`` (and has no ``**kwargs``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items()
                if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                              inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise AlgorithmError(f"{what} has no option {', '.join(map(repr, unknown))}; it accepts "
                             f"{', '.join(accepted)}")


def _where(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


#: Advantage estimators: ``fn(rewards, mask, **options) -> AdvantageOutput``
#: (see :mod:`flowrl.algorithms.advantages` for the common signature).
ADVANTAGES: Registry[Callable[..., Any]] = Registry("advantage estimator")
#: Policy losses: ``fn(logprobs, old_logprobs, advantages, mask, **options) -> (loss, metrics)``.
POLICY_LOSSES: Registry[Callable[..., Any]] = Registry("policy loss")
#: KL estimators: ``fn(logprobs, ref_logprobs) -> per-token KL``.
KL_ESTIMATORS: Registry[Callable[..., Any]] = Registry("KL estimator")


def register_advantage(name: str, *, replace: bool = False) -> Callable[[F], F]:
    """Register an advantage estimator under ``name`` (decorator)."""
    return ADVANTAGES.register(name, replace=replace)


def register_policy_loss(name: str, *, replace: bool = False) -> Callable[[F], F]:
    """Register a policy loss under ``name`` (decorator)."""
    return POLICY_LOSSES.register(name, replace=replace)


def register_kl(name: str, *, replace: bool = False) -> Callable[[F], F]:
    """Register a per-token KL estimator under ``name`` (decorator)."""
    return KL_ESTIMATORS.register(name, replace=replace)
