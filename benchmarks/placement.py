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
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowrl.compiler import compile_schedule, parse_cluster
from flowrl.ir import ClusterSpec, FlowGraph, Schedule
from flowrl.config import ModelConfig, RuntimeArgs
from flowrl.errors import CompileError

STRATEGIES = ("colocate", "disaggregate", "search")  # (and `hybrid`: --strategies)
#: 8, 16 and 64 GPUs in nodes of 8.
CLUSTERS = ("8xH100-80GB", "2x8xH100-80GB", "8x8xH100-80GB")
MAX_STALENESS = 1
FLOWS = ("ppo", "grpo")
#: (policy, critic) sizes in billions of parameters.
SIZES = ((1.3, 1.3), (7, 7), (13, 7), (34, 7), (70, 7))
QUICK = dict(flows=FLOWS, sizes=((7, 7), (70, 7)), clusters=("8xH100-80GB",))

#: Public shapes of models of these sizes (layers, hidden, vocab): OPT-1.3B, Llama-2-7B/13B,
#: CodeLlama-34B, Llama-2-70B; (heads, KV heads): the 34B and 70B use grouped-query attention.
SHAPES = {1.3: (24, 2048, 50272), 7: (32, 4096, 32000), 13: (40, 5120, 32000),
          34: (48, 8192, 32000), 70: (80, 8192, 32000)}
HEADS = {1.3: (32, 32), 7: (32, 32), 13: (40, 40), 34: (64, 8), 70: (64, 8)}
MAX_SEQ_LEN, MAX_NEW_TOKENS = 2048, 1024
GRPO_SAMPLES_PER_PROMPT = 8


#: Per episode: 1024 samples in rollout batches of 64, optimizer steps of 128 samples in
#: micro-batches of 2 (split over data-parallel replicas). ``--generation-batch-size`` and
#: ``--micro-batch-size`` change the two that decide what fits.
BATCH = {"generation_batch_size": 64, "train_micro_batch_size": 2}


def runtime_args(flow: str) -> RuntimeArgs:
    return RuntimeArgs(sample_per_episode=1024, train_global_batch_size=128, **BATCH,
                       num_training_epoch=1, progress=False, max_staleness=MAX_STALENESS,
                       num_inference_per_prompt=GRPO_SAMPLES_PER_PROMPT if flow == "grpo" else 1)


def parallel_sizes(billions: float, cluster: ClusterSpec) -> tuple[int, int]:
    """(tp, pp): smallest tp (power of two, within a node) with bf16 weights + grads of a
    trainer at most half a device; pipeline stages (powers of two) when a node is not enough."""
    need = 4 * billions * 1e9  # bytes of bf16 weights + grads
    half = cluster.device_memory_gb * 1e9 / 2
    tp = 1
    while need / tp > half and tp * 2 <= cluster.devices_per_node:
        tp *= 2
    pp = 1
    while need / (tp * pp) > half and tp * pp * 2 <= cluster.num_devices:
        pp *= 2
    return tp, pp


def model_section(billions: float, cluster: ClusterSpec, generates: bool = False,
                  rule: bool = False) -> ModelConfig:
    if rule:  # rule-based reward: no weights, nothing to plan but a call
        return ModelConfig(num_params=1, num_layers=1, hidden_size=1, vocab_size=1)
    layers, hidden, vocab = SHAPES[billions]
    tp, pp = parallel_sizes(billions, cluster)
    extra = dict(max_seq_len=MAX_SEQ_LEN, max_new_tokens=MAX_NEW_TOKENS) if generates else {}
    heads, kv_heads = HEADS[billions]
    return ModelConfig(num_params=int(billions * 1e9), num_layers=layers, hidden_size=hidden,
                       vocab_size=vocab, tensor_model_parallel_size=tp,
                       pipeline_model_parallel_size=pp,
                       shape={"num_heads": heads, "num_kv_heads": kv_heads}, **extra)


