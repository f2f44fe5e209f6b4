"""Backend selection for the kernels layer.

Three kinds of implementation exist for most ops:

* ``"loop"``   - the naive reference (a Python loop over time; GAE only),
* ``"torch"``  - the vectorised / memory-lean plain-torch path (best on CPU),
* ``"triton"`` - the Triton kernels (CUDA tensors, or CPU tensors under
  ``TRITON_INTERPRET=1`` which is how CI exercises them).

``"auto"`` picks Triton for CUDA tensors when triton is importable and torch
otherwise. :func:`use_backend` overrides what ``"auto"`` resolves to for a block
(tests, benchmarks); an explicit ``backend=`` argument always wins over it.
The override lives in a :class:`contextvars.ContextVar`, not an environment
variable, so it is scoped, thread/async safe and cannot leak between processes.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import os
from collections.abc import Iterator
from types import ModuleType

import torch

BACKENDS: tuple[str, ...] = ("auto", "torch", "triton", "loop")
# ops other than GAE have no Python-loop reference
BACKENDS_NO_LOOP: tuple[str, ...] = ("auto", "torch", "triton")

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("flowrl_kernels_backend", default=None)


def _check_name(name: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(f"invalid backend {name!r}; allowed: {', '.join(repr(a) for a in allowed)}")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Make ``backend="auto"`` resolve to ``name`` inside the block.

    ``name`` is one of ``"auto"``, ``"torch"``, ``"triton"``, ``"loop"``. For ops
    without a loop reference (everything but :func:`~flowrl.kernels.gae`),
    ``"loop"`` means ``"torch"``. Nested blocks restore the outer choice on exit.
    """
    _check_name(name, BACKENDS)
    token = _override.set(None if name == "auto" else name)
    try:
        yield
    finally:
        _override.reset(token)


def current_override() -> str | None:
    """The backend forced by the innermost :func:`use_backend` block, if any."""
    return _override.get()


@functools.cache
def triton_available() -> bool:
    """True when ``import triton`` works (cached; never raises)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install raising something else
        return False
    return True


def interpret_mode() -> bool:
    """True when the Triton CPU interpreter is switched on (read each call)."""
    # the spellings triton's own getenv_bool accepts
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "y", "yes", "on", "true")


def resolve(backend: str, tensor: torch.Tensor, *, allow_loop: bool = False) -> str:
    """Turn a requested backend into the one to run: ``"loop"``, ``"torch"`` or ``"triton"``.

    Raises ``ValueError`` for unknown names and ``RuntimeError`` when Triton is
    forced but cannot run on ``tensor``'s device.
    """
    allowed = BACKENDS if allow_loop else BACKENDS_NO_LOOP
    _check_name(backend, allowed)
    if backend == "auto":
        forced = _override.get()
        if forced is not None:
            backend = forced
            if backend == "loop" and not allow_loop:
                backend = "torch"
    if backend == "auto":
        return "triton" if tensor.is_cuda and triton_available() else "torch"
    if backend == "triton":
        _check_triton_runnable(tensor)
    return backend


def _check_triton_runnable(tensor: torch.Tensor) -> None:
    # the interpreter check comes before anything imports triton: triton's own
    # standard library is built in one mode when triton is first imported
    if tensor.device.type == "cpu" and not interpret_mode():
        raise RuntimeError(
            "backend='triton' on a CPU tensor only works with the Triton interpreter: set the environment "
            "variable TRITON_INTERPRET=1 before triton is first imported (or use backend='torch')"
        )
    if not tensor.is_cuda and tensor.device.type != "cpu":
        raise RuntimeError(f"backend='triton' supports CUDA tensors (or CPU under TRITON_INTERPRET=1), got {tensor.device}")
    if not triton_available():
        raise RuntimeError("backend='triton' was requested but triton cannot be imported; use backend='torch'")


def triton_imported_interpreted() -> bool:
    """Whether triton's own ``@jit`` library was built for the interpreter (decided at ``import triton``)."""
    import triton.language.standard as std
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(std.cdiv, InterpretedFunction)


def load_triton_module(name: str, probe: str) -> ModuleType:
    """Import ``flowrl.kernels.<name>`` (which defines ``@triton.jit`` kernels) on first use.

    Triton decides between compiled and interpreted kernels when a ``@jit``
    decorator runs, reading ``TRITON_INTERPRET`` at that moment - for its own
    standard library (``tl.sum``, ``tl.cdiv`` ...) that is at ``import triton``.
    Importing the kernel modules lazily (never from ``flowrl/kernels/__init__``,
    and :func:`resolve` checks the variable before importing triton) means the
    variable only has to be set before the first Triton call, not before
    ``import flowrl``. If our module was defined under the other mode it is
    reloaded; if triton itself was, no reload can fix it and a clear error says
    so. ``probe`` names one kernel of the module to check.
    """
    from triton.runtime.interpreter import InterpretedFunction

    want = interpret_mode()
    if triton_imported_interpreted() != want:
        raise RuntimeError(
            f"triton was imported with TRITON_INTERPRET={'0' if want else '1'} but it is now "
            f"{'1' if want else '0'}; triton fixes the mode at import, so set TRITON_INTERPRET "
            "before anything imports triton"
        )
    mod = importlib.import_module(f"flowrl.kernels.{name}")
    if isinstance(getattr(mod, probe), InterpretedFunction) != want:
        mod = importlib.reload(mod)
    return mod
