"""Backend resolution, the use_backend override and lazy Triton loading."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import flowrl.kernels as K
from flowrl.kernels import dispatch
from flowrl.kernels.dispatch import resolve, use_backend


def test_auto_on_cpu_is_torch():
    assert resolve("auto", torch.zeros(1)) == "torch"
    assert resolve("auto", torch.zeros(1), allow_loop=True) == "torch"


@pytest.mark.parametrize("name", ["loop", "torch"])
def test_explicit_backend_wins_over_override(name):
    with use_backend("triton"):
        assert resolve(name, torch.zeros(1), allow_loop=True) == name


def test_override_nesting_and_restore():
    x = torch.zeros(1)
    with use_backend("loop"):
        assert resolve("auto", x, allow_loop=True) == "loop"
        assert resolve("auto", x) == "torch"  # ops without a loop reference fall back to torch
        with use_backend("torch"):
            assert resolve("auto", x, allow_loop=True) == "torch"
        assert resolve("auto", x, allow_loop=True) == "loop"
        with use_backend("auto"):
            assert resolve("auto", x, allow_loop=True) == "torch"
    assert dispatch.current_override() is None


def test_override_restored_after_exception():
    with pytest.raises(KeyError):
        with use_backend("loop"):
            raise KeyError
    assert dispatch.current_override() is None


def test_use_backend_loop_runs_gae_loop(monkeypatch):
    called = []
    monkeypatch.setattr(K.api.ref, "gae_loop", lambda *a: called.append(1) or (a[0], a[0]))
    with use_backend("loop"):
        K.gae(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), 1.0, 1.0)
    assert called


@pytest.mark.parametrize("bad", ["cuda", "Torch", None, 3])
def test_invalid_names(bad):
    with pytest.raises(ValueError, match=r"invalid backend .*allowed: 'auto', 'torch', 'triton', 'loop'"):
        with use_backend(bad):
            pass


def test_triton_on_cpu_without_interpreter_says_so(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = torch.zeros(2, 3)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        K.gae(x, x, x, 1.0, 1.0, backend="triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        K.token_logprobs(x, torch.zeros(2, dtype=torch.long), backend="triton")
    with use_backend("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        K.group_normalize(torch.zeros(4), 2)


def test_triton_missing_says_so(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="triton cannot be imported"):
        resolve("triton", torch.zeros(1))
    assert resolve("auto", torch.zeros(1)) == "torch"


_ORDER_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ.pop("TRITON_INTERPRET", None)
    import torch
    import flowrl, flowrl.kernels as K          # imported before the variable is set
    assert "triton" not in sys.modules, "import flowrl.kernels must not import triton"
    x = torch.randn(2, 5); m = torch.ones(2, 5)
    try:
        K.gae(x, x, m, 1.0, 0.9, backend="triton")
        raise SystemExit("expected RuntimeError")
    except RuntimeError as e:
        assert "TRITON_INTERPRET=1" in str(e)
    assert "triton" not in sys.modules, "the failed call must not have imported triton"
    os.environ["TRITON_INTERPRET"] = "1"
    if {late_triton}:
        # triton imported before the variable: refused with a clear message
        os.environ["TRITON_INTERPRET"] = "0"
        import triton
        os.environ["TRITON_INTERPRET"] = "1"
        try:
            K.gae(x, x, m, 1.0, 0.9, backend="triton")
            raise SystemExit("expected RuntimeError")
        except RuntimeError as e:
            assert "before anything imports triton" in str(e), e
        print("OK")
        raise SystemExit(0)
    a, _ = K.gae(x, x, m, 1.0, 0.9, backend="triton")
    b, _ = K.gae(x, x, m, 1.0, 0.9, backend="loop")
    torch.testing.assert_close(a, b)
    print("OK")
    """
)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU interpreter path")
@pytest.mark.parametrize("late_triton", [False, True])
def test_import_order(late_triton):
    """flowrl.kernels may be imported (and even called) before TRITON_INTERPRET is set."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", _ORDER_SCRIPT.format(late_triton=late_triton)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]
