"""Shared fixtures for the kernels tests.

Why ``TRITON_INTERPRET`` is set here, at conftest import time:
Triton picks compiled vs interpreted code when a ``@triton.jit`` decorator
runs, reading the variable at that moment; for triton's own library
(``tl.sum``, ``tl.cdiv``...) that moment is ``import triton``. So the variable
must be set before triton is first imported - not merely before our kernels
are defined. ``flowrl.kernels`` is built for that: importing it never imports
triton, the kernel modules (``gae_triton``, ``logprob_triton``) are imported
on the first Triton call, and a CPU call without the variable fails *before*
importing triton. pytest imports every conftest while collecting, before any
test runs, so setting it here is early enough even when another test module
imported ``flowrl`` / ``flowrl.kernels`` first (``test_kernels_dispatch.py``
checks that order in a subprocess). The one case it cannot repair is another
test module importing triton itself at collection time, before this file;
the ``triton_device`` fixture then skips with that reason (set
``TRITON_INTERPRET=1`` in the CI environment to rule it out).

On a machine with a GPU the variable is left alone so the compiled kernels
are tested on CUDA tensors instead.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from flowrl.kernels import interpret_mode, triton_available  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_SKIP_REASON = ""
if not triton_available():
    _SKIP_REASON = "triton is not importable"
elif DEVICE == "cpu" and not interpret_mode():
    _SKIP_REASON = "no CUDA device and TRITON_INTERPRET is not 1"
else:
    from flowrl.kernels.dispatch import triton_imported_interpreted

    if triton_imported_interpreted() != interpret_mode():
        _SKIP_REASON = "triton was imported (by another module) before TRITON_INTERPRET was set here"


@pytest.fixture
def device() -> str:
    """Device for the torch paths."""
    return DEVICE


@pytest.fixture
def triton_device() -> str:
    """Device for the Triton paths; skips when Triton cannot run here."""
    if _SKIP_REASON:
        pytest.skip(_SKIP_REASON)
    return DEVICE


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
