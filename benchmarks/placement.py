"""Placement strategies compared: PPO and GRPO flows, five policy/critic sizes, three clusters.

    python benchmarks/placement.py [--quick] [--out runs/bench_placement] [--no-plot]
    flowrl bench placement [same options]

Every case is compiled with ``colocate``, ``disaggregate``, ``hybrid`` and ``search`` (the
compiler's cost model; nothing runs, no weights are loaded) with ``max_staleness = 1``:
asynchronous plans are allowed, and a plan whose rollout and train devices overlap runs
synchronously. Printed: a table of estimated seconds per episode (the pipelined steady state
where the stages overlap), peak memory per device, bytes offloaded per episode and the best
strategy, then ``search`` vs ``colocate`` with the plan ``search`` chose (per-model
layouts, rollout:train split, staleness); written to ``OUT/placement.csv`` and
``OUT/placement.png``. Cases that no strategy can fit, and strategies that fail, are listed
with the compiler's reason.

Flows (traced from placeholder modules that are never set up):

* PPO (``RLHFEngine``): policy generates, reference/value/reward score, ppo_policy and
  ppo_value train; policy-sized: policy, reference, ppo_policy; critic-sized: reward, value,
  ppo_value.
* GRPO: policy generates ``num_inference_per_prompt`` samples per prompt, reference scores
  log-probs, a rule reward (no weights) scores, grpo_policy trains; no value model (so the
  critic size does not apply).

Model-parallel sizes in the configs are chosen as a user would: the smallest power-of-two
tensor-parallel size (at most one node) at which a trainer's bf16 weights + grads take at
most half of a device, then pipeline stages across nodes if one node is not enough.
Inference twins use their trainer's sizes. ``colocate``, ``disaggregate`` keep them;
``hybrid`` and ``search`` choose every model's tp x pp x dp themselves.

The cases and their compilation live in ``placement_cases.py``; this file reports them.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

# the cases live beside this file; `flowrl bench` loads this file by path, not as a package
# (appended, so no benchmark script shadows an installed module)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))
from placement_cases import (BATCH, CLUSTERS, FLOWS, QUICK, SIZES, STRATEGIES,  # noqa: E402
                             Result, run)
# re-exported: tests and benchmarks/published_setups.py use them through this module
from placement_cases import (_placeholder_classes, model_sections,  # noqa: E402,F401
                             parallel_sizes, runtime_args, traced_flows)


# ---- output ---------------------------------------------------------------------------------
CSV_FIELDS = ("flow", "policy_params_b", "critic_params_b", "cluster", "strategy", "tp", "pp",
              "critic_tp", "fits", "best", "iteration_s", "peak_memory_gb_per_device",
              "capacity_gb_per_device", "offload_gb_per_iteration", "optimizer_streamed",
              "compile_s", "placement", "reason", "synchronous_iteration_s", "family", "split",
              "staleness", "layouts")


def write_csv(results: list[Result], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for r in results:
            w.writerow([r.flow, r.policy_b, "" if r.critic_b is None else r.critic_b, r.cluster,
                        r.strategy, r.tp, r.pp, "" if r.critic_tp is None else r.critic_tp,
                        int(r.ok), int(r.best),
                        f"{r.iteration_s:.6g}" if r.ok else "",
                        f"{r.peak_gb:.6g}" if r.ok else "", f"{r.capacity_gb:.6g}",
                        f"{r.offload_gb:.6g}" if r.ok else "", int(r.streamed),
                        f"{r.compile_s:.4f}", r.placement, r.reason,
                        f"{r.sync_iteration_s:.6g}" if r.ok else "", r.family, r.split,
                        r.staleness if r.ok else "", r.layouts])
    return path


def _fmt_s(s: float) -> str:
    return f"{s:,.0f}" if s >= 100 else f"{s:.3g}"


def table(results: list[Result]):
    from rich.table import Table

    t = Table(title="per strategy: estimated iteration time (s) / peak memory per device (GB) "
                    "/ offload+onload traffic per iteration (GB, all devices)",
              title_justify="left")
    for col in ("flow", "policy/critic", "cluster", "tp,pp", *STRATEGIES, "best",
                "best vs colocate"):
        t.add_column(col, justify="left" if col in ("flow", "policy/critic", "cluster", "best")
                     else "right")
    by_case: dict[tuple, dict[str, Result]] = {}
    for r in results:
        by_case.setdefault(r.case, {})[r.strategy] = r
    for case, rs in by_case.items():
        any_r = next(iter(rs.values()))
        cells = []
        for st in STRATEGIES:
            r = rs.get(st)
            if r is None:
                cells.append("")
            elif not r.ok:
                cells.append("does not fit")
            else:
                cells.append(f"{_fmt_s(r.iteration_s)} / {r.peak_gb:.0f} / {r.offload_gb:,.0f}"
                             + ("*" if r.streamed else ""))
        best = next((r for r in rs.values() if r.best), None)
        colo = rs.get("colocate")
        gain = "-"
        if best is not None and colo is not None and colo.ok:
            gain = f"{colo.iteration_s / best.iteration_s:.2f}x"
        tp = f"{any_r.tp},{any_r.pp}" + (f" / {any_r.critic_tp}" if any_r.critic_tp else "")
        t.add_row(any_r.flow.upper(), any_r.sizes, any_r.cluster, tp, *cells,
                  best.strategy if best else "NONE FITS", gain)
    return t


def speedups(results: list[Result]) -> list[tuple[Result, Result, float]]:
    """(search, colocate, colocate / search time) per case where both fit."""
    by_case: dict[tuple, dict[str, Result]] = {}
    for r in results:
        by_case.setdefault(r.case, {})[r.strategy] = r
    return [(rs["search"], rs["colocate"], rs["colocate"].iteration_s / rs["search"].iteration_s)
            for rs in by_case.values()
            if "search" in rs and "colocate" in rs and rs["search"].ok and rs["colocate"].ok]


def plans_table(results: list[Result]):
    """search vs colocate per case, with the plan search chose."""
    from rich.table import Table

    t = Table(title="search vs colocate (estimated seconds per episode) and the plan search "
                    "chose", title_justify="left")
    for col in ("flow", "policy/critic", "cluster", "colocate", "search", "speedup", "family",
                "split", "k", "layouts (tp x pp x dp)"):
        t.add_column(col, justify="right" if col in ("colocate", "search", "speedup", "k")
                     else "left")
    for srch, colo, x in speedups(results):
        t.add_row(srch.flow.upper(), srch.sizes, srch.cluster, _fmt_s(colo.iteration_s),
                  _fmt_s(srch.iteration_s), f"{x:.2f}x", srch.family, srch.split,
                  str(srch.staleness), srch.layouts)
    return t


def verdict(results: list[Result]) -> str:
    """The issue's bar: search >= 1.2x faster than colocate on at least half the cases where
    colocate fits, never slower."""
    sp = speedups(results)
    fast = sum(x >= 1.2 for _, _, x in sp)
    slower = [f"{s.flow} {s.sizes} {s.cluster}" for s, _, x in sp if x < 1 - 1e-9]
    only = sum(1 for r in results if r.strategy == "search" and r.ok) - len(sp)
    return (f"search >= 1.2x faster than colocate on {fast} of {len(sp)} cases "
            f"(median {sorted(x for _, _, x in sp)[len(sp) // 2]:.2f}x); slower on "
            f"{len(slower)}{': ' + ', '.join(slower) if slower else ''}; search fits "
            f"{only} case(s) colocate does not") if sp else "no case where both fit"


def failures(results: list[Result]) -> list[str]:
    """Lines for cases nothing fits, then for strategies that fail where another fits."""
    by_case: dict[tuple, list[Result]] = {}
    for r in results:
        by_case.setdefault(r.case, []).append(r)
    none_fit, some_fail = [], []
    for rs in by_case.values():
        r0 = rs[0]
        head = f"{r0.flow.upper()} {r0.sizes} on {r0.cluster}"
        bad = [r for r in rs if not r.ok]
        if bad and len(bad) == len(rs):
            none_fit.append(f"{head}: nothing fits. " + " | ".join(
                f"{r.strategy}: {r.reason}" for r in bad))
        for r in bad if len(bad) < len(rs) else []:
            some_fail.append(f"{head}, {r.strategy}: {r.reason}")
    return ([f"cannot fit at all: {x}" for x in none_fit] or ["every case fits with at "
                                                                "least one strategy"]) + \
        [f"strategy fails: {x}" for x in some_fail]


def plot(results: list[Result], path: Path) -> Path:
    """Grouped bars: estimated iteration time per strategy, one panel per flow and cluster;
    an x marks a strategy that does not fit."""
    from matplotlib.figure import Figure

    flows = list(dict.fromkeys(r.flow for r in results))
    clusters = list(dict.fromkeys(r.cluster for r in results))
    fig = Figure(figsize=(5.2 * len(clusters), 3.6 * len(flows)))
    axes = fig.subplots(len(flows), len(clusters), squeeze=False)
    colors = {"colocate": "#4c72b0", "disaggregate": "#dd8452", "hybrid": "#8172b3",
              "search": "#55a868"}
    width = 0.8 / len(STRATEGIES)
    for i, flow in enumerate(flows):
        for j, cluster in enumerate(clusters):
            ax = axes[i][j]
            rs = [r for r in results if r.flow == flow and r.cluster == cluster]
            labels = list(dict.fromkeys(r.sizes for r in rs))
            ok_times = [r.iteration_s for r in rs if r.ok]
            floor = min(ok_times) / 3 if ok_times else 1.0
            for k, st in enumerate(STRATEGIES):
                xs, ys, bad = [], [], []
                for x, lab in enumerate(labels):
                    r = next((r for r in rs if r.sizes == lab and r.strategy == st), None)
                    if r is None:
                        continue
                    pos = x + (k - (len(STRATEGIES) - 1) / 2) * width
                    (xs.append(pos), ys.append(r.iteration_s)) if r.ok else bad.append(pos)
                ax.bar(xs, ys, width, color=colors[st], label=st)
                if bad:
                    ax.scatter(bad, [floor * 1.2] * len(bad), marker="x", color=colors[st],
                               s=40, zorder=3)
            ax.set_yscale("log")
            ax.set_xticks(range(len(labels)), labels, fontsize=8)
            ax.set_title(f"{flow.upper()} on {cluster}", fontsize=10)
            if j == 0:
                ax.set_ylabel("estimated iteration time (s)")
            if i == len(flows) - 1:
                ax.set_xlabel("policy / critic size (x: does not fit)")
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="flowrl bench placement",
                                description="Compare placement strategies (estimates).")
    p.add_argument("--quick", action="store_true",
                   help=f"a small subset: sizes {QUICK['sizes']} on {QUICK['clusters']}")
    p.add_argument("--out", default="runs/bench_placement",
                   help="directory for placement.csv and placement.png")
    p.add_argument("--flows", nargs="+", choices=FLOWS)
    p.add_argument("--clusters", nargs="+", help=f"default: {' '.join(CLUSTERS)}")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--seed", type=int, default=0, help="seed of the search strategy")
    p.add_argument("--generation-batch-size", type=int, default=64,
                   help="samples per rollout call (its KV cache must fit; default 64)")
    p.add_argument("--micro-batch-size", type=int, default=2,
                   help="train micro-batch, split over data-parallel replicas (default 2)")
    p.add_argument("-v", "--verbose", action="store_true", help="print each case as it runs")
    a = p.parse_args(argv)
    BATCH.update(generation_batch_size=a.generation_batch_size,
                 train_micro_batch_size=a.micro_batch_size)
    from rich.console import Console

    cfg: dict[str, Any] = dict(QUICK) if a.quick else dict(flows=FLOWS, sizes=SIZES,
                                                           clusters=CLUSTERS)
    if a.flows:
        cfg["flows"] = tuple(a.flows)
    if a.clusters:
        cfg["clusters"] = tuple(a.clusters)
    t0 = time.perf_counter()
    results = run(seed=a.seed, progress=a.verbose, **cfg)
    elapsed = time.perf_counter() - t0
    con = Console(width=170)
    con.print(table(results))
    con.print(plans_table(results))
    con.print(verdict(results), highlight=False)
    con.print("* optimizer state streamed through the train step (ZeRO-Offload style). "
              "tp,pp: the policy's tensor/pipeline sizes / the critic's tensor size. "
              f"Batches: {BATCH['generation_batch_size']} samples per rollout call, 128 per "
              f"optimizer step in micro-batches of {BATCH['train_micro_batch_size']}; 1024 "
              f"samples per iteration; sequences 2048 tokens (1024 generated).",
              highlight=False)
    for line in failures(results):
        con.print(line, highlight=False, soft_wrap=True)
    wins = {}
    for r in results:
        if r.best:
            wins[r.strategy] = wins.get(r.strategy, 0) + 1
    con.print("best strategy count: " + ", ".join(f"{k} {v}" for k, v in sorted(wins.items()))
              + f"; {len(results)} compiles in {elapsed:.1f} s", highlight=False)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    con.print(f"wrote {write_csv(results, out / 'placement.csv')}", highlight=False)
    if not a.no_plot:
        con.print(f"wrote {plot(results, out / 'placement.png')}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
