"""Markdown tables of a ``gpu_check.py`` result (the JSON it writes holds every number)."""

from __future__ import annotations

import math
from typing import Any


def _num(x: Any, fmt: str = "{:.3g}") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return fmt.format(x)


def _mib(x: int | None) -> str:
    return "-" if x is None else f"{x / 2 ** 20:.1f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _device(d: dict[str, Any]) -> list[str]:
    c = d.get("ceilings") or {}
    lines = ["## Device", ""]
    if d.get("error"):
        return lines + [f"**Not usable**: {d['error']}", ""]
    rows = [["name", str(d.get("name"))], ["compute capability", str(d.get("capability"))],
            ["torch / CUDA / triton", f"{d.get('torch')} / {d.get('cuda')} / {d.get('triton')}"],
            ["peak HBM (spec)", f"{_num(d.get('peak_hbm_gbps'), '{:.0f}')} GB/s ({d.get('source')})"],
            ["measured copy", f"{_num(c.get('copy_gbps'), '{:.0f}')} GB/s"],
            ["measured matmul", f"{_num(c.get('matmul_tflops'))} TFLOP/s "
                                f"({c.get('matmul_size')}^3 {c.get('matmul_dtype')})"]]
    return lines + _table(["", ""], rows)


def _kernels(k: dict[str, Any]) -> list[str]:
    lines = [f"Triton: {k.get('triton')}", "", "### Checks against the float64 references", ""]
    lines += _table(["check", "backend", "shape", "rel. error", "tolerance", "agrees"],
                    [[c["name"], c["backend"], "x".join(map(str, c["shape"])), _num(c["rel_err"]),
                      _num(c["tolerance"]), "yes" if c["passed"] else "**NO**"]
                     for c in k.get("checks", [])])
    g = k.get("gae", {})
    lines += [f"### GAE B={g.get('B')} T={g.get('T')} fp32", ""]
    lines += _table(["implementation", "ms", "peak extra MiB", "speed-up vs loop", "GB/s", "of peak"],
                    [[n, _num(r["ms"]), _mib(r["peak_extra_bytes"]), _num(r.get("speedup_vs_loop")),
                      _num(r.get("gbps"), "{:.0f}"), _pct(r.get("fraction_of_peak"))]
                     for n, r in g.get("cases", {}).items()])
    lp = k.get("logprobs", {})
    lines += [f"### Token log-probs N={lp.get('N')} V={lp.get('V')} {lp.get('dtype')}, "
              f"fused = {lp.get('fused_backend')}", ""]
    if lp.get("error"):
        lines += [lp["error"], ""]
    rows = []
    for n, r in lp.get("cases", {}).items():
        bw = r.get("backward") or r
        rows.append([n, _num(r["ms"]), _mib(r["peak_extra_bytes"]), _num(bw.get("gbps"), "{:.0f}"),
                     _pct(bw.get("fraction_of_peak"))])
    lines += _table(["path", "ms", "peak extra MiB", "GB/s (fb: backward alone)", "of peak"], rows)
    lines += [f"fused/unfused: speed-up fwd {_num(lp.get('speedup_fwd'))}x, fwd+bwd "
              f"{_num(lp.get('speedup_fb'))}x; peak extra memory fwd {_num(lp.get('memory_ratio_fwd'))}, "
              f"fwd+bwd {_num(lp.get('memory_ratio_fb'))}", "", "### Targets", ""]
    lines += _table(["target", "goal", "value", "met"],
                    [[t["target"], t["goal"], _num(t["value"]),
                      t["why_null"] if t["met"] is None else ("yes" if t["met"] else "**no**")]
                     for t in k.get("targets", [])])
    return lines


def _costmodel(c: dict[str, Any]) -> list[str]:
    m = c.get("model", {})
    kinds = list(c.get("clusters", {}))
    lines = [f"Model: TinyGPT {m.get('num_params', 0) / 1e6:.1f} M parameters (d_model "
             f"{m.get('d_model')}, {m.get('layers')} layers, vocab {m.get('vocab')}, {m.get('dtype')}); "
             f"clusters: " + "; ".join(f"{k} = {v['name']}" for k, v in c.get("clusters", {}).items()), ""]
    header = ["op", "shape", "measured"] + [f"predicted ({k})" for k in kinds] + \
        [f"measured/predicted ({k})" for k in kinds]
    rows = [[r["op"], r["shape"], _num(r.get("measured_s"), "{:.4g} s")]
            + [_num(r.get(f"predicted_{k}_s"), "{:.4g} s") for k in kinds]
            + [_num(r.get(f"ratio_{k}"), "{:.3g}x") for k in kinds] for r in c.get("ops", [])]
    return lines + _table(header, rows)


def _vllm(v: dict[str, Any]) -> list[str]:
    keys = ("vllm", "engine_start_ms", "generate_ms", "sync_bytes", "sync_ms",
            "generate_after_sync_ms", "changed_by_sync", "matches_trainer_greedy", "engine_restarted")
    return _table(["", ""], [[k, str(v[k])] for k in keys if k in v])


def markdown(result: dict[str, Any]) -> str:
    """The report: device, then one part per section with its status."""
    lines = [f"# flowrl GPU check ({result.get('started', '')[:19]}Z, "
             f"{'small sizes' if result.get('small') else 'full sizes'})", "",
             f"Exit code {result.get('exit_code')}; {_num(result.get('seconds'), '{:.0f}')} s "
             f"of a {_num(result.get('budget_s'), '{:.0f}')} s budget.", ""]
    lines += _device(result.get("device", {}))
    titles = {"kernels": "Kernels", "costmodel": "Cost model: predicted vs measured per op",
              "vllm": "vLLM generation + weight sync"}
    render = {"kernels": _kernels, "costmodel": _costmodel, "vllm": _vllm}
    for name, sec in result.get("sections", {}).items():
        status = sec.get("status", "?")
        lines += [f"## {titles[name]}: {status}", ""]
        if sec.get("reason"):
            lines += [f"Reason: {sec['reason']}", ""]
        if status in ("ok", "failed"):
            lines += render[name](sec)
        for step in sec.get("skipped_steps", []):
            lines.append(f"- skipped {step}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
