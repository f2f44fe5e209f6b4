"""Is the cost model right? The tiny PPO example on this machine, several placements:
predicted vs measured iteration time, and whether the ordering of placements agrees.
Synchronous and asynchronous (``max_staleness: 1``, rollout and train on disjoint devices)
plans, per-model data-parallel sizes, and the plan ``search`` picks, on Ray with virtual
devices.

    python benchmarks/cost_model_check.py [--rounds 5] [--out runs/cost_model_check]
                                          [--placements NAME ...] [--d-model 64 --layers 2]

1. Calibrate the ``local`` device, before and after the rounds (the machine's load changes
   while they run; predictions use the mean): one virtual device is one CPU core (torch
   runs with one thread in every process) at the tiny model's own MLP matmul rate (the
   1024^3 matmul is reported beside it); its memory bandwidth a 256 MB copy (also used for
   "host" offload and device-to-device links: on a CPU they are memory copies); the cores'
   worth of throughput concurrent single-thread processes get (``host_cores``: the virtual
   devices share it where their ops overlap in the timeline); and, for Ray placements, the
   median round trip of an actor call carrying a generation batch (``call_overhead_us``:
   every op pays it once per worker it is sent to).
2. Compile the tiny PPO flows (``examples/tiny_ppo_models.py``; parameter counts from
   constructing the models) for each placement with the modules' declared parallelism (the
   tiny modules shard nothing, so ``search`` plans data parallelism only): its estimated
   iteration time is the prediction.
3. Run every placement on its runtime (local: one process, ops one after another; ray: one
   actor per worker group, so disjoint devices really run at once): one warm-up episode,
   then ``--rounds`` timed episodes, round-robin over the placements so background load hits
   all alike; measured = median ``time/episode_s``.
4. Profile-guided: recompile each placement with the op times measured in its own run
   (``flowrl.compiler.profile``), and with those of the first placement's run (a profile
   taken on one placement predicting another, as a user would do before a search).
5. Print predicted vs measured and the pairwise ordering agreement; write CSV and a plot.
   Predicted and measured are seconds per episode: for an asynchronous plan, the pipelined
   steady state (``max(R, T) + S``) and the median episode once the pipeline is full.
6. Re-plan: ``search`` over the measured placements' own profile-guided schedules picks the
   placement with the lowest profile-guided estimate: is it the measured winner?
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import flowrl  # noqa: E402
from flowrl.compiler import ClusterSpec, Schedule, compile_schedule  # noqa: E402
from flowrl.compiler.cluster import _system_ram_bytes  # noqa: E402
from flowrl.compiler.profile import load_profile, profile_guided  # noqa: E402
from flowrl.config import ModelConfig  # noqa: E402
from flowrl.errors import FlowRLError  # noqa: E402

ACTOR = ("policy", "reference", "ppo_policy")
CRITIC = ("value", "reward", "ppo_value")


# ---- calibration ----------------------------------------------------------------------------
def _best(fn, repeat: int = 7) -> float:
    fn()
    out = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


#: One timing process of :func:`parallel_cores`: model-shaped matmuls done in a window.
_MATMULS = """
import sys, time, torch
d, tokens = int(sys.argv[1]), int(sys.argv[2])
seconds, start = float(sys.argv[3]), float(sys.argv[4])
torch.set_num_threads(1)
x, w = torch.randn(tokens, d), torch.randn(d, 4 * d)
while time.time() < start:
    time.sleep(0.001)
n, end = 0, start + seconds
while time.time() < end:
    x @ w
    n += 1
