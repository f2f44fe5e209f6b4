"""The kernels section of ``gpu_check.py``: every kernel against its reference, then timings.

Correctness (decides the exit code): fresh random inputs per check, the result compared with
a float64 reference by ``||out - ref|| / ||ref||``; any NaN/inf fails.

* GAE (torch scan, Triton) at the benchmark size and at an odd length spanning several Triton
  blocks, NaN in the padded positions (they must be ignored), vs ``gae_loop`` in float64.
* Fused log-probs (chunked torch, Triton): forward, entropy and the logits gradient on a
  ``[B, T+1, V][:, :-1]`` slice (the layout callers pass) vs the float64 reference; and at the
  full benchmark size the fused forward vs the unfused fp32 ``log_softmax().gather()``.

Timings reuse ``benchmarks/kernels.py`` (its ``Meter`` and cases): median time, peak extra
memory, and achieved bandwidth as a fraction of the device's peak (null when unknown).
"""

from __future__ import annotations

import gc
import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import flowrl.kernels as K
from flowrl.kernels.reference import gae_loop, token_logprobs_reference


def _load_bench(name: str):
    """``benchmarks/<name>.py`` under a unique module name (a top-level ``kernels`` package
    may exist in site-packages)."""
    key = f"flowrl_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).resolve().parent / f"{name}.py")
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


_bench = _load_bench("kernels")
Meter, gae_cases, logprob_cases = _bench.Meter, _bench.gae_cases, _bench.logprob_cases

#: Relative L2 error allowed (METHOD.md: fp32 arithmetic lands far under 1e-3; a bf16 output
#: - the logits gradient - between 1e-3 and 1e-2).
TOL_FP32, TOL_BF16 = 1e-4, 1e-2
GAMMA, LAM = 0.99, 0.95


@dataclass
class KernelImpls:
    """The ops under test; tests swap in a broken one to see the check fail."""

    gae: Callable = K.gae
    token_logprobs: Callable = K.token_logprobs


@dataclass(frozen=True)
class KernelSizes:
    gae_batch: int
    gae_len: int
    tokens: int
    vocab: int
    check_rows: int  # rows of the float64 log-prob reference
    repeats: int
    loop_repeats: int
    dtype: torch.dtype = torch.bfloat16


GPU_SIZES = KernelSizes(256, 2048, 16384, 131072, 1024, 20, 3)
SMALL_SIZES = KernelSizes(4, 128, 32, 1024, 8, 1, 1)


