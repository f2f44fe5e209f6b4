"""Process-wide state: the active config and the modules created under it."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from flowrl.config import FlowRLConfig, load_config
from flowrl.errors import ConfigError, FlowRLError

if TYPE_CHECKING:
    from flowrl.models.base import BaseModule


class ExplainRequest:
    """Set by ``flowrl explain``: ``learn()`` compiles, records the schedule and returns."""

    def __init__(self, cluster: Any = None, strategy: str | None = None) -> None:
        self.cluster, self.strategy = cluster, strategy
        self.schedules: list[Any] = []


class _Context:
    def __init__(self) -> None:
        self.config: FlowRLConfig | None = None
        self.modules: dict[str, "BaseModule"] = {}
        self.explain: ExplainRequest | None = None


_CTX = _Context()


def init(config: str | Path | dict | FlowRLConfig | None = None, **overrides: Any) -> FlowRLConfig:
    """Initialise flowrl: load and validate the config, seed RNGs, reset the module registry.

    Args:
        config: YAML path, dict, :class:`FlowRLConfig`, or ``None`` to read ``-c FILE`` from
            the command line (defaults when absent).
        overrides: top-level fields that win over the file, e.g. ``runtime="ray"``.
    """
    cfg = load_config(config, **overrides)
    _CTX.config = cfg
    _CTX.modules = {}
    seed_everything(cfg.runtime_args.seed)
    return cfg


def set_explain(request: ExplainRequest | None) -> None:
    _CTX.explain = request


def explain_request() -> ExplainRequest | None:
    return _CTX.explain


def get_args() -> FlowRLConfig:
    """The active config (``flowrl.init`` must have been called)."""
    if _CTX.config is None:
        raise FlowRLError("flowrl.init() has not been called")
    return _CTX.config


def is_initialized() -> bool:
    return _CTX.config is not None


def register_module(module: "BaseModule") -> None:
    name = module.name
    if name in _CTX.modules and _CTX.modules[name] is not module:
        other = type(_CTX.modules[name]).__name__
        raise ConfigError(
            f"model_name '{name}' is already used by a {other}; every module needs a unique "
            f"model_name (its config section is keyed by it)")
    _CTX.modules[name] = module


def registered_modules() -> dict[str, "BaseModule"]:
    return dict(_CTX.modules)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
