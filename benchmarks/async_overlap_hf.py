"""GRPO on a tiny Hugging Face Llama (random init, written locally): the local runtime's
synchronous loop vs Ray with ``max_staleness: 1`` on two virtual devices (rollout models on
one, the trainer on the other). Used by ``benchmarks/async_overlap.py --hf``.

An episode: 64 samples (16 prompts x 4, two rollout batches of 32), two optimizer steps of
32. The policy generates with HF ``generate`` (16 new tokens); the reward
is the fraction of vowels in the decoded response, normalised per group; the trainer runs
GRPO's clipped loss with a KL term on plain torch. Nothing is downloaded.
"""

from __future__ import annotations

import copy
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import flowrl  # noqa: E402
from flowrl import BaseModule, outputs  # noqa: E402
from flowrl.engines.grpo import GRPOEngine, group_advantages, grpo_loss  # noqa: E402
from flowrl.models.args import ModuleArgs  # noqa: E402
from flowrl.models.hf import HFArgs, load_tokenizer, save_tiny_llama  # noqa: E402
from hf_ppo_models import (VOWELS, HFPolicy, PPOArgs, Reference, _HFTrainer,  # noqa: E402
                           full_sequence)


class _Threads:
    """Sets torch's thread count in the process that sets the module up (``threads``, 0:
    leave it). Two Ray workers sharing two cores with two threads each oversubscribe them,
    and OpenMP's spinning threads then slow both many times over: one thread per device."""

    threads: int = 0

    def setup(self):
        if self.threads:
            torch.set_num_threads(self.threads)
        super().setup()


class Policy(_Threads, HFPolicy):
    pass


class Ref(_Threads, Reference):
    pass


class VowelReward(BaseModule):
    """Score: the fraction of vowels in the response; advantages normalised per group."""

    class Args(ModuleArgs):
        tokenizer_path: str

    def setup(self):
        self.tokenizer = load_tokenizer(self.typed_args.tokenizer_path)

    @outputs("score", "advantages")
    def forward_step(self, data, iteration=0):
        mask = data["response_mask"]
        scores = []
        for row, m in zip(data["response"].tolist(), mask.tolist()):
            text = self.tokenizer.decode([t for t, k in zip(row, m) if k],
                                         skip_special_tokens=True)
            scores.append(sum(c in VOWELS for c in text) / mask.shape[1])
        score = torch.tensor(scores)
        self.log("reward", score.mean().item())
        n = self.runtime_args.num_inference_per_prompt
        return {"score": score, "advantages": group_advantages(score, n)}


class GRPOTrainer(_Threads, _HFTrainer):
    """GRPO's loss on the HF model (no off-policy correction: a throughput benchmark)."""

    class Args(PPOArgs, HFArgs):
        kl_coef: float = 0.04

    def train_step(self, data, iteration):
        def loss_fn(model, mb):
            tokens, mask, p = full_sequence(mb)
            lp = self.token_logprobs(model, tokens, mask, p)
            return grpo_loss(lp, mb["logprobs"], mb["ref_logprobs"], mb["advantages"],
                             mb["response_mask"].float(), self.typed_args.clip_eps,
                             self.typed_args.kl_coef)

        return self.run_micro_batches(data, loss_fn)


def config(model_dir: str, out: str, episodes: int) -> dict:
    """Local synchronous config; :data:`VARIANTS` changes runtime, cluster and staleness."""
    model = {"model_path": model_dir, "dtype": "fp32"}
    return {
        "runtime": "local",
        "runtime_args": {"num_episode": episodes, "sample_per_episode": 64,
                         "generation_batch_size": 32, "num_inference_per_prompt": 4,
                         "train_global_batch_size": 32, "train_micro_batch_size": 16,
                         "seed": 1, "progress": False, "output_dir": out,
                         "new_run_dir": True, "off_policy": {"correction": "none"}},
        "models": {
            "policy": {**model, "shape": {"max_seq_len": 24}, "colocation_group": "rollout",
                       "generation": {"max_new_tokens": 16, "temperature": 1.0},
                       "args": {"max_prompt_len": 8}},
            "reference": {**model, "colocation_group": "rollout"},
            "reward": {"shape": {"num_params": 1, "num_layers": 1, "hidden_size": 1},
                       "colocation_group": "rollout", "args": {"tokenizer_path": model_dir}},
            "grpo_policy": {**model, "optim": {"lr": 0.001}},
        },
    }


#: name -> (runtime, cluster, strategy, max_staleness, torch threads per worker)
VARIANTS = {"local sync (k=0)": ("local", None, None, 0, 0),
            "Ray k=1 disaggregated": ("ray", "local:2", "disaggregate", 1, 1)}


def _prompts(n: int) -> list[str]:
    letters = "bcdfghjklmnpqrstvwxyz"
    return ["".join(letters[(i * 7 + j * 3) % len(letters)] for j in range(3 + i % 4))
            for i in range(n)]


def run(variant: str, base: dict) -> tuple[float, dict[str, float]]:
    """(steady-state seconds per episode, median seconds of rollout / train / sync)."""
    runtime, cluster, strategy, k, threads = VARIANTS[variant]
    cfg = copy.deepcopy(base)
    cfg["runtime"], cfg["runtime_args"]["max_staleness"] = runtime, k
    if cluster:
        cfg["cluster"] = cluster
    flowrl.init(cfg)
    modules = [Policy("policy"), Ref("reference"), VowelReward("reward"),
               GRPOTrainer("grpo_policy")]
    for m in modules:
        if isinstance(m, _Threads):
            m.threads = threads
    engine = GRPOEngine(*modules)
    if strategy:
        engine.schedule = engine.compile(strategy=strategy)
    engine.set_dataset(_prompts(256))
    try:
        rows = engine.learn()
    finally:
        engine.shutdown()
    parts = {r: statistics.median(x[f"time/{r}_s"] for x in rows[1:-1])
             for r in ("rollout", "train", "sync")}
    return statistics.median(x["time/episode_s"] for x in rows[1:-1]), parts


def benchmark(out: str, episodes: int, repeats: int) -> dict[str, float]:
    """Interleaved repeats of both variants; returns episodes/s (median) per variant."""
    model_dir = str(Path(out) / "tiny_llama")
    save_tiny_llama(model_dir, seed=0, initializer_range=0.02)
    base = config(model_dir, out, episodes)
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for rep in range(repeats):
        for variant in VARIANTS:
            s, parts = run(variant, base)
            seconds[variant].append(s)
            print(f"  GRPO-HF repeat {rep + 1} {variant:22s} {s:.3f} s/episode (median "
                  f"rollout {parts['rollout']:.3f} s, train {parts['train']:.3f} s, sync "
                  f"{parts['sync']:.4f} s)")
    return {v: 1 / statistics.median(x) for v, x in seconds.items()}
