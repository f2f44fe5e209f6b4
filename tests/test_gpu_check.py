"""benchmarks/gpu_check.py on the CPU: arguments, the reference comparisons, the report files,
the exit code when a kernel disagrees or crashes, and the shell script's syntax."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"flowrl_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gc = _load("gpu_check")
from gpu_check_device import peak_hbm  # noqa: E402  (gpu_check put benchmarks/ on sys.path)
from gpu_check_kernels import KernelImpls, rel_err  # noqa: E402

import flowrl.kernels as K  # noqa: E402


def test_parse_args_defaults_and_options():
    a = gc.parse_args(["--out", "x"])
    assert (a.device, a.budget_s, a.small, a.sections) == ("cuda", 420.0, False,
                                                           ["kernels", "costmodel", "vllm"])
    a = gc.parse_args(["--out", "x", "--skip-vllm", "--device", "cpu", "--small", "--budget-s", "60"])
    assert (a.device, a.budget_s, a.small, a.sections) == ("cpu", 60.0, True, ["kernels", "costmodel"])
    assert gc.parse_args(["--out", "x", "--sections", "kernels"]).sections == ["kernels"]


@pytest.mark.parametrize("argv, message", [
    (["--budget-s", "1"], "the following arguments are required: --out"),
    (["--out", "x", "--budget-s", "0"], "--budget-s must be > 0, got 0"),
    (["--out", "x", "--sections", "gae"], "invalid choice: 'gae'"),
])
def test_parse_args_rejects(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        gc.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_resolve_device_errors_name_the_option():
    with pytest.raises(gc.GPUCheckError, match="--device 'nonsense' is not a device name"):
        gc.resolve_device("nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(gc.GPUCheckError, match="--device cuda: torch .* sees no CUDA device"):
            gc.resolve_device("cuda")
    assert isinstance(gc.GPUCheckError("x"), gc.FlowRLError)


def test_peak_bandwidth_table():
    gib = 2 ** 30
    assert peak_hbm("NVIDIA H200", 140 * gib)["peak_hbm_gbps"] == 4800
    assert peak_hbm("NVIDIA H100 80GB HBM3", 80 * gib)["peak_hbm_gbps"] == 3350
    assert peak_hbm("NVIDIA H100 PCIe", 80 * gib)["peak_hbm_gbps"] == 2000
    assert peak_hbm("NVIDIA A100-SXM4-80GB", 80 * gib)["peak_hbm_gbps"] == 2039
    assert peak_hbm("NVIDIA A100-SXM4-40GB", 40 * gib)["peak_hbm_gbps"] == 1555
    assert "DEVICES" in peak_hbm("NVIDIA H200", 140 * gib)["source"]
    unknown = peak_hbm("NVIDIA GeForce RTX 4090", 24 * gib)
    assert unknown["peak_hbm_gbps"] is None
    assert "unknown device 'NVIDIA GeForce RTX 4090'" in unknown["source"]


def test_rel_err():
    x = torch.randn(10)
    assert rel_err(x, x) == 0.0
    assert 0.0 < rel_err(x * 1.01, x) < 0.011
    assert rel_err(torch.full((10,), float("nan")), x) == float("inf")
    assert rel_err(x[:5], x) == float("inf")


def test_section_budget_shares_what_is_left(monkeypatch):
    monkeypatch.setattr(gc.time, "monotonic", lambda: 0.0)
    assert gc.section_budget("kernels", ["kernels", "costmodel", "vllm"], 100.0) == pytest.approx(45.0)
    assert gc.section_budget("costmodel", ["kernels", "costmodel"], 40.0) == pytest.approx(40.0)
    assert gc.section_budget("kernels", ["kernels", "costmodel"], 80.0) == pytest.approx(80 * 0.45 / 0.8)


def test_small_cpu_run_writes_json_and_markdown(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--out", str(tmp_path),
                           "--device", "cpu", "--small", "--budget-s", "300"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert r["schema"] == "flowrl.gpu_check/1" and r["exit_code"] == 0 and r["small"] is True
    assert r["device"]["name"] == "CPU" and r["device"]["peak_hbm_gbps"] is None
    assert r["device"]["ceilings"]["copy_gbps"] > 0
    k = r["sections"]["kernels"]
    assert k["status"] == "ok" and k["all_agree"] is True
    names = {(c["name"], c["backend"]) for c in k["checks"]}
    backends = ["torch", "triton"] if K.triton_available() else ["torch"]
    assert k["backends"] == backends
    for b in backends:
        assert {("gae advantages", b), ("log-prob gradient", b)} <= names
    assert set(k["gae"]["cases"]) >= {"reverse loop (reference)", "vectorised torch scan"}
    assert set(k["logprobs"]["cases"]) == {"unfused fwd", "unfused fb", "fused fwd", "fused fb"}
    assert all(t["met"] is None and "GPU" in t["why_null"] for t in k["targets"])
    c = r["sections"]["costmodel"]
    assert c["status"] == "ok" and [o["op"] for o in c["ops"]] == ["generate", "forward", "train", "sync"]
    for op in c["ops"]:
        assert op["measured_s"] > 0 and op["predicted_calibrated_s"] > 0
        assert op["ratio_calibrated"] == pytest.approx(op["measured_s"] / op["predicted_calibrated_s"])
    v = r["sections"]["vllm"]
    assert v["status"] == "skipped" or v["status"] == "ok"
    if v["status"] == "skipped":
        assert "vllm not importable" in v["reason"]
    md = (tmp_path / "gpu_check.md").read_text()
    for heading in ("## Device", "## Kernels: ok", "### Targets", "## Cost model", "## vLLM"):
        assert heading in md


def _run_kernels_only(tmp_path, impls) -> tuple[int, dict, str]:
    code = gc.main(["--out", str(tmp_path), "--device", "cpu", "--small", "--sections", "kernels"],
                   impls=impls)
    return code, json.loads((tmp_path / "gpu_check.json").read_text()), \
        (tmp_path / "gpu_check.md").read_text()


def test_kernel_that_disagrees_gives_nonzero_exit(tmp_path):
    def off_by_one_percent(*args, **kwargs):
        adv, ret = K.gae(*args, **kwargs)
        return adv * 1.01, ret

    code, r, md = _run_kernels_only(tmp_path, KernelImpls(gae=off_by_one_percent))
    assert code == 1 and r["exit_code"] == 1
    k = r["sections"]["kernels"]
    assert k["status"] == "failed" and k["reason"] == "a kernel disagrees with its reference"
    failed = {c["name"] for c in k["checks"] if not c["passed"]}
    assert failed == {"gae advantages"}
    assert "**NO**" in md


def test_kernel_that_crashes_gives_nonzero_exit(tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("illegal memory access")

    code, r, md = _run_kernels_only(tmp_path, KernelImpls(token_logprobs=broken))
    assert code == 1
    k = r["sections"]["kernels"]
    assert k["status"] == "error" and k["reason"] == "RuntimeError: illegal memory access"
    assert "## Kernels: error" in md


def test_missing_dependencies_are_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "IMPORT_ERROR", "ModuleNotFoundError: No module named 'pydantic'")
    assert gc.main(["--out", str(tmp_path), "--device", "cpu", "--small"]) == 2
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "cannot import torch/flowrl: ModuleNotFoundError: No module named 'pydantic'" in r["device"]["error"]
    assert "**Not usable**" in (tmp_path / "gpu_check.md").read_text()


def test_spent_budget_skips_sections_with_reason(tmp_path):
    code = gc.main(["--out", str(tmp_path), "--device", "cpu", "--budget-s", "0.001", "--skip-vllm"])
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 1  # the kernels were never checked
    for name in ("kernels", "costmodel"):
        s = r["sections"][name]
        assert s["status"] == "skipped" and s["reason"].startswith("budget used up")


def test_shell_script_parses():
    subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")], check=True)


def _fake_python(tmp_path, body: str) -> str:
    exe = tmp_path / "fake-python"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return str(exe)


def test_vllm_section_is_time_boxed_and_records_failures(tmp_path):
    hung = gc.run_vllm(_fake_python(tmp_path, "sleep 30"), 0.5)
    assert hung["status"] == "skipped"
    assert hung["reason"] == "section budget used up: no result within 0 s (engine start + generation + sync)"
    broken = gc.run_vllm(_fake_python(tmp_path, "echo engine died >&2; exit 3"), 30)
    assert broken == {"status": "error", "reason": "exit code 3", "stderr": "engine died\n"}
