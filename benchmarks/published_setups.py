"""What the planner says about published RL setups (docs/placement.md, "Checked against
published configurations").

    python benchmarks/published_setups.py

Each setup is a flow over placeholder modules (nothing runs, no weights are loaded), a model
shape from the model's public ``config.json`` figures, the cluster and batch of the
publication, and the publication's own placements: compiled with ``colocate`` (the
synchronous baseline), with the published rollout:train split (``manual`` devices,
``max_staleness = 1``) and with ``search``. Printed: estimated seconds per step of each, the
predicted speedups and the plan ``search`` chose. The published figures are in
docs/placement.md with their sources.

Response lengths: the publications give only the cap (``max_response_length``: 20 K and
28 K tokens), not the mean or the tail. The generator is vLLM (continuous batching, as
published); the script assumes the p99 response reaches the cap (DAPO's overlong buffer
penalises, it does not stop, responses near it) and sweeps the unpublished mean over
:data:`MEANS` (``--mean N`` for one value; ``--mean 0``: every response at the cap, the
old assumption).
"""

from __future__ import annotations

import sys
import argparse
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from placement import _placeholder_classes  # noqa: E402  (the placeholder modules)

from flowrl.compiler import compile_schedule, parse_cluster  # noqa: E402
from flowrl.config import ModelConfig, RuntimeArgs  # noqa: E402
from flowrl.ir import Schedule  # noqa: E402

#: Qwen2.5-(Math-)7B's config.json: 28 layers, hidden 3584, 28 heads / 4 KV heads, vocab
#: 152064; 7.6 B parameters.
QWEN7B = dict(num_params=7_615_616_512, num_layers=28, hidden_size=3584, vocab_size=152064,
              shape={"num_heads": 28, "num_kv_heads": 4})


@dataclass(frozen=True)
class Setup:
    name: str
    cluster: str
    rollout_devices: int  # the published split: rollout : the rest
    prompt_len: int
    response_len: int
    samples_per_step: int
    samples_per_optimizer_step: int
    generation_batch: int  # veRL's colocated rollout generates the whole step at once
    published_sync_s: float  # colocate sync step, seconds (the publication's table)
    published_async_s: float  # its asynchronous step
    mean_len: int = 0  # assumed mean response tokens (0: every response at the cap)


SETUPS = (
    # veRL one-step off-policy (docs/advance/one_step_off.md): 16 H20, 4 generate : 12 train,
    # Qwen2.5-Math-7B, DAPO, responses up to 20480 tokens (FSDP2).
    Setup("veRL one-step off-policy 7B", "2x8xH20-96GB", 4, 2048, 20480, 512 * 16, 32 * 16,
          512 * 16, 749, 520),
    # veRL fully async (docs/advance/fully_async.md): 128 H20, 64:64, rollout.n 16,
    # train_batch_size 512 prompts, ppo_mini_batch_size 32 prompts, responses up to 28 K.
    Setup("veRL fully async 7B, 128 GPUs", "16x8xH20-96GB", 64, 2048, 28672, 512 * 16,
          32 * 16, 512 * 16, 356.30, 150.63),
    Setup("veRL fully async 7B, 64 GPUs", "8x8xH20-96GB", 32, 2048, 28672, 512 * 16, 32 * 16,
          512 * 16, 365.28, 189.26),
)
#: Generation batch when every response runs to the cap (``--mean 0``).
CAP_GENERATION_BATCH = 128
#: Assumed mean response lengths (tokens) swept: not published (see the module docstring).
MEANS = (1024, 2048, 4096)


def dapo_flows():
    """DAPO: the policy samples, a rule scores, the trainer steps (no reference, no critic)."""
    import flowrl

    names = ("policy", "reward", "dapo_policy")
    flowrl.init({"models": {n: {} for n in names}})
    Placeholder, Trainer = _placeholder_classes()
    policy, reward, trainer = Placeholder("policy"), Placeholder("reward"), Trainer("dapo_policy")

    @flowrl.flow(name="rollout")
    def rollout(batch):
        out = policy.forward_step(batch)
        return out, reward.forward_step(out)

    @flowrl.flow(name="train")
    def train(batch):
        trainer.train_step(batch)

    graphs = {"rollout": rollout.trace(), "train": train.trace()}
    methods = {"policy": frozenset({"forward_step"}), "reward": frozenset({"forward_step"}),
               "dapo_policy": frozenset({"forward_step", "train_step"})}
    return graphs, [("dapo_policy", "policy")], methods


