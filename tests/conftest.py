"""Shared fixtures: the examples directory on sys.path and a tiny PPO config."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from ppo_setup import TINY_PPO  # noqa: E402


@pytest.fixture
def tiny_ppo_config() -> dict:
    return copy.deepcopy(TINY_PPO)
