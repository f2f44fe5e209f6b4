"""Runtime overhead: the tiny PPO example on the local runtime, on Ray, and as a hand-written
loop over the same module code (no tracing, no executor, no replay buffer), in one run.

    python benchmarks/runtime_overhead.py [--episodes 6] [--no-ray]

The hand-written loop calls the example's modules directly with dicts merged by hand, so the
difference in time is what flowrl's runtime adds (tracing is done once, before timing).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import flowrl  # noqa: E402
from flowrl.runtime.executor import call_seed  # noqa: E402
from ppo_tiny import make_prompts  # noqa: E402
from tiny_ppo_models import (PolicyInference, PolicyReference, PolicyTrainer,  # noqa: E402
                             RewardInference, ValueInference, ValueTrainer)

CONFIG = {
    "runtime_args": {"num_episode": 1, "sample_per_episode": 64, "generation_batch_size": 32,
                     "train_global_batch_size": 32, "train_micro_batch_size": 16,
                     "num_training_epoch": 1, "seed": 1, "progress": False},
    "models": {"policy": {"generation": {"max_new_tokens": 16}, "args": {"max_prompt_len": 8}},
               "reference": {}, "reward": {"args": {"kl_coef": 0.02}}, "value": {},
               "ppo_policy": {"optim": {"lr": 0.002}}, "ppo_value": {"optim": {"lr": 0.002}}},
}


def modules(cfg: dict):
    flowrl.init(cfg)
    return [PolicyInference("policy"), PolicyReference("reference"), RewardInference("reward"),
            ValueInference("value"), PolicyTrainer("ppo_policy"), ValueTrainer("ppo_value")]


def flowrl_runner(runtime: str):
    """One engine; each call of the returned function runs (and times) one more episode."""
    cfg = copy.deepcopy(CONFIG)
    cfg["runtime"] = runtime
    engine = flowrl.RLHFEngine(*modules(cfg))
    engine.set_dataset(make_prompts(512))
    engine.learn(num_episode=1)  # warm-up: process start, setup, first-call costs
    done = [1]

    def episode() -> float:
        done[0] += 1
        t0 = time.perf_counter()
        engine.learn(num_episode=done[0])
        return time.perf_counter() - t0

    return episode, engine.shutdown


def handwritten_runner():
    """The same PPO episode as plain Python over the modules."""
    policy, reference, reward, value, ppo_policy, ppo_value = modules(copy.deepcopy(CONFIG))
    for m in (policy, reference, reward, value, ppo_policy, ppo_value):
        m.bind(flowrl.get_args()).setup()  # no engine here to bind them
    a = flowrl.get_args().runtime_args
    data = policy.build_dataset(make_prompts(512))
    loader = torch.utils.data.DataLoader(data, batch_size=a.generation_batch_size, shuffle=True,
                                         collate_fn=data.collate_fn, drop_last=True)
    state = {"it": iter(loader)}

    def episode() -> float:
        t0 = time.perf_counter()
        samples = []
        for i in range(a.sample_per_episode // a.generation_batch_size):
            try:
                batch = next(state["it"])
            except StopIteration:
                state["it"] = iter(loader)
                batch = next(state["it"])
            torch.manual_seed(call_seed(a.seed, "policy.forward_step", i))
            out = policy.forward_step(batch)
            ref = reference.forward_step(out)
            val = value.forward_step(out)
            rew = reward.forward_step({**out, **ref, **val})
            samples.append({**out, **ref, **val, **rew})
        full = {k: torch.cat([s[k] for s in samples]) for k in samples[0]}
        perm = torch.randperm(a.sample_per_episode)
        for g in range(0, a.sample_per_episode, a.train_global_batch_size):
            idx = perm[g:g + a.train_global_batch_size]
            micro = [{k: v[idx[m:m + a.train_micro_batch_size]] for k, v in full.items()}
                     for m in range(0, len(idx), a.train_micro_batch_size)]
            ppo_policy.train_step(micro, g)
            ppo_value.train_step(micro, g)
        with torch.no_grad():
            for dst, src in ((policy, ppo_policy), (value, ppo_value)):
                for p, q in zip(dst.model.parameters(), src.model.parameters()):
                    p.copy_(q)
        return time.perf_counter() - t0

    episode()  # warm-up
    return episode, lambda: None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (Ray workers use the same); tiny models are fastest on 1")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runners = {"hand-written loop": handwritten_runner(), "flowrl local": flowrl_runner("local")}
    if not args.no_ray:
        runners["flowrl ray"] = flowrl_runner("ray")
    # Interleave the runners episode by episode so background load hits all of them alike.
    results: dict[str, list[float]] = {name: [] for name in runners}
    try:
        for _ in range(args.episodes):
            for name, (episode, _) in runners.items():
                results[name].append(episode())
    finally:
        for _, shutdown in runners.values():
            shutdown()
    base = statistics.median(results["hand-written loop"])
    print(f"tiny PPO, {CONFIG['runtime_args']['sample_per_episode']} samples/episode, "
          f"{args.episodes} timed episodes each, torch threads={torch.get_num_threads()}")
    print(f"{'runner':<20}{'median s/episode':>18}{'min':>10}{'vs hand-written':>18}")
    for name, ts in results.items():
        med = statistics.median(ts)
        print(f"{name:<20}{med:>18.3f}{min(ts):>10.3f}{med / base:>17.2f}x")
    if "flowrl ray" in results:
        over = statistics.median(results["flowrl ray"]) - statistics.median(results["flowrl local"])
        print(f"ray overhead per episode vs local: {over * 1000:+.0f} ms")


if __name__ == "__main__":
    main()
