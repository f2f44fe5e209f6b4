"""Public entry points: argument checking + backend dispatch.

The Triton modules are imported only when a Triton path is actually taken
(see :func:`flowrl.kernels.dispatch.load_triton_module`), so importing
``flowrl.kernels`` never needs triton nor a GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import reference as ref
from .dispatch import load_triton_module, resolve
from .logprob_torch import linear_logprobs_torch, token_logprobs_torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_float(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (fp16/bf16/fp32/fp64), got {t.dtype}")


def _check_targets(targets: Tensor) -> None:
    if not isinstance(targets, Tensor) or targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor, got {getattr(targets, 'dtype', type(targets))}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


# ----------------------------------------------------------------------------- GAE


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float, *, backend: str = "auto"
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over right-padded ``[B, T]`` batches.

    Args:
        rewards, values, mask: ``[B, T]``. ``mask`` is 1 (any non-zero) for real
            response tokens including EOS and 0 for padding. ``values[:, t]`` is
            ``V(s_t)``; the value after the last real token is 0 (episode end).
            Padded positions of ``rewards``/``values`` are ignored (may be NaN).
        gamma, lam: discount and GAE lambda.
        backend: ``"auto"``, ``"torch"`` (vectorised scan), ``"triton"`` or
            ``"loop"`` (naive reverse Python loop, the reference).

    Returns:
        ``(advantages, returns)``, fp32 ``[B, T]`` (fp64 for fp64 inputs),
        zero where ``mask == 0``; ``returns = advantages + values``.
        Accumulation is fp32 for fp16/bf16 inputs. Not differentiable (the
        inputs are detached): advantages and returns are regression targets.
    """
    for name, t in (("rewards", rewards), ("values", values)):
        _check_float(name, t)
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if rewards.dim() != 2 or rewards.shape != values.shape or rewards.shape != mask.shape:
        raise ValueError(
            "gae expects rewards, values, mask of the same [B, T] shape; got "
            f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, mask {tuple(mask.shape)}"
        )
    which = resolve(backend, rewards, allow_loop=True)
    # advantages are targets, not part of the graph: every backend treats the inputs as constants
    rewards, values, mask = rewards.detach(), values.detach(), mask.detach()
    if rewards.numel() == 0:
        cd = ref.compute_dtype(torch.promote_types(rewards.dtype, values.dtype))
        out = torch.zeros(rewards.shape, dtype=cd, device=rewards.device)
        return out, out.clone()
    if which == "loop":
        return ref.gae_loop(rewards, values, mask, gamma, lam)
    if which == "triton":
        return load_triton_module("gae_triton", "gae_kernel").gae_triton(rewards, values, mask, float(gamma), float(lam))
    return ref.gae_torch(rewards, values, mask, gamma, lam)


# ------------------------------------------------------------------ normalisation


def whiten(x: Tensor, mask: Tensor | None, *, shift_mean: bool = True, eps: float = 1e-8, unbiased: bool = False) -> Tensor:
    """Whiten ``x`` with the mean/variance of the entries where ``mask != 0``.

    ``(x - mean) / sqrt(var + eps)``; with ``shift_mean=False`` the mean is
    added back (only the scale is normalised). The variance is the population
    variance (``unbiased=False``) by default, matching :func:`group_normalize`.
    The result is zero where ``mask == 0`` and all zeros when nothing is
    unmasked. Statistics are fp32 (fp64 for fp64 input); so is the result.
    ``mask=None`` means every entry counts. Plain torch on every device: two
    global reductions that are already bandwidth-bound.
    """
    _check_float("x", x)
    if mask is not None and mask.shape != x.shape:
        raise ValueError(f"whiten expects x and mask of the same shape; got x {tuple(x.shape)}, mask {tuple(mask.shape)}")
    return ref.whiten_torch(x, mask, shift_mean=shift_mean, eps=eps, unbiased=unbiased)


def group_normalize(
    scores: Tensor, group_size: int, *, eps: float = 1e-6, scale: bool = True, backend: str = "auto"
) -> Tensor:
    """GRPO advantage: normalise each group of ``group_size`` consecutive scores.

    ``scores`` is ``[N]`` with ``N = num_prompts * group_size`` (the samples of
    one prompt are consecutive). Returns fp32 ``(s - mean_g) / (std_g + eps)``,
    or ``s - mean_g`` with ``scale=False`` (Dr. GRPO). ``std_g`` is the
    population std (``unbiased=False``): it is defined for ``group_size == 1``
    (giving 0 advantages rather than NaN) and is what the GRPO reference
    implementations use.
    """
    _check_float("scores", scores)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if scores.dim() != 1 or scores.shape[0] % group_size != 0:
        raise ValueError(
            f"group_normalize expects 1-D scores whose length is a multiple of group_size={group_size}; "
            f"got shape {tuple(scores.shape)}"
        )
    if resolve(backend, scores) == "triton" and scores.numel() > 0:
        mod = load_triton_module("gae_triton", "gae_kernel")
        return mod.group_normalize_triton(scores, group_size, eps=eps, scale=scale)
    return ref.group_normalize_torch(scores, group_size, eps=eps, scale=scale)


