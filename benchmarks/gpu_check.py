"""GPU verification: kernels vs their references and timed, the cost model vs measured ops on
one device, vLLM generation + weight sync; one JSON and one Markdown table into ``--out``.

    python benchmarks/gpu_check.py --out DIR                 # on a GPU machine (cuda)
    python benchmarks/gpu_check.py --out DIR --device cpu --small   # CPU: tiny sizes, paths only
    bash benchmarks/gpu_check.sh                              # installs, then runs this

Sections run in order (kernels, cost model, vLLM), each with its share of ``--budget-s``
(time a section leaves unused passes to the next); a section whose budget is spent is
recorded as skipped with the reason, one that raises is recorded as an error, and the JSON and
Markdown are written in every case. Exit code: 1 if a kernel disagrees with its reference or
the kernels section did not complete, 2 if the device cannot be used, else 0. The sections'
own docstrings (``gpu_check_kernels``, ``gpu_check_costmodel``, ``gpu_check_vllm``) say what
they measure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the section modules, and flowrl from this tree (a fresh GPU machine has it uninstalled)
sys.path[:0] = [str(HERE), str(ROOT)]

from gpu_check_report import markdown  # noqa: E402  (stdlib only)

try:  # torch and flowrl's dependencies: when missing, main() records why in the JSON
    import torch

    import gpu_check_costmodel
    import gpu_check_device
    import gpu_check_kernels
    from flowrl.errors import FlowRLError
    from gpu_check_kernels import Deadline, KernelImpls
    IMPORT_ERROR: str | None = None
except ImportError as e:
    IMPORT_ERROR = (f"{type(e).__name__}: {e} (on a machine without a package index, carry the "
                    f"wheels of 'bash benchmarks/gpu_check.sh --prepare-wheels' in .whl)")
    FlowRLError = RuntimeError  # flowrl itself did not import: GPUCheckError says so
    KernelImpls = None

SCHEMA = "flowrl.gpu_check/1"
#: Section -> share of the budget and the least seconds worth starting it with (GPU sizes).
SECTIONS: dict[str, tuple[float, float]] = {"kernels": (0.45, 60.0), "costmodel": (0.35, 45.0),
                                            "vllm": (0.20, 60.0)}
JSON_NAME, MD_NAME = "gpu_check.json", "gpu_check.md"


class GPUCheckError(FlowRLError):
    """The check cannot run as asked (the message names the option or the device)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:5]))
    p.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json / .md")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="seconds for all sections together (default 420: 7 of the 8 minutes)")
    p.add_argument("--skip-vllm", action="store_true", help="leave out the vLLM section")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--small", action="store_true",
                   help="tiny sizes, so a CPU run exercises every comparison and report path")
    p.add_argument("--vllm-python", default=sys.executable,
                   help="interpreter for the vLLM section (gpu_check.sh installs vLLM in a venv)")
    p.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS),
                   help="run only these sections (default: all)")
    a = p.parse_args(argv)
    if not a.budget_s > 0:
        p.error(f"--budget-s must be > 0, got {a.budget_s:g}")
    if a.skip_vllm and "vllm" in a.sections:
        a.sections.remove("vllm")
    return a


def resolve_device(name: str) -> torch.device:
    """``--device`` as a usable torch device, or GPUCheckError saying why not."""
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise GPUCheckError(f"--device {name!r} is not a device name: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GPUCheckError(f"--device {name}: torch {torch.__version__} sees no CUDA device "
                                f"(a CPU build, or no driver); use --device cpu --small here")
        if (dev.index or 0) >= torch.cuda.device_count():
            raise GPUCheckError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", dev.index or 0)
    if dev.type != "cpu":
        raise GPUCheckError(f"--device {name}: expected cuda, cuda:N or cpu")
    return dev


def section_budget(name: str, chosen: list[str], t_end: float) -> float:
    """This section's share of what is left, shared with the sections still to run."""
    rest = chosen[chosen.index(name):]
    share = SECTIONS[name][0] / sum(SECTIONS[s][0] for s in rest)
    return max(0.0, (t_end - time.monotonic()) * share)


