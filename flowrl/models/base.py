"""``BaseModule``: what every model in a flow subclasses (the ChatLearn module API).

A module holds no global state: an :class:`~flowrl.engines.engine.Engine` binds it to its
section of the engine's config (:meth:`BaseModule.bind`) when it is built, so modules may be
created before ``flowrl.init()`` (at import time). :func:`flow_methods` is the one rule for
which methods a flow may call on a module.
"""

from __future__ import annotations

import inspect
from typing import Any

from flowrl.config import FlowRLConfig, ModelConfig, RuntimeArgs
from flowrl.errors import FlowRLError, UnknownMethodError
from flowrl.models.args import validate_module_args

# Methods that belong to the module's life cycle (flowrl calls them), never to a flow. With
# BaseModule's own helpers (log, bind, reset ...) they make up `is_lifecycle`.
LIFECYCLE_METHODS = frozenset({
    "setup", "build_dataset", "offload", "onload", "parameters_for_sync", "load_synced",
    "state_dict_for_checkpoint", "load_checkpoint_state", "named_sync_tensors",
    "shutdown", "push_staged_weights", "push_weights", "gathered",
})

# The step methods BaseModule declares for subclasses to implement: callable from flows.
STEP_METHODS = frozenset({"forward_step", "train_step"})


class ModuleNotBoundError(FlowRLError):
    """A module's config was read before an engine bound it to a config section."""


def is_lifecycle(name: str) -> bool:
    """True when ``name`` is a method flowrl calls itself (``setup``, ``offload``, sync and
    checkpoint hooks) or a :class:`BaseModule` helper (``log``, ``bind``, ``reset`` ...): a
    flow may never call it."""
    return name in LIFECYCLE_METHODS or (name in _BASE_PUBLIC and name not in STEP_METHODS)


def flow_methods(cls: type) -> frozenset[str]:
    """The methods a flow may call on a module of class ``cls``: its public functions that
    are not life-cycle methods (:func:`is_lifecycle`) and that the class really implements
    (BaseModule's placeholder ``forward_step`` / ``train_step`` do not count).

    The tracer, the engine's construction checks, the compiler's validate pass and the
    "no such method" error all use this one rule.
    """
    return frozenset(
        n for n in dir(cls)
        if not n.startswith("_") and not is_lifecycle(n)
        and inspect.isfunction(getattr(cls, n, None))
        and getattr(cls, n) is not getattr(BaseModule, n, None))


def outputs(*keys: str):
    """Declare the keys a step method returns, so key clashes are caught when tracing.

    >>> class Ref(TorchModule):
    ...     @outputs("ref_logprobs")
    ...     def forward_step(self, data, iteration=0): ...
    """

    def deco(fn):
        fn.__flowrl_outputs__ = frozenset(keys)
        return fn

    return deco


