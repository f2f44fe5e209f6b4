"""Staleness and learning: ppo_tiny and grpo_tiny at runtime_args.max_staleness = 0, 1, 2.

    python benchmarks/async_learning.py                 # the table in benchmarks/RESULTS.md
    python benchmarks/async_learning.py --ppo-episodes 10 --grpo-episodes 10 --ks 0 1
    python benchmarks/async_learning.py --only ppo_tiny --corrections tis decoupled none

Each run is the example's own config (examples/ppo_tiny.yaml, examples/grpo_tiny.yaml), with
only ``max_staleness`` changed (and nothing written to disk, no eval); all runs of one
algorithm have the same episodes and seed; k >= 1 runs once per ``--corrections`` entry
(``runtime_args.off_policy.correction``; default: the config's). Final reward = mean of the
per-episode rollout reward (``reward/reward`` for PPO, ``reward/accuracy`` for GRPO) over the
last 5 episodes; the target is k = 1, 2 reaching >= 90% of the k = 0 run's. Prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

import flowrl  # noqa: E402

#: the per-episode rollout reward each example reports
REWARD = {"ppo_tiny": "reward/reward", "grpo_tiny": "reward/accuracy"}


def example_config(name: str, episodes: int | None, k: int, correction: str | None) -> dict:
    """The example's YAML with ``max_staleness`` (and ``num_episode``, when given) set,
    writing nothing."""
    cfg = yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())
    args = cfg["runtime_args"]
    args.update(num_episode=episodes or args["num_episode"], max_staleness=k, output_dir=None,
                new_run_dir=False, progress=False, eval_episode_interval=0,
                enable_eval_before_training=False)
    if correction:
        args["off_policy"] = {"correction": correction}
    return copy.deepcopy(cfg)


def build(name: str, cfg: dict) -> flowrl.Engine:
    if name == "grpo_tiny":
        import grpo_tiny

        return grpo_tiny.build(cfg, with_evaluator=False)
    import ppo_tiny
    from tiny_ppo_models import (PolicyInference, PolicyReference, PolicyTrainer,
                                 RewardInference, ValueInference, ValueTrainer)

    flowrl.init(cfg)
    engine = flowrl.RLHFEngine(PolicyInference("policy"), PolicyReference("reference"),
                               RewardInference("reward"), ValueInference("value"),
                               PolicyTrainer("ppo_policy"), ValueTrainer("ppo_value"))
    engine.set_dataset(ppo_tiny.make_prompts(512))
    return engine


def run(name: str, episodes: int | None, k: int, correction: str | None = None) -> dict:
    """One run: final reward (last 5 episodes), its first-5 reward, staleness and time."""
    engine = build(name, example_config(name, episodes, k, correction))
    t0 = time.perf_counter()
    rows = engine.learn()
    seconds = time.perf_counter() - t0
    engine.shutdown()
    rewards = [r[REWARD[name]] for r in rows]
    correction = getattr(engine.config.runtime_args, "off_policy", None)
    return {"k": k, "episodes": len(rows), "first": sum(rewards[:5]) / len(rewards[:5]),
            "final": sum(rewards[-5:]) / len(rewards[-5:]),
            "staleness": max((r.get("staleness/mean", 0.0) for r in rows), default=0.0),
            "seconds": seconds,
            "correction": getattr(correction, "correction", "n/a") if k else "-"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ppo-episodes", type=int, default=None, help="default: the example's")
    p.add_argument("--grpo-episodes", type=int, default=None, help="default: the example's")
    p.add_argument("--ks", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--corrections", nargs="+", default=[None],
                   help="runtime_args.off_policy.correction values for the k >= 1 runs")
    p.add_argument("--only", choices=sorted(REWARD), help="run one example only")
    a = p.parse_args()
    torch.set_num_threads(1)  # the examples' setting: tiny models run fastest on one thread
    print("| run | episodes | k | correction | reward, first 5 | final reward (last 5) "
          "| vs k=0 | steady staleness | wall s |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, episodes in (("ppo_tiny", a.ppo_episodes), ("grpo_tiny", a.grpo_episodes)):
        if a.only and name != a.only:
            continue
        base = None
        for k, correction in [(k, c) for k in a.ks for c in (a.corrections if k else [None])]:
            r = run(name, episodes, k, correction)
            base = r["final"] if k == 0 else base
            ratio = f"{r['final'] / base:.0%}" if base else "-"
            print(f"| {name} | {r['episodes']} | {k} | {r['correction']} | {r['first']:.3f} | "
                  f"{r['final']:.3f} | {ratio} | {r['staleness']:.0f} | {r['seconds']:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