# ------------------------------------------------------------------- log-probs


def _rows_view(logits: Tensor) -> Tensor:
    """``[..., V]`` as a ``[B, T, V]`` *view* whenever possible.

    Callers pass slices such as ``logits[:, :-1]``, whose rows are not evenly
    strided, so ``reshape(-1, V)`` would copy the whole tensor; both backends
    take separate batch and time strides instead.
    """
    V = logits.shape[-1]
    try:
        return logits.view(1, -1, V)
    except RuntimeError:
        pass
    if logits.dim() >= 3:
        try:
            return logits.view(-1, logits.shape[-2], V)
        except RuntimeError:
            pass
    return logits.reshape(1, -1, V)  # irregular strides: copy (rare)


def token_logprobs(
    logits: Tensor,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Per-token ``log softmax(logits / temperature)[target]`` without a ``[..., V]`` fp32 copy.

    Args:
        logits: ``[..., V]`` fp32/bf16/fp16 (fp64 accepted, computed in fp64).
        targets: ``[...]`` integer token ids in ``[0, V)`` (not range-checked on
            the Triton path, which would need a device sync).
        temperature: logits are divided by it (> 0).
        return_entropy: also return the entropy of ``softmax(logits / T)``.
        backend: ``"auto"``, ``"torch"`` (chunked, memory-lean) or ``"triton"``.

    Returns:
        fp32 ``logp [...]`` (fp64 for fp64 logits), or ``(logp, entropy)``.
        Both are differentiable w.r.t. ``logits``.
    """
    _check_float("logits", logits)
    _check_targets(targets)
    _check_temperature(temperature)
    if logits.dim() < 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"token_logprobs expects logits [..., V] and targets [...] with matching leading dims; "
            f"got logits {tuple(logits.shape)}, targets {tuple(targets.shape)}"
        )
    if logits.shape[-1] == 0:
        raise ValueError(f"token_logprobs needs a non-empty vocabulary dim; got logits {tuple(logits.shape)}")
    which = resolve(backend, logits)
    lead = targets.shape
    logits3d = _rows_view(logits)
    targets1d = targets.reshape(-1).long()
    if targets1d.numel() == 0:
        lp = logits3d.sum(-1).reshape(-1).to(ref.compute_dtype(logits.dtype))
        ent = lp.clone()
    elif which == "triton":
        mod = load_triton_module("logprob_triton", "_logprob_fwd_kernel")
        lp, ent = mod.token_logprobs_triton(logits3d, targets1d, float(temperature), bool(return_entropy))
    else:
        lp, ent = token_logprobs_torch(logits3d, targets1d, float(temperature), bool(return_entropy))
    lp = lp.reshape(lead)
    return (lp, ent.reshape(lead)) if return_entropy else lp


def linear_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 4096,
    backend: str = "auto",
) -> Tensor:
    """``log softmax(hidden @ weight.T / temperature)[target]`` without building the logits.

    ``hidden [..., H]``, ``weight [V, H]`` (the output projection / LM head),
    ``targets [...]``. Processes ``chunk_size`` vocabulary rows at a time, so
    the extra memory is ``[N, chunk_size]`` instead of ``[N, V]``; backward
    recomputes each chunk and returns gradients for ``hidden`` and ``weight``.
    The matmuls run in torch (cuBLAS on GPU) on every backend; ``backend`` is
    validated like elsewhere but selects no separate Triton implementation yet.
    Returns fp32 ``[...]`` (fp64 for fp64 inputs).
    """
    _check_float("hidden", hidden)
    _check_float("weight", weight)
    _check_targets(targets)
    _check_temperature(temperature)
    if weight.dim() != 2 or hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1] or hidden.shape[:-1] != targets.shape:
        raise ValueError(
            "linear_logprobs expects hidden [..., H], weight [V, H], targets [...]; got "
            f"hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}, targets {tuple(targets.shape)}"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    resolve(backend, hidden)  # validates the name / triton availability
    lead = targets.shape
    hidden2d, targets1d = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1).long()
    out = linear_logprobs_torch(hidden2d, weight, targets1d, float(temperature), chunk_size)
    return out.reshape(lead)
