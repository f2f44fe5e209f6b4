"""Shared fixtures: ``tests/`` on sys.path (for ``fixtures``, ``ppo_setup``, ``tiny_engines``)
and a tiny PPO config. ``examples/`` is not on the path: tests never import an example."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from ppo_setup import TINY_PPO  # noqa: E402


@pytest.fixture
def tiny_ppo_config() -> dict:
    return copy.deepcopy(TINY_PPO)