def run_vllm(python: str, budget_s: float) -> dict[str, Any]:
    """``gpu_check_vllm.py`` under ``python`` in a child process, killed at the budget."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    with tempfile.TemporaryDirectory(prefix="flowrl-gpu-check-") as d:
        path = Path(d) / "vllm.json"
        cmd = [python, str(HERE / "gpu_check_vllm.py"), "--json", str(path)]
        # its own process group, so a timeout also ends the engine's worker processes
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=budget_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"status": "skipped", "reason": f"section budget used up: no result within "
                    f"{budget_s:.0f} s (engine start + generation + sync)"}
        if not path.is_file():
            return {"status": "error", "reason": f"exit code {proc.returncode}",
                    "stderr": stderr[-4000:]}
        return json.loads(path.read_text())


def run_sections(a: argparse.Namespace, dev: torch.device, info: dict[str, Any],
                 impls: KernelImpls) -> dict[str, dict[str, Any]]:
    t_end = time.monotonic() + a.budget_s
    out: dict[str, dict[str, Any]] = {}
    ceilings = info.get("ceilings") or {}
    for name in a.sections:
        budget = section_budget(name, a.sections, t_end)
        least = 0.0 if a.small else SECTIONS[name][1]
        if budget < least:
            out[name] = {"status": "skipped", "budget_s": budget, "reason":
                         f"budget used up: {budget:.0f} s left for it, it needs about {least:.0f} s"}
            continue
        deadline = Deadline(time.monotonic() + budget)
        jobs: dict[str, Callable[[], dict]] = {
            "kernels": lambda: gpu_check_kernels.run(dev, impls, a.small, deadline, info["peak_hbm_gbps"]),
            "costmodel": lambda: gpu_check_costmodel.run(
                dev, a.small, gpu_check_device.cluster_specs(info, ceilings), deadline),
            "vllm": lambda: run_vllm(a.vllm_python, budget)}
        t0 = time.monotonic()
        try:
            res = jobs[name]()
            res.setdefault("status", "ok")
        except Exception as e:  # recorded, and the report is still written
            res = {"status": "error", "reason": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc()[-4000:]}
        if name == "kernels" and res["status"] == "ok" and not res["all_agree"]:
            res["status"] = "failed"
            res["reason"] = "a kernel disagrees with its reference"
        res.update(budget_s=budget, seconds=time.monotonic() - t0)
        out[name] = res
        print(f"[gpu_check] {name}: {res['status']} in {res['seconds']:.1f} s"
              + (f" ({res['reason']})" if res.get("reason") else ""), flush=True)
    return out


def exit_code(sections: dict[str, dict[str, Any]], wanted: list[str]) -> int:
    """1 iff a kernel disagrees or the kernels section (when asked for) did not complete."""
    if "kernels" not in wanted:
        return 0
    k = sections.get("kernels", {})
    return 0 if k.get("status") == "ok" and k.get("all_agree") else 1


def _strict(x: Any) -> Any:
    """Non-finite floats as strings ("inf", "nan"), so the JSON stays standard."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    return x


def write(out: Path, result: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / JSON_NAME, out / MD_NAME
    j.write_text(json.dumps(_strict(result), indent=2, default=str, allow_nan=False))
    m.write_text(markdown(result))
    return j, m


def main(argv: list[str] | None = None, impls: KernelImpls | None = None) -> int:
    """Run the check; ``impls`` replaces the kernels under test (a test seam)."""
    a = parse_args(argv)
    result: dict[str, Any] = {
        "schema": SCHEMA, "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "argv": sys.argv[1:] if argv is None else list(argv), "small": a.small,
        "budget_s": a.budget_s, "device": {"requested": a.device}, "sections": {}}
    t0 = time.monotonic()
    try:
        if IMPORT_ERROR is not None:
            raise GPUCheckError(f"cannot import torch/flowrl: {IMPORT_ERROR}")
        dev = resolve_device(a.device)
        info = gpu_check_device.describe(dev)
        info["ceilings"] = gpu_check_device.measure_ceilings(dev, a.small)
        result["device"].update(info)
        result["sections"] = run_sections(a, dev, info, impls or KernelImpls())
        code = exit_code(result["sections"], a.sections)
    except GPUCheckError as e:
        result["device"]["error"] = str(e)
        print(f"error: {e}", file=sys.stderr)
        code = 2
    result.update(seconds=time.monotonic() - t0, exit_code=code)
    j, m = write(a.out, result)
    print(markdown(result))
    print(f"[gpu_check] wrote {j} and {m}; exit code {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