print(n)
"""


def parallel_cores(d_model: int, tokens: int, seconds: float = 1.5) -> float:
    """Cores' worth of throughput concurrent single-thread processes get now: the matmuls
    ``C`` processes (``C``: the CPUs this process may use) complete in one window over those
    one process completes alone. Below ``C`` when other jobs load the machine."""
    import subprocess

    from flowrl.ir.cluster import host_cpu_count

    cores = host_cpu_count()
    counts = {}
    for k in (1, cores):
        start = time.time() + 3.0  # every process has imported torch by then
        procs = [subprocess.Popen([sys.executable, "-c", _MATMULS, str(d_model), str(tokens),
                                   str(seconds), str(start)], stdout=subprocess.PIPE, text=True)
                 for _ in range(k)]
        counts[k] = sum(int(p.communicate()[0].strip() or 0) for p in procs)
    return min(float(cores), counts[cores] / max(1, counts[1]))


def calibrate(d_model: int, tokens: int) -> dict[str, float]:
    """Single-thread FLOP/s (peak and at the model's MLP shape), memory bandwidth and the
    cores' worth of throughput concurrent processes get (:func:`parallel_cores`)."""
    torch.manual_seed(0)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    peak = 2 * 1024 ** 3 / _best(lambda: a @ b)
    x, w = torch.randn(tokens, d_model), torch.randn(d_model, 4 * d_model)
    shaped = 2 * tokens * d_model * 4 * d_model / _best(lambda: x @ w, 50)
    src = torch.ones(64 * 2 ** 20)  # 256 MB fp32
    dst = torch.empty_like(src)
    bw = 2 * src.numel() * 4 / _best(lambda: dst.copy_(src))
    return {"peak_gflops": peak / 1e9, "model_shape_gflops": shaped / 1e9,
            "bandwidth_gbps": bw / 1e9, "parallel_cores": parallel_cores(d_model, tokens)}


def ray_call_overhead_us(calls: int = 40) -> float:
    """Median microseconds of one Ray actor call round trip carrying a generation batch's
    worth of tensors (32 x 24 ids, mask and log-probs) with two returns, as the Ray
    runtime's ``execute`` calls do: the per-call dispatch cost on this machine now."""
    import ray

    @ray.remote(num_cpus=0)
    class Echo:
        def execute(self, batch):
            return batch, {"n": len(batch)}

    actor = Echo.remote()
    batch = {"ids": torch.zeros(32, 24, dtype=torch.long), "mask": torch.ones(32, 24),
             "logprobs": torch.zeros(32, 16)}
    times = []
    for i in range(calls + 5):
        t0 = time.perf_counter()
        ray.get(list(actor.execute.options(num_returns=2).remote(batch)))
        if i >= 5:  # warm-up calls
            times.append(time.perf_counter() - t0)
    ray.kill(actor)
    return statistics.median(times) * 1e6


def local_cluster(n: int, cal: dict[str, float], runtime: str = "local",
                  memory_gb: float | None = None) -> ClusterSpec:
    """``local:n`` with this machine's measured speeds: one core per virtual device at the
    model-shaped matmul rate, the virtual devices sharing ``parallel_cores`` cores'
    throughput where their ops overlap (the timeline slows them), and ``runtime``'s per-call
    dispatch cost (Ray: measured by :func:`ray_call_overhead_us`; local: the library's)."""
    rate = max(cal["peak_gflops"], cal["model_shape_gflops"])
    bw = cal["bandwidth_gbps"]
    mem = memory_gb if memory_gb is not None else _system_ram_bytes() / 1e9 / n
    return ClusterSpec(name=f"local:{n} (calibrated)", num_nodes=1, devices_per_node=n,
                       device_type="cpu-core", device_memory_gb=mem, device_tflops=rate / 1e3,
                       flops_efficiency=cal["model_shape_gflops"] / rate,
                       memory_bandwidth_gbps=bw, intra_node_bandwidth_gbps=bw,
                       inter_node_bandwidth_gbps=bw, host_bandwidth_gbps=bw,
                       memory_utilization=1.0, host_cores=cal["parallel_cores"],
                       runtime=runtime, call_overhead_us=cal.get(f"{runtime}_call_us"))


# ---- the tiny PPO --------------------------------------------------------------------------
def tiny_config(d_model: int, layers: int, output_dir: str | None = None,
                runtime: str = "local") -> dict[str, Any]:
    """examples/ppo_tiny.yaml's settings, with the sizes the compiler needs."""
    from tiny_ppo_models import build_lm
    from flowrl.config import ModelConfig as _Cfg
    from flowrl.models.toy_tokenizer import ToyTokenizer

    vocab = ToyTokenizer().vocab_size
    prompt, new = 8, 16
    shape = {"num_layers": layers, "hidden_size": d_model, "vocab_size": vocab,
             "max_seq_len": prompt + new}
    built = _Cfg(shape=shape, dtype="fp32")
    lm = sum(p.numel() for p in build_lm("policy", built, 0).parameters())
    critic = sum(p.numel() for p in build_lm("value", built, 0, value_head=True).parameters())

    def sized(n: int, **typed: Any) -> dict[str, Any]:
        # the same typed fields size the planner's model and the module's network
        return {"dtype": "fp32", "shape": {**shape, "num_params": n}, **typed}

    seeded = {"init_seed": 0}
    models = {
        "policy": {**sized(lm, generation={"max_new_tokens": new, "temperature": 1.0}),
                   "args": {**seeded, "max_prompt_len": prompt}},
        "reference": {**sized(lm), "args": dict(seeded)},
        # rule-based score + GAE: no weights worth planning for
        "reward": {"num_params": 1, "num_layers": 1, "hidden_size": 1, "vocab_size": 1,
                   "dtype": "fp32", "args": {"kl_coef": 0.02, "gamma": 1.0, "lam": 0.95}},
        "value": {**sized(critic), "args": dict(seeded)},
        "ppo_policy": {**sized(lm, optim={"lr": 0.002}), "args": {**seeded, "clip_eps": 0.2}},
        "ppo_value": {**sized(critic, optim={"lr": 0.002}),
                      "args": {**seeded, "clip_eps": 0.2}},
    }
    return {"runtime": runtime,
            "runtime_args": {"num_episode": 1, "sample_per_episode": 64,
                             "generation_batch_size": 32, "train_global_batch_size": 32,
                             "train_micro_batch_size": 16, "num_training_epoch": 2, "seed": 1,
                             "progress": False, "output_dir": output_dir,
                             "tensorboard": False},
            "models": models}


#: Rollout-flow models on device 0, trainers on device 1 (the asynchronous split).
ROLLOUT_TRAIN = {"policy": [0], "reference": [0], "reward": [0], "value": [0],
                 "ppo_policy": [1], "ppo_value": [1]}
#: Per-model data parallelism: the policy and its trainer on both devices (dp2), the
#: scorers and the critic trainer on one each (dp1).
PER_MODEL_DP = {"policy": [0, 1], "ppo_policy": [0, 1], "reference": [0], "reward": [0],
                "value": [1], "ppo_value": [1]}


@dataclass
class Placement:
    name: str
    devices: int
    strategy: str  # colocate | disaggregate | search | manual
    runtime: str
    offload: bool = False  # shrink device memory until the compiler must offload
    manual: dict[str, list[int]] | None = None  # manual: devices per model (default actor|critic)
    staleness: int = 0  # runtime_args.max_staleness


PLACEMENTS = (
    Placement("colocate-1/local", 1, "colocate", "local"),
    Placement("colocate-1/local/offload", 1, "colocate", "local", offload=True),
    Placement("colocate-1/ray", 1, "colocate", "ray"),
    Placement("colocate-2/ray (dp2)", 2, "colocate", "ray"),
    Placement("actor|critic-2/ray", 2, "manual", "ray"),
    Placement("disaggregate-6/ray", 6, "disaggregate", "ray"),
    Placement("rollout|train-2/ray k=1", 2, "manual", "ray", manual=ROLLOUT_TRAIN,
              staleness=1),
    Placement("per-model dp-2/ray", 2, "manual", "ray", manual=PER_MODEL_DP),
    Placement("search-2/ray k=1", 2, "search", "ray", staleness=1),
)


def _models(cfg: dict[str, Any], placement: Placement) -> dict[str, ModelConfig]:
    out = {}
    for name, section in cfg["models"].items():
        section = dict(section)
        if placement.strategy == "manual" and placement.manual is not None:
            section["devices"] = placement.manual[name]
        elif placement.strategy == "manual":
            section["devices"] = [0] if name in ACTOR else [1]
        out[name] = ModelConfig(**section)
    return out


def capabilities(engine) -> dict[str, dict[str, bool]]:
    """The parallel dimensions each module class runs, as the engine passes them."""
    return {n: dict(getattr(type(m), "parallelism", {})) for n, m in engine.modules.items()}


def compile_for(engine, cfg: dict[str, Any], p: Placement, cal: dict[str, float],
                fixed: dict[str, Any] | None = None) -> Schedule:
    """The placement's schedule; ``fixed``: the meshes of an earlier compile to keep (the
    re-prediction with the whole run's calibration must time the plan that ran)."""
    models = _models(cfg, p)
    strategy = p.strategy
    if fixed is not None and p.strategy == "search":
        strategy = "manual"
        models = {m: c.model_copy(update={"devices": list(fixed[m].devices)})
                  for m, c in models.items()}
    args = engine.config.runtime_args

    def build(memory_gb=None) -> Schedule:
        return compile_schedule(engine.graphs, models, engine.sync_pairs,
                                local_cluster(p.devices, cal, p.runtime, memory_gb), strategy,
                                runtime_args=args, seed=args.seed,
                                capabilities=capabilities(engine))

    s = build()
    if not p.offload:
        return s
    need = max(s.memory.peak_before) / 1e9
    for frac in (0.5, 0.6, 0.7, 0.8, 0.9):  # the smallest memory that still compiles
        try:
            t = build(need * frac)
        except FlowRLError:
            continue
        if t.estimates.transfer_bytes > 0:
            return t
    raise RuntimeError("could not find a device memory that forces offload but fits")


@dataclass
class Run:
    placement: Placement
    engine: Any
    schedule: Schedule
    out_dir: Path
    warmup_s: float = 0.0
    episodes: list[float] = field(default_factory=list)
    guided_own: float = math.nan
    guided_first: float = math.nan

    final: Schedule | None = None  # the same plan with the whole run's calibration

    @property
    def predicted(self) -> float:
        return episode_seconds(self.final or self.schedule)

    @property
    def measured(self) -> float:
        return statistics.median(self.episodes) if self.episodes else math.nan


def episode_seconds(s: Schedule) -> float:
    """Estimated seconds per episode: the pipelined steady state when there is one."""
    return s.pipeline.steady_state_time if s.pipeline is not None else \
        s.estimates.iteration_time


def start(p: Placement, d_model: int, layers: int, out: Path, cal: dict[str, float]) -> Run:
    from ppo_tiny import make_prompts
    from tiny_ppo_models import (PolicyInference, PolicyReference, PolicyTrainer,
                                 RewardInference, ValueInference, ValueTrainer)

    run_dir = out / "".join(c if c.isalnum() or c in "-_" else "_" for c in p.name)
    cfg = tiny_config(d_model, layers, str(run_dir), p.runtime)
    cfg["runtime_args"]["max_staleness"] = p.staleness
    flowrl.init(cfg)
    engine = flowrl.RLHFEngine(PolicyInference("policy"), PolicyReference("reference"),
                               RewardInference("reward"), ValueInference("value"),
                               PolicyTrainer("ppo_policy"), ValueTrainer("ppo_value"))
    engine.set_dataset(make_prompts(512))
    engine.schedule = compile_for(engine, cfg, p, cal)
    run = Run(p, engine, engine.schedule, run_dir)
    t0 = time.perf_counter()
    engine.learn(num_episode=1)  # warm-up: process start, setup, first-call costs
    run.warmup_s = time.perf_counter() - t0
    return run


#: Measured placements closer than this (relative) are a tie: within this machine's noise.
NOISE = 0.10


def agreement(pred: list[float], meas: list[float]) -> dict[str, int]:
    """Pairs of placements: the order agrees, disagrees, the model predicts a tie (it cannot
    tell them apart, e.g. the same placement on two runtimes), or the measurements are within
    ``NOISE`` of each other (too close to call)."""
    out = {"agree": 0, "disagree": 0, "predicted tie": 0, "within noise": 0}
    for i in range(len(pred)):
        for j in range(i + 1, len(pred)):
            if abs(meas[i] - meas[j]) <= NOISE * min(meas[i], meas[j]):
                out["within noise"] += 1
            elif math.isclose(pred[i], pred[j], rel_tol=1e-3):
                out["predicted tie"] += 1
            elif (pred[i] < pred[j]) == (meas[i] < meas[j]):
                out["agree"] += 1
            else:
                out["disagree"] += 1
    return out


def fmt(s: float) -> str:
    if math.isnan(s):
        return "-"
    return f"{s:.3g} s" if s >= 1 else f"{s * 1e3:.3g} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="timed episodes per placement")
    ap.add_argument("--out", default="runs/cost_model_check")
    ap.add_argument("--placements", nargs="+", metavar="NAME",
                    help="subset of: " + ", ".join(p.name for p in PLACEMENTS))
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(1)  # one virtual device = one core (Ray workers inherit this)
    con = Console(width=200)
    chosen = [p for p in PLACEMENTS if not a.placements or p.name in a.placements]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    uses_ray = any(p.runtime == "ray" for p in chosen)
    if uses_ray:
        import ray

        if not ray.is_initialized():
            ray.init(address="local", num_cpus=2, include_dashboard=False,
                     resources={"flowrl_device": 2 * sum(p.devices for p in chosen)},
                     log_to_driver=False)

    def measure(when: str) -> dict[str, float]:
        c = calibrate(a.d_model, 32 * 24)
        if uses_ray:
            c["ray_call_us"] = ray_call_overhead_us()
        con.print(f"calibration ({when}, 1 thread): matmul 1024^3 {c['peak_gflops']:.1f} "
                  f"GFLOP/s, model-shaped [{32 * 24}x{a.d_model}]x[{a.d_model}x"
                  f"{4 * a.d_model}] {c['model_shape_gflops']:.1f} GFLOP/s, copy "
                  f"{c['bandwidth_gbps']:.1f} GB/s, {c['parallel_cores']:.2f} cores' worth "
                  f"in parallel, Ray call {c.get('ray_call_us', math.nan) / 1e3:.2f} ms, "
                  f"load average {os.getloadavg()[0]:.1f}", highlight=False)
        return c

    cal = measure("start")
    runs: list[Run] = []
    t_all = time.perf_counter()
    try:
        for p in chosen:
            runs.append(start(p, a.d_model, a.layers, out, cal))
            con.print(f"started {p.name}: predicted {fmt(runs[-1].predicted)}, warm-up "
                      f"episode {runs[-1].warmup_s:.1f} s", highlight=False)
        for r in range(a.rounds):
            for run in runs:
                # A pipelined plan refills its pipeline at each learn(): run 1 + k episodes
                # and keep the last, which overlaps the next rollout with its training.
                target = run.engine.runner.episode + 1 + run.placement.staleness
                h = run.engine.learn(num_episode=target)
                run.episodes.append(h[-1]["time/episode_s"])
            con.print(f"round {r + 1}/{a.rounds}: " + ", ".join(
                f"{run.placement.name} {run.episodes[-1]:.2f}s" for run in runs), highlight=False)
    finally:
        for run in runs:
            run.engine.shutdown()
    elapsed = time.perf_counter() - t_all
    # Predictions with the mean of the calibrations before and after the rounds (the load
    # changes while they run), for the plans that ran.
    start_cal, end_cal = cal, measure("end")
    cal = {k: (cal[k] + end_cal[k]) / 2 for k in cal}
    for run in runs:
        cfg = tiny_config(a.d_model, a.layers, runtime=run.placement.runtime)
        cfg["runtime_args"]["max_staleness"] = run.placement.staleness
        run.final = compile_for(run.engine, cfg, run.placement, cal, run.schedule.placement)

    # Profile-guided: each run's own profile, and the first run's profile for every placement.
    first = load_profile(runs[0].out_dir)
    for run in runs:
        cfg = tiny_config(a.d_model, a.layers)
        models = _models(cfg, run.placement)
        args = run.engine.config.runtime_args
        caps = capabilities(run.engine)
        own = profile_guided(run.schedule, models, load_profile(run.out_dir),
                             runtime_args=args, seed=args.seed, capabilities=caps)
        run.guided_own = episode_seconds(own.guided)
        from_first = profile_guided(run.schedule, models, first, runtime_args=args,
                                    seed=args.seed, capabilities=caps)
        run.guided_first = episode_seconds(from_first.guided)

    t = Table(title=f"tiny PPO (d_model {a.d_model}, {a.layers} layers), "
                    f"{a.rounds} timed episodes each", title_justify="left")
    for col in ("placement", "runtime", "predicted", "measured (median)", "meas/pred",
                "profile-guided (own)", f"profile-guided (from {runs[0].placement.name})",
                "offload traffic"):
        t.add_column(col, justify="left" if col in ("placement", "runtime") else "right")
    for run in runs:
        t.add_row(run.placement.name, run.placement.runtime, fmt(run.predicted),
                  fmt(run.measured), f"{run.measured / run.predicted:.3g}x",
                  fmt(run.guided_own), fmt(run.guided_first),
                  f"{run.schedule.estimates.transfer_bytes / 1e6:.3g} MB")
    con.print(t)
    meas = [r.measured for r in runs]
    lines = []
    for label, pred in (("analytic", [r.predicted for r in runs]),
                        ("profile-guided (own profile)", [r.guided_own for r in runs]),
                        (f"profile-guided (from {runs[0].placement.name})",
                         [r.guided_first for r in runs])):
        ag = agreement(pred, meas)
        best_p = runs[min(range(len(runs)), key=lambda i: pred[i])].placement.name
        best_m = runs[min(range(len(runs)), key=lambda i: meas[i])].placement.name
        called = ag["agree"] + ag["disagree"]
        share = f"{100 * ag['agree'] / called:.0f}%" if called else "-"
        lines.append(f"ordering, {label}: " + ", ".join(f"{k} {v}" for k, v in ag.items())
                     + f" (pairs; {share} of the pairs called agree); fastest predicted "
                       f"{best_p}, measured {best_m}")
    for line in lines:
        con.print(line, highlight=False)
    con.print(f"{len(runs)} placements x {a.rounds + 1} episodes in {elapsed:.0f} s",
              highlight=False)

    machine = {"platform": platform.platform(), "processor": platform.processor(),
               "torch": torch.__version__, "threads_per_device": 1, **cal,
               "calibrations": {"start": start_cal, "end": end_cal}}
    (out / "calibration.json").write_text(json.dumps(machine, indent=2))
    path = out / "cost_model_check.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("placement", "runtime", "devices", "strategy", "predicted_s", "measured_s",
                    "measured_episodes_s", "profile_guided_own_s", "profile_guided_first_s",
                    "offload_bytes", "warmup_s"))
        for run in runs:
            p = run.placement
            w.writerow((p.name, p.runtime, p.devices, p.strategy, f"{run.predicted:.6g}",
                        f"{run.measured:.6g}", " ".join(f"{e:.4g}" for e in run.episodes),
                        f"{run.guided_own:.6g}", f"{run.guided_first:.6g}",
                        run.schedule.estimates.transfer_bytes, f"{run.warmup_s:.3g}"))
    con.print(f"wrote {path}", highlight=False)
    if not a.no_plot:
        con.print(f"wrote {plot(runs, out / 'cost_model_check.png')}", highlight=False)
    return 0


def plot(runs: list[Run], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.9 * len(runs) + 2, 4.2))
    ax = fig.subplots()
    series = (("predicted (analytic)", [r.predicted for r in runs], "#4c72b0"),
              ("profile-guided (own)", [r.guided_own for r in runs], "#55a868"),
              ("measured (median)", [r.measured for r in runs], "#c44e52"))
    width = 0.8 / len(series)
    for k, (label, ys, color) in enumerate(series):
        xs = [i + (k - 1) * width for i in range(len(runs))]
        ax.bar(xs, ys, width, label=label, color=color)
        for x, r in zip(xs, runs):
            if label.startswith("measured") and r.episodes:
                ax.plot([x, x], [min(r.episodes), max(r.episodes)], color="black", lw=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(runs)), [r.placement.name for r in runs], fontsize=8, rotation=12)
    ax.set_ylabel("iteration (episode) time, s")
    ax.set_title("tiny PPO on this CPU: predicted vs measured (bars: min-max of episodes)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    sys.exit(main())