# ---- traced flows ---------------------------------------------------------------------------
def _placeholder_classes():
    from flowrl.errors import FlowRLError
    from flowrl.models.base import BaseModule

    class Placeholder(BaseModule):
        """Stands in for a model in a plan; never set up or run."""

        def forward_step(self, data, iteration=0):
            raise FlowRLError(f"'{self.name}' is a planning placeholder")

    class PlaceholderTrainer(Placeholder):
        def train_step(self, data, iteration):
            raise FlowRLError(f"'{self.name}' is a planning placeholder")

    return Placeholder, PlaceholderTrainer


def traced_flows(flow: str) -> tuple[dict[str, FlowGraph], list[tuple[str, str]],
                                     dict[str, frozenset[str]]]:
    """(graphs, sync pairs, methods) of a flow shape, traced over placeholder modules
    (calls ``flowrl.init`` for their config sections)."""
    import flowrl
    from flowrl.cli import PPO_ROLES, ppo_engine_from_config

    if flow == "ppo":
        engine = ppo_engine_from_config({"models": {n: {} for n in PPO_ROLES}})
        methods = {n: frozenset({"forward_step"} | ({"train_step"} if n.startswith("ppo_")
                                                    else set())) for n in PPO_ROLES}
        return engine.graphs, engine.sync_pairs, methods
    if flow != "grpo":
        raise ValueError(f"unknown flow {flow!r}; expected one of {FLOWS}")
    names = ("policy", "reference", "reward", "grpo_policy")
    flowrl.init({"models": {n: {} for n in names}})
    Placeholder, Trainer = _placeholder_classes()
    policy, reference, reward = (Placeholder(n) for n in names[:3])
    grpo_policy = Trainer("grpo_policy")

    @flowrl.flow(name="rollout")
    def rollout(batch):
        out = policy.forward_step(batch)  # n samples per prompt (num_inference_per_prompt)
        ref = reference.forward_step(out)
        rew = reward.forward_step(out)  # rule-based: exact match, no reward model
        return out, ref, rew

    @flowrl.flow(name="train")
    def train(batch):
        grpo_policy.train_step(batch)

    graphs = {"rollout": rollout.trace(), "train": train.trace()}
    methods = {n: frozenset({"forward_step"} | ({"train_step"} if n == "grpo_policy" else set()))
               for n in names}
    return graphs, [("grpo_policy", "policy")], methods


def model_sections(flow: str, policy_b: float, critic_b: float,
                   cluster: ClusterSpec) -> dict[str, ModelConfig]:
    if flow == "ppo":
        return {"policy": model_section(policy_b, cluster, generates=True),
                "reference": model_section(policy_b, cluster),
                "reward": model_section(critic_b, cluster),
                "value": model_section(critic_b, cluster),
                "ppo_policy": model_section(policy_b, cluster),
                "ppo_value": model_section(critic_b, cluster)}
    return {"policy": model_section(policy_b, cluster, generates=True),
            "reference": model_section(policy_b, cluster),
            "reward": model_section(0, cluster, rule=True),
            "grpo_policy": model_section(policy_b, cluster)}


# ---- running the cases ----------------------------------------------------------------------
@dataclass
class Result:
    flow: str
    policy_b: float
    critic_b: float | None  # None: the flow has no critic (GRPO)
    cluster: str
    strategy: str
    tp: int
    pp: int
    critic_tp: int | None
    ok: bool
    iteration_s: float = math.nan  # seconds per episode: the steady state when pipelined
    sync_iteration_s: float = math.nan  # the same episode run synchronously
    family: str = ""  # colocated | disaggregated | hybrid | custom
    split: str = ""  # rollout:train devices, or "shared N"
    staleness: int = 0  # what the plan needs
    layouts: str = ""  # per model TPxPPxDP
    peak_gb: float = math.nan  # largest per-device peak after offload
    capacity_gb: float = math.nan
    offload_gb: float = 0.0  # offload + onload traffic per iteration
    streamed: bool = False  # optimizer state streamed through a train step
    compile_s: float = 0.0
    placement: str = ""
    reason: str = ""
    best: bool = field(default=False)

    @property
    def sizes(self) -> str:
        return f"{self.policy_b:g}B/{self.critic_b:g}B" if self.critic_b else \
            f"{self.policy_b:g}B/-"

    @property
    def case(self) -> tuple:
        return (self.flow, self.policy_b, self.critic_b, self.cluster)


