"""The device under test: its name, its spec-sheet peaks and its measured ceilings.

Peak HBM bandwidth comes from one table, the compiler's ``flowrl.compiler.cluster.DEVICES``
(the numbers placement plans with), refined by the card's memory size (``bw_by_mem``) and by
the few form factors below whose bandwidth differs from their family's. A device in neither
table has no peak: callers report a null fraction rather than a guess.
"""

from __future__ import annotations

import re
import time
from typing import Any

import torch

from flowrl.compiler.cluster import DEVICES, ClusterSpec

GIB = 2 ** 30

#: Form factors whose HBM bandwidth (GB/s, vendor datasheets) differs from the family entry in
#: ``DEVICES``; matched as a substring of the CUDA device name, longest first.
FORM_FACTOR_GBPS: dict[str, float] = {
    "H100 PCIe": 2000.0,
    "A100 80GB PCIe": 1935.0,
    "A100-PCIE-40GB": 1555.0,
}

TABLE_SOURCE = "flowrl.compiler.cluster.DEVICES (vendor datasheets)"
FORM_SOURCE = "benchmarks/gpu_check_device.FORM_FACTOR_GBPS (vendor datasheets)"


def device_family(name: str) -> str | None:
    """The ``DEVICES`` key naming this device (a whole token of its name), or None."""
    tokens = {t.lower() for t in re.split(r"[\s\-_/]+", name) if t}
    return next((k for k in DEVICES if k.lower() in tokens), None)


def peak_hbm(name: str, total_memory_bytes: int | None) -> dict[str, Any]:
    """Spec-sheet HBM bandwidth of a device by its name and memory size.

    Returns ``{"family", "peak_hbm_gbps", "peak_tflops_bf16", "nominal_memory_gb", "source"}``;
    ``peak_hbm_gbps`` is None (and ``source`` says why) for a device no table knows.
    """
    family = device_family(name)
    out: dict[str, Any] = {"family": family, "peak_hbm_gbps": None, "peak_tflops_bf16": None,
                           "nominal_memory_gb": None, "source": f"unknown device '{name}': "
                           f"not in {TABLE_SOURCE} nor {FORM_SOURCE}"}
    if family is None:
        return out
    d = DEVICES[family]
    sizes = sorted(set(d["memory"]) | set(d.get("bw_by_mem", {})))
    if total_memory_bytes:  # marketed "80GB" cards report about 80 GiB: compare in GiB
        nominal = min(sizes, key=lambda s: abs(s - total_memory_bytes / GIB))
    else:
        nominal = d["memory"][0]
    out.update(nominal_memory_gb=nominal, peak_tflops_bf16=float(d["tflops"]),
               peak_hbm_gbps=float(d.get("bw_by_mem", {}).get(nominal, d["bw"])),
               source=f"{TABLE_SOURCE}['{family}'], {nominal} GB")
    for key in sorted(FORM_FACTOR_GBPS, key=len, reverse=True):
        if key.lower() in name.lower():
            out.update(peak_hbm_gbps=FORM_FACTOR_GBPS[key], source=f"{FORM_SOURCE}['{key}']")
            break
    return out


def describe(device: torch.device) -> dict[str, Any]:
    """Name, memory, software versions and spec-sheet peaks of ``device`` (CPU: no peaks)."""
    info: dict[str, Any] = {"type": device.type, "torch": torch.__version__,
                            "cuda": torch.version.cuda}
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception as e:  # not installed, or a broken install
        info["triton"] = f"unavailable: {type(e).__name__}: {e}"
    if device.type != "cuda":
        info.update(name="CPU", total_memory_bytes=None, capability=None,
                    **peak_hbm("CPU", None))
        info["source"] = "CPU: no HBM peak (fractions are null)"
        return info
    props = torch.cuda.get_device_properties(device)
    info.update(name=props.name, total_memory_bytes=int(props.total_memory),
                capability=f"{props.major}.{props.minor}",
                multiprocessors=props.multi_processor_count)
    info.update(peak_hbm(props.name, props.total_memory))
    return info


def _median_ms(device: torch.device, fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize(device)
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def measure_ceilings(device: torch.device, small: bool) -> dict[str, float]:
    """Measured ceilings (METHOD: datasheet rates are leads): a device-to-device copy
    (bytes read + written) and a square bf16 matmul on random data. A CPU run is a dry run
    of the paths: always the small sizes."""
    small = small or device.type == "cpu"
    n_copy = (16 if small else 1024) * 2 ** 20 // 4  # fp32 elements: 16 MiB / 1 GiB, >> L2
    src = torch.randn(n_copy, device=device)
    dst = torch.empty_like(src)
    ms = _median_ms(device, lambda: dst.copy_(src), 5 if small else 20)
    copy_gbps = 2 * src.numel() * 4 / (ms * 1e-3) / 1e9
    del src, dst
    k = 256 if small else 8192
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    a, b = torch.randn(k, k, device=device, dtype=dtype), torch.randn(k, k, device=device, dtype=dtype)
    ms = _median_ms(device, lambda: a @ b, 3 if small else 10)
    return {"copy_gbps": copy_gbps, "matmul_tflops": 2 * k ** 3 / (ms * 1e-3) / 1e12,
            "matmul_size": k, "matmul_dtype": str(dtype).replace("torch.", "")}


def cluster_specs(info: dict[str, Any], ceilings: dict[str, float]) -> dict[str, ClusterSpec]:
    """One-device cluster specs for the cost model: ``spec`` from the device table (absent for
    an unknown device) and ``calibrated`` from the measured ceilings (efficiency 1.0: the
    matmul rate already is an achieved rate)."""
    mem_gb = (info["total_memory_bytes"] or 16 * GIB) / 1e9
    common = dict(num_nodes=1, devices_per_node=1, device_memory_gb=mem_gb,
                  device_type=info["family"] or info["name"])
    out: dict[str, ClusterSpec] = {}
    if info["peak_hbm_gbps"] is not None:
        d = DEVICES[info["family"]]
        out["spec"] = ClusterSpec(name=f"1x{info['name']} (spec sheet)", **common,
                                  device_tflops=info["peak_tflops_bf16"],
                                  memory_bandwidth_gbps=info["peak_hbm_gbps"],
                                  intra_node_bandwidth_gbps=d["link"],
                                  host_bandwidth_gbps=d["host"])
    bw = ceilings["copy_gbps"]
    out["calibrated"] = ClusterSpec(name=f"1x{info['name']} (measured)", **common,
                                    device_tflops=ceilings["matmul_tflops"],
                                    flops_efficiency=1.0, memory_bandwidth_gbps=bw,
                                    intra_node_bandwidth_gbps=bw, host_bandwidth_gbps=bw)
    return out
