"""``BaseModule``: what every model in a flow subclasses (the ChatLearn module API)."""

from __future__ import annotations

from typing import Any

from flowrl import context
from flowrl.config import ModelConfig, RuntimeArgs
from flowrl.errors import UnknownMethodError
from flowrl.models.args import validate_module_args

# Methods that belong to the module's life cycle, never to a flow.
LIFECYCLE_METHODS = frozenset({
    "setup", "build_dataset", "offload", "onload", "parameters_for_sync", "load_synced",
    "state_dict_for_checkpoint", "load_checkpoint_state", "named_sync_tensors",
    "shutdown", "push_staged_weights", "push_weights", "gathered",
})


def nonfinite_policy() -> str:
    """``runtime_args.on_nonfinite`` of the active config (``"raise"`` before ``init``)."""
    return context.get_args().runtime_args.on_nonfinite if context.is_initialized() else "raise"


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

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"model name must be a non-empty string, got {name!r}")
        self.name = name
        self._is_setup = False
        self._logged: list[tuple[str, float, str]] = []
        context.register_module(self)

    # ---- identity and config -------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.name

    @property
    def model_config(self) -> ModelConfig:
        """This model's section of the config (``models.<model_name>``)."""
        return context.get_args().model(self.name)

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
        return context.get_args().runtime_args

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
        methods = sorted(
            m for m in dir(type(self))
            if not m.startswith("_") and callable(getattr(type(self), m, None))
            and m not in LIFECYCLE_METHODS and m not in _BASE_HELPERS
        )
        raise UnknownMethodError(
            f"module '{self.__dict__.get('name', '?')}' ({type(self).__name__}) has no "
            f"attribute or method '{attr}'; its methods: {', '.join(methods)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


_BASE_HELPERS = frozenset({"ensure_setup", "drain_logged", "log"})
