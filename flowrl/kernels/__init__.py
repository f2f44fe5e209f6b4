"""Numerical kernels used by the PPO/GRPO code.

Each op has a plain-torch implementation (always available, the default on
CPU) and a Triton kernel (the default for CUDA tensors), chosen by one
dispatcher; see :mod:`flowrl.kernels.dispatch`.

* :func:`gae` - generalised advantage estimation (reverse linear scan).
* :func:`whiten`, :func:`group_normalize` - PPO whitening / GRPO group advantage.
* :func:`token_logprobs` - fused log-softmax + gather (+ entropy), with backward.
* :func:`linear_logprobs` - log-probs from hidden states and the LM head, chunked over V.

Importing this package never imports triton; the kernels are defined on first use.
"""

from .api import gae, group_normalize, linear_logprobs, token_logprobs, whiten
from .dispatch import BACKENDS, interpret_mode, triton_available, use_backend

__all__ = [
    "BACKENDS",
    "gae",
    "group_normalize",
    "interpret_mode",
    "linear_logprobs",
    "token_logprobs",
    "triton_available",
    "use_backend",
    "whiten",
]
