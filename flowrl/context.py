"""``flowrl.init()``: load the config, seed the RNGs, and remember it as the default config.

The remembered config is only a default: ``Engine(..., config=None)`` (and the built-in
engines) use the last ``flowrl.init()`` result, and the engine binds its modules to it.
Modules never read it; there is no module registry.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowrl.config import FlowRLConfig, load_config
from flowrl.errors import FlowRLError

_current: FlowRLConfig | None = None  # the last init() result


def init(config: str | Path | dict | FlowRLConfig | None = None, **overrides: Any) -> FlowRLConfig:
    """Initialise flowrl: load and validate the config, seed RNGs, and make it the default
    config of engines built from now on.

    Args:
        config: YAML path, dict, :class:`FlowRLConfig`, or ``None`` to read ``-c FILE`` from
            the command line (defaults when absent).
        overrides: top-level fields that win over the file, e.g. ``runtime="ray"``.
    """
    global _current
    cfg = load_config(config, **overrides)
    _current = cfg
    seed_everything(cfg.runtime_args.seed)
    return cfg


def get_args() -> FlowRLConfig:
    """The config of the last ``flowrl.init()`` (the engines' default config)."""
    if _current is None:
        raise FlowRLError("flowrl.init() has not been called")
    return _current


def is_initialized() -> bool:
    """Whether ``flowrl.init()`` has been called in this process."""
    return _current is not None


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
