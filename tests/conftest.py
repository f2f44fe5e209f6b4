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


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray cluster for one test module: 2 CPUs and 16 virtual ``flowrl_device``s
    (``pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]``)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, resources={"flowrl_device": 16},
             include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