class BaseModule:
    """A model in the flow, identified by its unique ``model_name``.

    Subclasses implement ``setup()`` and ``forward_step(data, iteration)`` (inference) or
    ``train_step(data, iteration)`` (training; ``data`` is a list of micro-batch dicts); the
    flow's first model implements ``build_dataset(prompts, is_eval)``. Other public methods
    (``eval_step``, ``generate`` ...) may be called from flows too.
    """

    #: Parallel dimensions this class runs inside one replica (the planner chooses only
    #: these; data parallelism always): a plain module runs each replica unsharded.
    parallelism: dict[str, bool] = {"tp": False, "pp": False}
    #: How this class's generator batches decoding, for the planner's decode time
    #: (``generation.batching``, which wins when set): "static" (HF ``generate``: a batch
    #: runs until its longest response) or "continuous" (vLLM: finished requests leave).
    generation_batching: str = "static"

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"model name must be a non-empty string, got {name!r}")
        self.name = name
        self._is_setup = False
        self._logged: list[tuple[str, float, str]] = []
        self._config: FlowRLConfig | None = None  # set by bind(), i.e. by the engine

    # ---- identity and config -------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.name

    def bind(self, config: FlowRLConfig) -> "BaseModule":
        """Attach this module to ``config``: its properties then read ``models.<model_name>``
        and ``runtime_args`` from it. An :class:`~flowrl.Engine` binds its modules when it
        is built (a module belongs to the engine that bound it last); call it yourself only
        to use a module without an engine. Returns the module.

        Raises:
            ConfigError: ``config`` has no section ``models.<model_name>``.
        """
        # A missing section, or args that do not fit the class's Args, are errors now.
        validate_module_args(type(self), self.name, config.model(self.name))
        self._config = config
        return self

    @property
    def bound_config(self) -> FlowRLConfig:
        """The whole config this module is bound to (see :meth:`bind`)."""
        cfg = self.__dict__.get("_config")
        if cfg is None:
            raise ModuleNotBoundError(
                f"module '{self.__dict__.get('name', '?')}' ({type(self).__name__}) is not "
                f"bound to an engine yet: its config section models."
                f"{self.__dict__.get('name', '?')} is known once an Engine is built with it "
                f"(or call module.bind(flowrl.get_args()) to use it on its own)")
        return cfg

    @property
    def model_config(self) -> ModelConfig:
        """This model's section of the config (``models.<model_name>``)."""
        return self.bound_config.model(self.name)

    @property
    def model_args(self) -> dict[str, Any]:
        """The free-form ``args`` of this model's config section."""
        return self.model_config.args

    #: The class's typed ``args`` (a pydantic model, see :mod:`flowrl.models.args`), checked
    #: by :meth:`bind`; ``None`` keeps ``args`` free-form.
    Args: Any = None

    @property
    def typed_args(self) -> Any:
        """``models.<model_name>.args`` validated against ``Args`` (``None`` without one)."""
        return validate_module_args(type(self), self.name, self.model_config)

    @property
    def runtime_args(self) -> RuntimeArgs:
        """The bound config's episode settings."""
        return self.bound_config.runtime_args

    @property
    def on_nonfinite(self) -> str:
        """``runtime_args.on_nonfinite`` of the bound config: ``"raise"`` or
        ``"skip_batch"``."""
        return self.runtime_args.on_nonfinite

    @property
    def trainable(self) -> bool:
        declared = self.model_config.trainable
        if declared is not None:
            return declared
        return type(self).train_step is not BaseModule.train_step

    # ---- the user's API ----------------------------------------------------------------
    def setup(self) -> None:
        """Build the model, optimizer and any state. Called once before training."""

    def forward_step(self, data: dict, iteration: int = 0) -> dict:
        """One inference step on a batch dict; returns a dict of new keys."""
        raise NotImplementedError(f"{type(self).__name__} ('{self.name}') has no forward_step")

    def train_step(self, data: list[dict], iteration: int) -> dict | None:
        """One optimizer step on a global batch given as a list of micro-batch dicts."""
        raise NotImplementedError(f"{type(self).__name__} ('{self.name}') has no train_step")

    def build_dataset(self, prompts: list, is_eval: bool = False):
        """Return a ``torch.utils.data.Dataset`` (with ``collate_fn`` attribute) over prompts."""
        raise NotImplementedError(
            f"{type(self).__name__} ('{self.name}') is the flow's first model and must "
            f"implement build_dataset(prompts, is_eval)")

    def log(self, name: str, value: float, reduce: str = "mean") -> None:
        """Record a metric from a step method; the runtime aggregates it per episode
        (``reduce`` is ``"mean"`` or ``"sum"`` over the episode's calls) as ``model/name``."""
        if reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
        self._logged.append((name, float(value), reduce))

    def drain_logged(self) -> list[tuple[str, float, str]]:
        out, self._logged = self._logged, []
        return out

    # ---- runtime hooks (overridden by backends) ------------------------------------------
    def ensure_setup(self) -> None:
        if not self._is_setup:
            self.setup()
            self._is_setup = True

    def reset(self) -> None:
        """Forget everything ``setup()`` built, so the next ``ensure_setup()`` builds it again
        (``learn(resume=True)`` after a failure restarts from fresh modules + a checkpoint)."""
        self._is_setup = False
        self._logged = []

    def offload(self, what: tuple[str, ...] = ("weights", "grads", "optimizer")) -> int:
        """Move state off the compute device; returns bytes moved. Base modules hold none."""
        return 0

    def onload(self, what: tuple[str, ...] = ("weights", "grads", "optimizer")) -> int:
        return 0

    @property
    def offloaded_state(self) -> frozenset[str]:
        """Which kinds of state ("weights", "grads", "optimizer") are off the device now."""
        return frozenset()

    def named_sync_tensors(self) -> dict[str, Any]:
        """Tensors a parameter sync reads (trainer) or writes (inference model)."""
        raise NotImplementedError(
            f"{type(self).__name__} ('{self.name}') does not support parameter sync")

    def shutdown(self) -> None:
        """Release resources a backend holds outside Python (engines, worker processes)."""

    def state_dict_for_checkpoint(self) -> dict[str, Any]:
        return {}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        pass

    def __getattr__(self, attr: str) -> Any:
        # Only reached when normal lookup fails: name the module and list what it does have.
        if attr.startswith("_"):
            raise AttributeError(attr)
        methods = sorted(flow_methods(type(self)))
        raise UnknownMethodError(
            f"module '{self.__dict__.get('name', '?')}' ({type(self).__name__}) has no "
            f"attribute or method '{attr}'; its methods: {', '.join(methods)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# BaseModule's public names: its helpers are life-cycle methods (see is_lifecycle).
_BASE_PUBLIC = frozenset(n for n in dir(BaseModule) if not n.startswith("_"))
