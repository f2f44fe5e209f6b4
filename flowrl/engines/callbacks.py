"""Per-step callbacks: user code that sees every optimizer step and episode of ``learn()`` and
can stop training early.

>>> class StopAtReward(Callback):
...     def on_episode_end(self, engine, episode, metrics):
...         if metrics.get("reward/score", 0) > 0.9:
...             engine.control.should_training_stop = True
>>> engine.add_callback(StopAtReward()); engine.learn()          # doctest: +SKIP

A plain function is an ``on_episode_end(engine, episode, metrics)``. Stopping is clean: the
episode in progress finishes (its parameter sync, metrics row and, when checkpointing is on,
a checkpoint), then ``learn()`` returns; a later ``learn()`` continues from there. A callback
that raises fails the run (:class:`CallbackError`, naming the callback, its hook and the
episode), with the engine's failure semantics: only ``learn(resume=True)`` continues.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from flowrl.errors import ConfigError, FlowRLError

#: the hooks a callback may implement, in the order a learn() calls them
HOOKS = ("on_train_begin", "on_train_step", "on_episode_end", "on_train_end")


class CallbackError(FlowRLError):
    """A user callback raised; the run failed at that point (the cause is chained)."""


@dataclass
class TrainingControl:
    """Flags callbacks set to steer ``learn()`` (TRL's ``TrainerControl``)."""

    #: end learn() after the episode in progress (reset when a learn() starts)
    should_training_stop: bool = False


class Engine(Protocol):
    """What a hook receives: the :class:`flowrl.engines.engine.Engine` running ``learn()``
    (typed structurally, so this module does not import the engine that imports it)."""

    control: TrainingControl
    history: list[dict[str, Any]]


class Callback:
    """Base class of callbacks: override the hooks you need (the others do nothing).
    Any object with some of these methods works too."""

    def on_train_begin(self, engine: "Engine") -> None:
        """``learn()`` is about to run its first episode (after setup and resume)."""

    def on_train_step(self, engine: "Engine", step: int, metrics: dict[str, float]) -> None:
        """An optimizer step (one train-flow run over a global batch) finished; ``step``
        counts them from 1 over the whole run, ``metrics`` are that step's."""

    def on_episode_end(self, engine: "Engine", episode: int, metrics: dict[str, Any]) -> None:
        """Episode ``episode`` (1-based) finished; ``metrics`` is its logged row."""

    def on_train_end(self, engine: "Engine", history: list[dict[str, Any]]) -> None:
        """``learn()`` finished (all episodes, or stopped by ``engine.control``)."""


class _FunctionCallback(Callback):
    """A plain function used as ``on_episode_end``."""

    def __init__(self, fn: Callable[["Engine", int, dict[str, Any]], Any]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__qualname__", None) or repr(fn)

    def on_episode_end(self, engine: "Engine", episode: int, metrics: dict[str, Any]) -> None:
        self.fn(engine, episode, metrics)


def as_callback(cb: Any) -> Any:
    """``cb`` itself when it has a hook, a function wrapped as ``on_episode_end``; anything
    else is a :class:`ConfigError`."""
    if isinstance(cb, Callback) or any(callable(getattr(cb, h, None)) for h in HOOKS):
        return cb
    if callable(cb):
        return _FunctionCallback(cb)
    raise ConfigError(
        f"callback {cb!r} ({type(cb).__name__}) is neither a function nor an object with one "
        f"of the hooks {', '.join(HOOKS)}")


def callback_name(cb: Any) -> str:
    """How errors name a callback: its ``name`` attribute, else its class."""
    name = getattr(cb, "name", None)
    return name if isinstance(name, str) and name else type(cb).__name__


def run_hook(callbacks: list[Any], hook: str, engine: "Engine", episode: int,
             *args: Any) -> None:
    """Call ``hook`` on every callback that has it; an exception becomes a
    :class:`CallbackError` naming the callback, the hook and the (1-based) ``episode``."""
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is None:
            continue
        try:
            fn(engine, *args)
        except Exception as e:  # Ctrl-C and other BaseExceptions pass through untouched
            raise CallbackError(
                f"callback '{callback_name(cb)}' raised in {hook} at episode {episode} of "
                f"engine '{engine.name}': {type(e).__name__}: {e}") from e
