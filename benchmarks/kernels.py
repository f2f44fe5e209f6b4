"""Benchmark the flowrl.kernels ops against their naive torch counterparts.

(a) GAE at B x T: reverse Python loop vs vectorised torch scan vs Triton.
(b) per-token log-probs at N tokens x V: ``log_softmax(logits.float()).gather()``
    vs the fused path (Triton on GPU, the chunked torch path on CPU).

Prints time and peak *extra* memory (beyond the inputs) side by side with the
ratios, and on GPU the achieved bandwidth as a fraction of the device's HBM
bandwidth. The defaults are the sizes of the issue (B=256, T=2048; 16k
tokens, V in 32k/128k/256k) except that on CPU the log-probs use 1024 tokens
so the run takes a minute or two; on CPU the Triton columns are skipped (the
interpreter is a correctness tool, not a timing one).

    python benchmarks/kernels.py                  # device auto-detected
    python benchmarks/kernels.py --tokens 2048 --vocab 32768 131072
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import flowrl.kernels as K
from flowrl.kernels.reference import gae_loop, gae_torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, also when loaded by path
from gpu_check_device import peak_hbm  # noqa: E402  (the one table of HBM peaks)


# ------------------------------------------------------------------ measurement


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _proc_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024


class Meter:
    """Times a callable and measures its peak extra memory on one device."""

    def __init__(self, device: torch.device, repeats: int):
        self.device, self.repeats = device, repeats
        self.cuda = device.type == "cuda"
        self._libc = None
        if not self.cuda and sys.platform.startswith("linux"):
            try:
                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                pass

    def _malloc_precise(self, precise: bool) -> None:
        """glibc tuning for CPU runs.

        Memory runs: every allocation over 64 KiB is mmapped and unmapped on
        free, so the resident-set high-water mark follows the live tensors.
        Timed runs: keep freed blocks (< 64 MiB) in the heap for reuse, as a
        long-running trainer would, instead of paying page faults per call.
        """
        if self._libc is not None:
            M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
            self._libc.mallopt(M_MMAP_THRESHOLD, 1 << 16 if precise else 1 << 26)
            self._libc.mallopt(M_TRIM_THRESHOLD, 1 << 17 if precise else 1 << 30)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time_ms(self, fn: Callable[[], object]) -> float:
        self._malloc_precise(False)
        fn()  # warm-up (compilation, autotuning, allocator)
        self.sync()
        samples = []
        for _ in range(self.repeats):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(self.device)
                samples.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e3)
        # GPU: median. CPU: minimum - on a shared/virtual CPU the noise is all
        # one-sided (other processes stealing time), so best-of-n is the stable figure
        return statistics.median(samples) if self.cuda else min(samples)

    def peak_extra_bytes(self, fn: Callable[[], object]) -> int | None:
        """Peak memory allocated while ``fn`` runs, beyond what was live before it."""
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            out = fn()
            torch.cuda.synchronize(self.device)
            del out
            return torch.cuda.max_memory_allocated(self.device) - base
        self._malloc_precise(True)
        self._libc and self._libc.malloc_trim(0)
        try:  # Linux: reset VmHWM, then read the resident high-water mark
            base = _proc_kib("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return None
        out = fn()
        del out
        return _proc_kib("VmHWM") - base

    def safe(self, measure: Callable[[Callable[[], object]], float | int | None], fn: Callable[[], object]):
        """``measure(fn)``, or None when it runs out of device memory."""
        try:
            return measure(fn)
        except torch.OutOfMemoryError:
            gc.collect()
            if self.cuda:
                torch.cuda.empty_cache()
            return None


def fmt_ms(x: float | None) -> str:
    return "OOM" if x is None else (f"{x:9.3f}" if x < 100 else f"{x:9.1f}")


def fmt_mib(x: int | None) -> str:
    return "   n/a" if x is None else f"{x / 2**20:8.1f}"


def ratio(a: float | None, b: float | None) -> str:
    return "  -" if not a or not b else f"{a / b:7.1f}x"


def hbm_gbps(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    props = torch.cuda.get_device_properties(device)
    return peak_hbm(props.name, props.total_memory)["peak_hbm_gbps"]


# ------------------------------------------------------------------ benchmarks


Case = tuple[str, Callable[[], object]]


def gae_cases(dev: torch.device, B: int, T: int, with_triton: bool, skip_loop: bool,
              gae: Callable = K.gae) -> list[Case]:
    """Reverse loop, vectorised torch and Triton GAE on one random batch (``gae``: the op)."""
    r, v = torch.randn(B, T, device=dev), torch.randn(B, T, device=dev)
    lengths = torch.randint(T // 2, T + 1, (B,), device=dev)
    mask = (torch.arange(T, device=dev)[None] < lengths[:, None]).float()
    cases: list[Case] = []
    if not skip_loop:
        cases.append(("reverse loop (reference)", lambda: gae_loop(r, v, mask, 1.0, 0.95)))
    cases.append(("vectorised torch scan", lambda: gae_torch(r, v, mask, 1.0, 0.95)))
    if with_triton:
        cases.append(("triton associative_scan", lambda: gae(r, v, mask, 1.0, 0.95, backend="triton")))
    return cases


def logprob_cases(dev: torch.device, N: int, V: int, dtype: torch.dtype, fused_backend: str,
                  token_logprobs: Callable = K.token_logprobs) -> list[Case]:
    """unfused/fused x fwd/fwd+bwd; raises OutOfMemoryError when the inputs do not fit."""
    logits = torch.randn(N, V, device=dev, dtype=dtype)
    targets = torch.randint(0, V, (N,), device=dev)
    leaf = logits.detach().requires_grad_()

    def unfused_fwd():
        with torch.no_grad():
            return torch.log_softmax(logits.float(), -1).gather(-1, targets[:, None]).squeeze(-1)

    def unfused_fb():
        lp = torch.log_softmax(leaf.float(), -1).gather(-1, targets[:, None]).squeeze(-1)
        return torch.autograd.grad(lp.sum(), leaf)[0]

    def fused_fwd():
        with torch.no_grad():
            return token_logprobs(logits, targets, backend=fused_backend)

    def fused_fb():
        lp = token_logprobs(leaf, targets, backend=fused_backend)
        return torch.autograd.grad(lp.sum(), leaf)[0]

    return [("unfused fwd", unfused_fwd), ("unfused fb", unfused_fb), ("fused fwd", fused_fwd), ("fused fb", fused_fb)]


def measure_all(m: Meter, gae_args: tuple | None, lp_args: tuple | None, vocabs: list[int]) -> dict:
    """All peak-memory runs first, then all timed runs.

    On CPU the two need different allocator settings, and memory left cached
    by timed runs would distort later peak readings, so the phases never mix.
    """
    out: dict = {}
    for phase, measure in (("mem", m.peak_extra_bytes), ("ms", m.time_ms)):
        if gae_args is not None:
            for name, fn in gae_cases(m.device, *gae_args):
                out[(phase, "gae", name)] = m.safe(measure, fn)
        if lp_args is not None:
            for V in vocabs:
                try:
                    cases = logprob_cases(m.device, lp_args[0], V, *lp_args[1:])
                except torch.OutOfMemoryError:
                    continue
                for name, fn in cases:
                    out[(phase, V, name)] = m.safe(measure, fn)
                del cases
                gc.collect()
    return out


def report_gae(res: dict, dev: torch.device, B: int, T: int, peak_bw: float | None) -> None:
    print(f"\n(a) GAE  B={B} T={T} fp32  [{dev}]")
    hdr = f"  {'implementation':28s} {'time ms':>9s} {'peak MiB':>8s} {'speed-up vs loop':>17s}"
    print(hdr + ("  GB/s  %HBM" if peak_bw else ""))
    names = [k[2] for k in res if k[0] == "ms" and k[1] == "gae"]
    base = res.get(("ms", "gae", "reverse loop (reference)"))
    nbytes = 5 * B * T * 4  # 3 inputs read, 2 outputs written
    for name in names:
        t, mem = res[("ms", "gae", name)], res[("mem", "gae", name)]
        extra = ""
        if peak_bw and t:
            gbps = nbytes / (t * 1e-3) / 1e9
            extra = f"  {gbps:6.0f} {100 * gbps / peak_bw:4.0f}%"
        print(f"  {name:28s} {fmt_ms(t)} {fmt_mib(mem)} {ratio(base, t) if base else '  -':>17s}{extra}")


def report_logprobs(res: dict, dev, N: int, vocabs: list[int], dtype: torch.dtype, fused_backend: str, peak_bw) -> None:
    esize = torch.finfo(dtype).bits // 8
    print(f"\n(b) token log-probs  N={N} tokens  logits {str(dtype).replace('torch.', '')}  [{dev}]  fused = {fused_backend}")
    hdr = f"  {'V':>7s} {'path':8s} {'fwd ms':>9s} {'fwd+bwd ms':>10s} {'fwd MiB':>8s} {'f+b MiB':>8s}"
    print(hdr + ("  fwd GB/s %HBM  bwd GB/s %HBM" if peak_bw else ""))
    for V in vocabs:
        if ("mem", V, "fused fwd") not in res:
            print(f"  {V:7d} inputs do not fit")
            continue
        get = lambda phase, name: res.get((phase, V, name))  # noqa: E731
        for path in ("unfused", "fused"):
            tf, tb = get("ms", f"{path} fwd"), get("ms", f"{path} fb")
            mf, mb = get("mem", f"{path} fwd"), get("mem", f"{path} fb")
            extra = ""
            if peak_bw and tf and tb:
                fwd_gbps = N * V * esize / (tf * 1e-3) / 1e9
                # backward alone = (fwd+bwd) - fwd; it reads the logits and writes their gradient
                bwd_gbps = 2 * N * V * esize / ((tb - tf) * 1e-3) / 1e9 if tb > tf else float("nan")
                extra = f"  {fwd_gbps:8.0f} {100 * fwd_gbps / peak_bw:3.0f}%  {bwd_gbps:8.0f} {100 * bwd_gbps / peak_bw:3.0f}%"
            print(f"  {V:7d} {path:8s} {fmt_ms(tf)} {fmt_ms(tb):>10s} {fmt_mib(mf)} {fmt_mib(mb)}{extra}")
        mem_r = lambda a, b: "-" if not a or not b else f"{b / a:.3f}"  # noqa: E731
        print(
            f"  {'':7s} {'ratio':8s} speed-up fwd {ratio(get('ms', 'unfused fwd'), get('ms', 'fused fwd')).strip()}, "
            f"fwd+bwd {ratio(get('ms', 'unfused fb'), get('ms', 'fused fb')).strip()}; peak extra memory fused/unfused "
            f"fwd {mem_r(get('mem', 'unfused fwd'), get('mem', 'fused fwd'))}, "
            f"fwd+bwd {mem_r(get('mem', 'unfused fb'), get('mem', 'fused fb'))}"
        )


def sweep_logprobs(m: Meter, N: int, vocabs: list[int], dtype: torch.dtype, peak_bw: float | None) -> None:
    """GPU only: forward bandwidth of the Triton kernel per launch configuration (to tune _pick_block)."""
    from flowrl.kernels.dispatch import load_triton_module

    mod = load_triton_module("logprob_triton", "_logprob_fwd_kernel")
    esize = torch.finfo(dtype).bits // 8
    print(f"\n(c) Triton forward launch sweep  N={N}  (GB/s{', %HBM' if peak_bw else ''})")
    for V in vocabs:
        logits = torch.randn(N, V, device=m.device, dtype=dtype)
        targets = torch.randint(0, V, (N,), device=m.device)
        cells = []
        for block in (1024, 2048, 4096, 8192, 16384):
            for warps in (4, 8, 16):
                with torch.no_grad():
                    t = m.time_ms(lambda: mod.token_logprobs_triton(logits, targets, 1.0, False, block, warps))
                gbps = N * V * esize / (t * 1e-3) / 1e9
                cells.append(f"{block}/{warps}w {gbps:.0f}" + (f" {100 * gbps / peak_bw:.0f}%" if peak_bw else ""))
        print(f"  V={V}: " + ", ".join(cells))
        del logits, targets


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--gae-batch", type=int, default=256, help="B for GAE")
    p.add_argument("--gae-len", type=int, default=2048, help="T for GAE")
    p.add_argument("--tokens", type=int, default=None, help="B*T tokens for log-probs (GPU default 16384, CPU 1024)")
    p.add_argument("--vocab", type=int, nargs="+", default=[32768, 131072, 262144], help="vocabulary sizes")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"], help="logits dtype")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (GPU: median of 20; CPU: best of 5)")
    p.add_argument("--skip-loop", action="store_true", help="skip the slow reverse-loop GAE")
    p.add_argument("--only", choices=["gae", "logprobs"], default=None)
    p.add_argument("--sweep", action="store_true", help="GPU: also sweep BLOCK_V/num_warps of the fused forward")
    p.add_argument("--hbm-gbps", type=float, default=None, help="HBM bandwidth of the GPU if not in the built-in table")
    a = p.parse_args(argv)

    if a.device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(a.device)
    gpu = dev.type == "cuda"
    B, T = a.gae_batch, a.gae_len  # the sizes run in seconds on CPU too
    N = a.tokens or (16384 if gpu else 1024)
    repeats = a.repeats or (20 if gpu else 5)
    m = Meter(dev, repeats)
    torch.manual_seed(0)

    peak_bw = None
    if gpu:
        name = torch.cuda.get_device_name(dev)
        peak_bw = hbm_gbps(dev, a.hbm_gbps)
        bw = f"{peak_bw:.0f} GB/s HBM" if peak_bw else "HBM bandwidth unknown (pass --hbm-gbps)"
        print(f"device: {name} ({bw}); torch {torch.__version__}; triton available: {K.triton_available()}")
    else:
        print(f"device: CPU - {_cpu_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}")
        print("no GPU: running the torch paths only (Triton timings need a CUDA device; the interpreter is not timed);")
        print("time = best of the repeats; peak memory = growth of the process's resident-set high-water mark (VmHWM)")
    with_triton = gpu and K.triton_available()
    dtype = getattr(torch, a.dtype)
    fused = "triton" if with_triton else "torch"
    gae_args = (B, T, with_triton, a.skip_loop) if a.only in (None, "gae") else None
    lp_args = (N, dtype, fused) if a.only in (None, "logprobs") else None
    res = measure_all(m, gae_args, lp_args, a.vocab)
    if gae_args:
        report_gae(res, dev, B, T, peak_bw)
    if lp_args:
        report_logprobs(res, dev, N, a.vocab, dtype, fused, peak_bw)
    if a.sweep and with_triton:
        sweep_logprobs(m, N, a.vocab, dtype, peak_bw)


if __name__ == "__main__":
    main()