def describe_placement(s: Schedule) -> str:
    """``policy 0-7 tp8 dp1; ...`` (devices, tensor/pipeline/data parallel sizes)."""
    from flowrl.report.text import fmt_devices

    parts = []
    for m, mesh in s.placement.items():
        pp = f"pp{mesh.pp}" if mesh.pp > 1 else ""
        parts.append(f"{m} {fmt_devices(mesh.devices)} tp{mesh.tp}{pp} dp{mesh.dp}")
    return "; ".join(parts)


def short_reason(err: Exception) -> str:
    """The compiler's message, trimmed to its first sentence-ish clause."""
    text = str(err).replace("\n", " ")
    for cut in ("; resident models", ". Models ", ". The op alone"):
        if cut in text:
            text = text[:text.index(cut)]
    return text[:240]


def run_case(flow: str, graphs, sync, methods, policy_b: float, critic_b: float,
             cluster_name: str, strategy: str, seed: int = 0) -> Result:
    cluster = parse_cluster(cluster_name)
    models = model_sections(flow, policy_b, critic_b, cluster)
    tp, pp = parallel_sizes(policy_b, cluster)
    critic_tp = parallel_sizes(critic_b, cluster)[0] if flow == "ppo" else None
    res = Result(flow, policy_b, critic_b if flow == "ppo" else None, cluster_name, strategy,
                 tp, pp, critic_tp, ok=False,
                 capacity_gb=cluster.capacity_bytes / 1e9)
    t0 = time.perf_counter()
    try:
        s = compile_schedule(graphs, models, sync, cluster, strategy, methods, seed,
                             runtime_args=runtime_args(flow))
    except CompileError as e:  # includes OutOfMemoryAtCompileError
        res.compile_s = time.perf_counter() - t0
        res.reason = short_reason(e)
        return res
    res.compile_s = time.perf_counter() - t0
    res.ok = True
    res.sync_iteration_s = s.estimates.iteration_time
    res.iteration_s = s.pipeline.steady_state_time if s.pipeline else res.sync_iteration_s
    res.family, res.split, res.staleness = s.layout.family, s.layout.split, s.layout.staleness
    res.layouts = " ".join(f"{m.model}:{m.describe()}" for m in s.layout.models)
    res.peak_gb = max(s.memory.peak_after) / 1e9
    res.offload_gb = s.estimates.transfer_bytes / 1e9
    res.streamed = any(op.streamed for ops in s.ops.values() for op in ops)
    res.placement = describe_placement(s)
    return res


def mark_best(results: list[Result]) -> None:
    """Per case, the fastest feasible strategy (ties go to the simpler one, in
    :data:`STRATEGIES` order)."""
    by_case: dict[tuple, list[Result]] = {}
    for r in results:
        by_case.setdefault(r.case, []).append(r)
    for rs in by_case.values():
        ok = [r for r in rs if r.ok]
        if ok:
            best = min(ok, key=lambda r: (round(r.iteration_s, 9), STRATEGIES.index(r.strategy)))
            best.best = True


def run(flows=FLOWS, sizes=SIZES, clusters=CLUSTERS, strategies=STRATEGIES, seed: int = 0,
        progress: bool = False) -> list[Result]:
    results = []
    for flow in flows:
        graphs, sync, methods = traced_flows(flow)
        for policy_b, critic_b in sizes:
            for cluster in clusters:
                for strategy in strategies:
                    r = run_case(flow, graphs, sync, methods, policy_b, critic_b, cluster,
                                 strategy, seed)
                    results.append(r)
                    if progress:
                        print(f"  {flow} {r.sizes} {cluster} {strategy}: "
                              f"{'%.1f s' % r.iteration_s if r.ok else 'does not fit'}",
                              file=sys.stderr)
    mark_best(results)
    return results


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
