"""Asynchronous overlap: synchronous colocated vs ``max_staleness: 1`` disaggregated, on Ray
with two virtual devices (``cluster: local:2``), in one run, next to the compiler's
prediction.

    python benchmarks/async_overlap.py [--episodes 10] [--repeats 3] [--target-s 0.25] [--hf]

The flow is one inference model ``gen`` and its trainer ``trainer`` (the same MLP, synced
after each episode). Both do real torch work of a fixed size, so their cost is deterministic:
``gen.forward_step`` runs ``gen_steps`` forward passes of the batch (like decoding),
``trainer.train_step`` ``train_steps`` forward+backward passes per micro-batch. Before timing,
the script measures one pass of each in this process and picks the step counts so that
rollout and train each take about ``--target-s`` seconds per episode.

* **synchronous colocated** (``strategy: colocate``, ``max_staleness: 0``): both models on
  device 0, one Ray worker process: rollout, train and sync take turns.
* **k = 1 disaggregated** (``strategy: disaggregate``, ``max_staleness: 1``): ``gen`` on
  device 0, ``trainer`` on device 1 (a worker process each, one torch thread each): the
  rollout of episode ``e + 1`` runs while episode ``e`` trains.

Ray maps each virtual device to one bundle of the custom resource ``flowrl_device`` (the
actors ask for no CPUs), so the two worker processes run on the machine's two cores. The
driver runs one torch thread (set by the calibration), so the runtime gives every worker one
(its share of the driver's threads, by devices), and starts Ray with worker niceness 0.
Throughput is episodes per second in the steady state: one over the median
``time/episode_s`` of the episodes after the first (pipeline fill) and before the last
(nothing left to roll out ahead). Runs alternate (sync, async, sync, async, ...).

Predictions: the colocated ``k = 0`` schedule's iteration time over the disaggregated
``k = 1`` schedule's pipelined steady state, both compiled with op times from
(:data:`SOURCES`): **analytic**, the cost model's rough CPU speeds; **sync-profile**
(profile-guided, :mod:`flowrl.compiler.profile`), the op times the median synchronous run
measured (``op_profile.jsonl``), i.e. what is known before trying ``k = 1``; **own-profile**,
each variant's median run's own op times (ops slow down when both devices work, e.g. when
the two cores are shared with other processes: this isolates the pipeline model from that).

``--hf``: also GRPO on a tiny Hugging Face Llama, local synchronous vs Ray ``k = 1``
disaggregated (:mod:`async_overlap_hf`; needs ``flowrl[hf]``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

import flowrl
from flowrl import Engine, TorchModule, flow
from flowrl.runtime.ray_cluster import DEVICE_RESOURCE, start_local

HIDDEN, BATCH, LAYERS = 256, 32, 4


class _Data(torch.utils.data.Dataset):
    collate_fn = None

    def __init__(self, prompts):
        self.xs = [torch.full((HIDDEN,), float(p)) for p in prompts]

    def __len__(self):
        return len(self.xs)

    def __getitem__(self, i):
        return {"x": self.xs[i]}


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    layers = []
    for _ in range(LAYERS):
        layers += [torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers)


class Gen(TorchModule):
    """Inference: ``gen_steps`` forward passes of the batch (a fixed amount of work)."""

    def setup(self):
        self.model = _mlp()

    def build_dataset(self, prompts, is_eval=False):
        return _Data(prompts)

    def forward_step(self, data, iteration=0):
        h = data["x"]
        with torch.no_grad():
            for _ in range(self.model_args["gen_steps"]):
                h = self.model(h)
        return {"x": data["x"], "h": h}


class Trainer(TorchModule):
    """Training: ``train_steps`` forward+backward passes per micro-batch, one SGD step."""

    def setup(self):
        self.model = _mlp()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4)

    def train_step(self, data, iteration):
        def loss_fn(mb):
            loss = 0.0
            for _ in range(self.model_args["train_steps"]):
                loss = loss + (self.model(mb["x"]) - mb["h"]).pow(2).mean()
            return loss, {}
        return self.train_micro_batches(data, loss_fn)


GEN, TRAINER = Gen("gen"), Trainer("trainer")


@flow
def rollout(batch):
    return GEN.forward_step(batch)


@flow
def train(batch):
    TRAINER.train_step(batch)


def config(episodes: int, gen_steps: int, train_steps: int, out: str) -> dict:
    """The shared config; the two variants differ in strategy and max_staleness only."""
    return {
        "runtime": "ray", "cluster": "local:2",
        "runtime_args": {"num_episode": episodes, "sample_per_episode": 2 * BATCH,
                         "generation_batch_size": BATCH, "train_global_batch_size": 2 * BATCH,
                         "train_micro_batch_size": BATCH, "seed": 1, "progress": False,
                         "output_dir": out, "new_run_dir": True},
        "models": {"gen": {"num_devices": 1, "shape": {"num_layers": LAYERS,
                                                        "hidden_size": HIDDEN,
                                                        "vocab_size": 1, "max_seq_len": 2},
                           "args": {"gen_steps": gen_steps}},
                   "trainer": {"num_devices": 1, "shape": {"num_layers": LAYERS,
                                                            "hidden_size": HIDDEN,
                                                            "vocab_size": 1, "max_seq_len": 2},
                               "args": {"train_steps": train_steps}}},
    }


VARIANTS = {"sync colocated (k=0)": ("colocate", 0), "k=1 disaggregated": ("disaggregate", 1)}


def calibrate(target_s: float) -> tuple[int, int]:
    """Step counts giving about ``target_s`` seconds of rollout and of train per episode,
    measured here with one torch thread (an episode: 2 rollout batches, 2 micro-batches).
    The driver keeps that one thread, so every Ray worker gets one too."""
    torch.set_num_threads(1)
    model, x = _mlp(), torch.randn(BATCH, HIDDEN)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def timed(fn, n=10, tries=5) -> float:  # min over tries: other processes share the cores
        fn()
        best = float("inf")
        for _ in range(tries):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - t0) / n)
        return best

    def fwd():
        with torch.no_grad():
            model(x)

    def fwd_bwd():
        opt.zero_grad()
        model(x).pow(2).mean().backward()

    per_episode = 2  # batches (or micro-batches) per episode
    return (max(1, round(target_s / per_episode / timed(fwd))),
            max(1, round(target_s / per_episode / timed(fwd_bwd))))


def rescale(steps: tuple[int, int], rows: list[dict], target_s: float) -> tuple[int, int]:
    """Step counts rescaled by what a calibration run measured (median rollout/train s)."""
    med = {r: statistics.median(x[f"time/{r}_s"] for x in rows[1:]) for r in ("rollout",
                                                                                "train")}
    return (max(1, round(steps[0] * target_s / med["rollout"])),
            max(1, round(steps[1] * target_s / med["train"])))


def run(variant: str, cfg: dict) -> tuple[float, Engine, list[dict]]:
    """One run of ``variant``: (steady-state seconds per episode, engine, metrics rows)."""
    strategy, k = VARIANTS[variant]
    cfg = copy.deepcopy(cfg)
    cfg["runtime_args"]["max_staleness"] = k
    flowrl.init(cfg)
    engine = Engine(rollout, train, sync={TRAINER: GEN})
    engine.schedule = engine.compile(strategy=strategy)
    engine.set_dataset([i / 100 for i in range(64)])
    try:
        rows = engine.learn()
    finally:
        engine.shutdown()
    steady = [r["time/episode_s"] for r in rows[1:-1]]
    return statistics.median(steady), engine, rows


#: How the predictions take their op times: the cost model, the synchronous run's measured
#: op times for both variants (known before trying k=1), or each variant's own.
SOURCES = ("analytic", "sync-profile", "own-profile")


def predicted(graphs: dict, run_dirs: dict[str, str], cfg: dict) -> dict[str, dict[str, float]]:
    """source -> variant -> predicted seconds per steady-state episode (see :data:`SOURCES`);
    ``run_dirs``: per variant, the run whose op profile is used (its median run)."""
    from flowrl.compiler import compile_schedule

    out: dict[str, dict[str, float]] = {src: {} for src in SOURCES}
    for variant, (strategy, k) in VARIANTS.items():
        c = copy.deepcopy(cfg)
        c["runtime_args"]["max_staleness"] = k
        conf = flowrl.load_config(c)
        models = {m: conf.model(m) for m in ("gen", "trainer")}
        analytic = compile_schedule(graphs, models, [("trainer", "gen")], "local:2", strategy,
                                    runtime_args=conf.runtime_args)
        sync_dir = run_dirs["sync colocated (k=0)"]
        for src, sched in (("analytic", analytic),
                           ("sync-profile", _guided(analytic, models, sync_dir, conf)),
                           ("own-profile", _guided(analytic, models, run_dirs[variant], conf))):
            out[src][variant] = (sched.pipeline.steady_state_time if sched.pipeline
                                 else sched.estimates.iteration_time)
    return out


def _guided(analytic, models, run_dir: str, conf):
    from flowrl.compiler.profile import load_profile, profile_guided

    return profile_guided(analytic, models, load_profile(run_dir),
                          runtime_args=conf.runtime_args).guided


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target-s", type=float, default=0.25,
                    help="seconds of rollout (and of train) per episode")
    ap.add_argument("--hf", action="store_true",
                    help="also GRPO on a tiny HF Llama: local sync vs Ray k=1 disaggregated")
    ap.add_argument("--skip-mlp", action="store_true", help="only the --hf comparison")
    args = ap.parse_args()
    out = tempfile.mkdtemp(prefix="flowrl_async_overlap_")
    # One local Ray node with the two virtual devices, shared by every run (the colocated
    # run alone would start one with a single device), started as flowrl starts its own.
    start_local({DEVICE_RESOURCE: 2})
    try:
        if not args.skip_mlp:
            _benchmark(args, out)
        if args.hf:
            _hf(args, out)
    finally:
        ray.shutdown()


def _hf(args: argparse.Namespace, out: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import async_overlap_hf

    print("\nGRPO on a tiny Hugging Face Llama")
    eps = async_overlap_hf.benchmark(out, args.episodes, args.repeats)
    for v, e in eps.items():
        print(f"  {v:22s} {e:.2f} episodes/s ({1 / e:.3f} s/episode)")
    local, ray_k1 = eps.values()
    print(f"speedup                 {ray_k1 / local:.2f}x")


def _benchmark(args: argparse.Namespace, out: str) -> None:
    steps = calibrate(args.target_s)
    # In-process timing is only a first guess: one short synchronous run measures the
    # workers themselves, and the step counts are fixed from then on.
    _, _, rows = run("sync colocated (k=0)", config(4, *steps, out))
    gen_steps, train_steps = rescale(steps, rows, args.target_s)
    cfg = config(args.episodes, gen_steps, train_steps, out)
    print(f"gen_steps={gen_steps} train_steps={train_steps} (about {args.target_s} s each per "
          f"episode); {args.episodes} episodes x {args.repeats} repeats, interleaved")
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    dirs: dict[str, list[str]] = {v: [] for v in VARIANTS}
    graphs = None
    for rep in range(args.repeats):
        for variant in VARIANTS:
            s, engine, rows = run(variant, cfg)
            seconds[variant].append(s)
            dirs[variant].append(engine.config.runtime_args.output_dir)
            graphs = engine.graphs
            parts = {r: statistics.median(x[f"time/{r}_s"] for x in rows[1:-1])
                     for r in ("rollout", "train", "sync")}
            print(f"  repeat {rep + 1} {variant:22s} {s:.3f} s/episode "
                  f"({1 / s:.2f} episodes/s; median rollout {parts['rollout']:.3f} s, "
                  f"train {parts['train']:.3f} s, sync {parts['sync']:.4f} s)")
    eps = {v: 1 / statistics.median(x) for v, x in seconds.items()}
    measured = eps["k=1 disaggregated"] / eps["sync colocated (k=0)"]
    median_run = {v: dirs[v][sorted(range(len(x)), key=x.__getitem__)[len(x) // 2]]
                  for v, x in seconds.items()}
    pred = predicted(graphs, median_run, cfg)
    print("\nvariant                 episodes/s (median of repeats)")
    for v, e in eps.items():
        print(f"  {v:22s} {e:.2f}")
    print(f"measured speedup        {measured:.2f}x")
    for src in SOURCES:
        t = pred[src]
        ratio = t["sync colocated (k=0)"] / t["k=1 disaggregated"]
        times = ", ".join(f"{v} {x:.3f} s" for v, x in t.items())
        print(f"predicted ({src:12s}) {ratio:.2f}x ({(ratio - measured) / measured:+.0%} vs "
              f"measured; {times})")

if __name__ == "__main__":
    main()