@dataclass
class Deadline:
    """Seconds left in a section; steps past it are recorded as skipped."""

    end: float
    skipped: list[str] = field(default_factory=list)

    def left(self) -> float:
        return self.end - time.monotonic()

    def allows(self, step: str, need_s: float = 0.0) -> bool:
        if self.left() > need_s:
            return True
        self.skipped.append(f"{step}: section budget used up ({max(0.0, self.left()):.0f} s left)")
        return False


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64; inf when ``out`` holds NaN/inf or shapes differ."""
    if out.shape != ref.shape or not bool(torch.isfinite(out).all()):
        return float("inf")
    o, r = out.detach().double(), ref.detach().double()
    return float((o - r).norm() / r.norm().clamp_min(1e-300))


def _check(name: str, backend: str, out: torch.Tensor, ref: torch.Tensor, tol: float,
           shape: tuple) -> dict[str, Any]:
    err = rel_err(out, ref)
    return {"name": name, "backend": backend, "shape": list(shape), "rel_err": err,
            "tolerance": tol, "passed": err <= tol}


def triton_usable(dev: torch.device) -> tuple[bool, str]:
    """Whether Triton kernels can run on ``dev`` here, and how (or why not)."""
    if dev.type != "cuda" and not K.interpret_mode():
        return False, "CPU without TRITON_INTERPRET=1"
    if not K.triton_available():
        return False, "triton is not importable"
    if dev.type == "cuda":
        return True, "compiled"
    from flowrl.kernels.dispatch import triton_imported_interpreted

    if not triton_imported_interpreted():
        return False, "triton was imported before TRITON_INTERPRET=1 was set"
    return True, "interpreter"


def gae_inputs(dev: torch.device, B: int, T: int, gen: torch.Generator):
    r = torch.randn(B, T, generator=gen, device=dev)
    v = torch.randn(B, T, generator=gen, device=dev)
    lengths = torch.randint(1, T + 1, (B,), generator=gen, device=dev)
    mask = (torch.arange(T, device=dev)[None] < lengths[:, None]).float()
    r = torch.where(mask > 0, r, float("nan"))  # padding must be ignored, NaN included
    return r, v, mask


def check_gae(dev, impls: KernelImpls, backends: list[str], s: KernelSizes, gen) -> list[dict]:
    out = []
    for B, T in ((s.gae_batch, s.gae_len), (5, s.gae_len + 3)):
        r, v, mask = gae_inputs(dev, B, T, gen)
        ref_adv, ref_ret = gae_loop(r.double(), v.double(), mask, GAMMA, LAM)
        for b in backends:
            adv, ret = impls.gae(r, v, mask, GAMMA, LAM, backend=b)
            out.append(_check("gae advantages", b, adv, ref_adv, TOL_FP32, (B, T)))
            out.append(_check("gae returns", b, ret, ref_ret, TOL_FP32, (B, T)))
    return out


def check_logprobs(dev, impls: KernelImpls, backends: list[str], s: KernelSizes, gen) -> list[dict]:
    rows, V = s.check_rows, s.vocab
    out = []
    for b in backends:  # fresh inputs per backend
        x = (3 * torch.randn(2, rows // 2 + 1, V, generator=gen, device=dev)).to(s.dtype)
        tgt = torch.randint(0, V, (2, rows // 2), generator=gen, device=dev)
        w = torch.randn(2, rows // 2, generator=gen, device=dev)
        ref_leaf = x.detach().double().requires_grad_()
        ref_lp, ref_ent = token_logprobs_reference(ref_leaf[:, :-1], tgt, return_entropy=True)
        (ref_grad,) = torch.autograd.grad((ref_lp * w.double()).sum(), ref_leaf)
        leaf = x.detach().requires_grad_()
        lp, ent = impls.token_logprobs(leaf[:, :-1], tgt, return_entropy=True, backend=b)
        (grad,) = torch.autograd.grad((lp * w).sum(), leaf)
        shape = (2, rows // 2, V)
        out.append(_check("log-prob forward", b, lp, ref_lp, TOL_FP32, shape))
        out.append(_check("log-prob entropy", b, ent, ref_ent, TOL_FP32, shape))
        out.append(_check("log-prob gradient", b, grad, ref_grad, TOL_BF16, shape))
        del x, leaf, ref_leaf, ref_grad, grad
    return out


def check_full_size(dev, impls: KernelImpls, backend: str, s: KernelSizes, gen) -> dict:
    """The fused forward at the benchmark size against the unfused fp32 path."""
    x = torch.randn(s.tokens, s.vocab, generator=gen, device=dev).to(s.dtype)
    tgt = torch.randint(0, s.vocab, (s.tokens,), generator=gen, device=dev)
    with torch.no_grad():
        ref = torch.log_softmax(x.float(), -1).gather(-1, tgt[:, None]).squeeze(-1)
        lp = impls.token_logprobs(x, tgt, backend=backend)
    return _check("log-prob forward vs unfused fp32", backend, lp, ref, TOL_FP32, (s.tokens, s.vocab))


def time_cases(m: Meter, cases, deadline: Deadline, label: str, loop_meter: Meter | None = None) -> dict:
    """Peak extra memory then median time per case; cases past the deadline are skipped."""
    res: dict[str, dict[str, Any]] = {}
    for name, fn in cases:
        if not deadline.allows(f"{label}: {name}", 5.0):
            continue
        meter = loop_meter if (loop_meter is not None and "loop" in name) else m
        res[name] = {"peak_extra_bytes": meter.safe(meter.peak_extra_bytes, fn),
                     "ms": meter.safe(meter.time_ms, fn)}
    return res


def _gbps(nbytes: float, ms: float | None) -> float | None:
    return None if not ms else nbytes / (ms * 1e-3) / 1e9


def bandwidth(nbytes: float, ms: float | None, peak: float | None) -> dict[str, float | None]:
    gbps = _gbps(nbytes, ms)
    return {"gbps": gbps, "fraction_of_peak": None if gbps is None or not peak else gbps / peak}


# ------------------------------------------------------------------ the section


def _timings_gae(m: Meter, loop_m: Meter, impls: KernelImpls, with_triton: bool, s: KernelSizes,
                 deadline: Deadline, peak: float | None) -> dict:
    cases = gae_cases(m.device, s.gae_batch, s.gae_len, with_triton, False, gae=impls.gae)
    res = time_cases(m, cases, deadline, "gae", loop_m)
    nbytes = 5 * s.gae_batch * s.gae_len * 4  # 3 inputs read, 2 outputs written (fp32)
    loop = res.get("reverse loop (reference)", {}).get("ms")
    for r in res.values():
        r.update(bandwidth(nbytes, r["ms"], peak))
        r["speedup_vs_loop"] = loop / r["ms"] if loop and r["ms"] else None
    return {"B": s.gae_batch, "T": s.gae_len, "dtype": "float32", "bytes_moved": nbytes, "cases": res}


def _timings_logprobs(m: Meter, impls: KernelImpls, fused: str, s: KernelSizes,
                      deadline: Deadline, peak: float | None) -> dict:
    N, V = s.tokens, s.vocab
    esize = torch.finfo(s.dtype).bits // 8
    try:
        cases = logprob_cases(m.device, N, V, s.dtype, fused, token_logprobs=impls.token_logprobs)
    except torch.OutOfMemoryError:
        return {"N": N, "V": V, "error": "inputs do not fit in device memory"}
    res = time_cases(m, cases, deadline, "log-probs")
    del cases
    gc.collect()
    for path in ("unfused", "fused"):
        fwd, fb = res.get(f"{path} fwd"), res.get(f"{path} fb")
        if fwd:
            fwd.update(bandwidth(N * V * esize, fwd["ms"], peak))  # reads the logits once
        if fwd and fb and fwd["ms"] and fb["ms"] and fb["ms"] > fwd["ms"]:
            # backward alone = (fwd+bwd) - fwd; it reads the logits and writes their gradient
            fb["backward"] = bandwidth(2 * N * V * esize, fb["ms"] - fwd["ms"], peak)
    ratios = {}
    for kind in ("fwd", "fb"):
        u, f = res.get(f"unfused {kind}"), res.get(f"fused {kind}")
        if u and f:
            ratios[f"speedup_{kind}"] = u["ms"] / f["ms"] if u["ms"] and f["ms"] else None
            um, fm = u["peak_extra_bytes"], f["peak_extra_bytes"]
            ratios[f"memory_ratio_{kind}"] = fm / um if um and fm is not None else None
    return {"N": N, "V": V, "dtype": str(s.dtype).replace("torch.", ""), "fused_backend": fused,
            "cases": res, **ratios}


def targets(gae: dict, lp: dict, triton_ok: bool, on_gpu: bool) -> list[dict]:
    """The issue's targets, each met / missed / null with the reason it cannot be judged."""
    tri = gae.get("cases", {}).get("triton associative_scan", {})
    fused = lp.get("cases", {}).get("fused fwd", {})
    rows = [("Triton GAE speed-up vs the reverse loop", ">= 50x", tri.get("speedup_vs_loop"), 50.0, True),
            ("fused log-prob forward, fraction of peak HBM bandwidth", ">= 0.80",
             fused.get("fraction_of_peak"), 0.80, True),
            ("fused / unfused peak extra memory, forward", "<= 0.25", lp.get("memory_ratio_fwd"), 0.25, False),
            ("fused / unfused peak extra memory, forward+backward", "<= 0.25", lp.get("memory_ratio_fb"),
             0.25, False)]
    out = []
    for name, goal, value, bound, higher in rows:
        met = None if value is None or not on_gpu else (value >= bound if higher else value <= bound)
        why = None
        if not on_gpu:
            why = "not judged: the targets are for a GPU"
        elif value is None:
            why = "not measured (no Triton)" if not triton_ok else "not measured (unknown peak or skipped)"
        out.append({"target": name, "goal": goal, "value": value, "met": met, "why_null": why})
    return out