def models(setup: Setup, split: bool, n: int) -> dict[str, ModelConfig]:
    seq = setup.prompt_len + setup.response_len
    gen = dict(max_seq_len=seq, generation=dict(max_new_tokens=setup.response_len,
                                                batching="continuous"))
    if setup.mean_len:
        gen["generation"].update(expected_new_tokens=setup.mean_len,
                                 p99_new_tokens=setup.response_len)
    rollout = dict(devices=list(range(setup.rollout_devices))) if split else {}
    train = dict(devices=list(range(setup.rollout_devices, n))) if split else {}
    # TP4 as configured: 22-30 K-token sequences need it for the trainer's activations (the
    # publications shard sequences with FSDP2 + Ulysses; flowrl models tensor parallelism).
    tp = dict(tensor_model_parallel_size=4)
    return {"policy": ModelConfig(**QWEN7B, **gen, **rollout, **tp),
            "reward": ModelConfig(num_params=1, num_layers=1, hidden_size=1, vocab_size=1,
                                  **rollout),
            "dapo_policy": ModelConfig(**QWEN7B, **gen, **train, **tp)}


def args(setup: Setup, staleness: int) -> RuntimeArgs:
    # A whole step's batch at full length does not fit the KV cache: the old, tail-free
    # assumption (mean 0) keeps the old generation batches.
    gen_batch = setup.generation_batch if setup.mean_len else CAP_GENERATION_BATCH
    return RuntimeArgs(sample_per_episode=setup.samples_per_step,
                       generation_batch_size=gen_batch,
                       train_global_batch_size=setup.samples_per_optimizer_step,
                       train_micro_batch_size=1, progress=False, max_staleness=staleness)


def seconds(s: Schedule) -> float:
    return s.pipeline.steady_state_time if s.pipeline else s.estimates.iteration_time


def run(setup: Setup) -> dict[str, object]:
    graphs, sync, methods = dapo_flows()
    cluster = parse_cluster(setup.cluster)
    n = cluster.num_devices
    colo = compile_schedule(graphs, models(setup, False, n), sync, cluster, "colocate",
                            methods, runtime_args=args(setup, 0))
    split = compile_schedule(graphs, models(setup, True, n), sync, cluster, "manual", methods,
                             runtime_args=args(setup, 1))
    best = compile_schedule(graphs, models(setup, False, n), sync, cluster, "search", methods,
                            runtime_args=args(setup, 1))
    return {"setup": setup.name, "colocate_s": seconds(colo), "published_split_s": seconds(split),
            "search_s": seconds(best), "split": f"{setup.rollout_devices}:"
            f"{n - setup.rollout_devices}", "search_plan": best.layout}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mean", type=int, action="append",
                        help="assumed mean response tokens (repeatable; 0: all at the cap)")
    means = parser.parse_args().mean or MEANS
    for setup in SETUPS:
        print(f"{setup.name} on {setup.cluster}: published {setup.published_sync_s:.0f} -> "
              f"{setup.published_async_s:.0f} s/step "
              f"({setup.published_sync_s / setup.published_async_s:.2f}x)")
        for mean in means:
            r = run(replace(setup, mean_len=mean))
            lay = r["search_plan"]
            print(f"  mean {mean or setup.response_len} tokens: colocate "
                  f"{r['colocate_s']:.0f} s/step; published split {r['split']} async "
                  f"{r['published_split_s']:.0f} s/step "
                  f"({r['colocate_s'] / r['published_split_s']:.2f}x); search "
                  f"{r['search_s']:.0f} s/step ({r['colocate_s'] / r['search_s']:.2f}x): "
                  f"{lay.family} {lay.split} staleness {lay.staleness}, "
                  + ", ".join(f"{m.model} {m.describe()}" for m in lay.models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