def run(dev: torch.device, impls: KernelImpls, small: bool, deadline: Deadline,
        peak: float | None, seed: int = 0) -> dict:
    """Checks first (they decide the exit code), then timings within the deadline."""
    s = SMALL_SIZES if small else GPU_SIZES
    triton_ok, how = triton_usable(dev)
    backends = ["torch"] + (["triton"] if triton_ok else [])
    fused = "triton" if triton_ok else "torch"
    gen = torch.Generator(device=dev).manual_seed(seed)  # inputs drawn where they live
    checks = check_gae(dev, impls, backends, s, gen) + check_logprobs(dev, impls, backends, s, gen)
    checks.append(check_full_size(dev, impls, fused, s, gen))
    # timings: Triton only compiled - the interpreter is a correctness tool, not a timing one
    timed_triton = triton_ok and dev.type == "cuda"
    m, loop_m = Meter(dev, s.repeats), Meter(dev, s.loop_repeats)
    gae = _timings_gae(m, loop_m, impls, timed_triton, s, deadline, peak)
    lp = _timings_logprobs(m, impls, "triton" if timed_triton else "torch", s, deadline, peak)
    return {"triton": how if triton_ok else f"not used: {how}", "backends": backends,
            "checks": checks, "all_agree": all(c["passed"] for c in checks),
            "gae": gae, "logprobs": lp, "targets": targets(gae, lp, timed_triton, dev.type == "cuda"),
            "skipped_steps": deadline.skipped}
