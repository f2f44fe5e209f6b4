"""The cost-model section of ``gpu_check.py``: predicted vs measured time per op on one device.

A flowrl ``TinyGPT`` scaled past 100M parameters (d_model 1024, 8 layers, vocab 32000,
untied LM head: 167M) runs the four ops of a PPO iteration at fixed shapes:

* ``generate``: the policy samples ``new`` tokens for ``batch`` prompts (KV cache, bf16);
* ``forward``: a scoring call (``response_logprobs`` over prompt + response, bf16);
* ``train``: one optimizer step over ``train_batch`` samples in micro-batches (fp32 master
  weights, bf16 autocast, AdamW), the loss a policy-gradient surrogate on the log-probs;
* ``sync``: ``flowrl.runtime.sync.sync_parameters`` from the trainer into the policy.

Predictions are the compiler's own: ``flowrl.compiler.costmodel.call_time`` / ``sync_time``
(what the schedule pass uses for op durations) for the same shapes, once with the device's
spec-sheet cluster and once with a cluster of its measured ceilings (matmul rate, copy
bandwidth). Measured = median of the repeats after one warm-up, synchronised wall time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from flowrl.compiler.cluster import ClusterSpec
from flowrl.compiler.costmodel import call_time, sync_time
from flowrl.compiler.ir import Mesh
from flowrl.compiler.resources import ModelResources
from flowrl.config import RuntimeArgs
from flowrl.models.tiny_gpt import TinyGPT, TinyGPTConfig
from flowrl.runtime.sync import sync_parameters


@dataclass(frozen=True)
class CostSizes:
    d_model: int
    layers: int
    heads: int
    vocab: int
    batch: int  # generation / scoring batch
    prompt: int
    new: int
    train_batch: int
    micro: int
    repeats: int


GPU_SIZES = CostSizes(1024, 8, 16, 32000, 64, 128, 128, 64, 16, 5)
SMALL_SIZES = CostSizes(32, 1, 2, 256, 2, 4, 4, 2, 1, 1)


@dataclass
class _Synced:
    """What ``sync_parameters`` needs of a module: a name, its tensors, its offload state."""

    name: str
    model: torch.nn.Module
    offloaded_state: frozenset = frozenset()

    def named_sync_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.named_parameters())


def _timed(dev: torch.device, fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds per call after one warm-up (synchronised)."""
    fn()
    out = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        out.append(time.perf_counter() - t0)
    return out


def _resources(name: str, model: TinyGPT, s: CostSizes, dtype: str, trainable: bool) -> ModelResources:
    return ModelResources(
        name=name, num_params=sum(p.numel() for p in model.parameters()), num_layers=s.layers,
        hidden_size=s.d_model, vocab_size=s.vocab, dtype=dtype, trainable=trainable, tp=1, pp=1,
        pinned_devices=None, manual_devices=None, max_seq_len=s.prompt + s.new,
        max_new_tokens=s.new, colocation_group=None, offload="auto", generates=not trainable)


def predictions(policy: ModelResources, trainer: ModelResources, s: CostSizes,
                cluster: ClusterSpec) -> dict[str, float]:
    """The compiler's estimate of each op, in seconds, on one device of ``cluster``."""
    args = RuntimeArgs(generation_batch_size=s.batch, sample_per_episode=s.batch * s.train_batch,
                       train_global_batch_size=s.train_batch, train_micro_batch_size=s.micro)
    mesh = Mesh((0,))
    return {"generate": call_time("generate", policy, mesh, args, cluster),
            "forward": call_time("forward", policy, mesh, args, cluster),
            "train": call_time("train", trainer, mesh, args, cluster),
            "sync": sync_time(trainer, mesh, policy, mesh, cluster)}


def _ops(dev: torch.device, s: CostSizes, policy: TinyGPT, trainer: TinyGPT) -> dict[str, Callable]:
    """The four ops as closures over fixed random inputs."""
    gen = torch.Generator(device=dev).manual_seed(0)
    prompt = torch.randint(1, s.vocab, (s.batch, s.prompt), generator=gen, device=dev)
    ones = torch.ones_like(prompt)
    seqs = torch.randint(1, s.vocab, (s.batch, s.prompt + s.new), generator=gen, device=dev)
    seq_mask = torch.ones_like(seqs)
    adv = torch.randn(s.train_batch, s.new, generator=gen, device=dev)
    opt = torch.optim.AdamW(trainer.parameters(), lr=1e-5)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    def generate():  # eos_id -1 never appears: every call decodes all ``new`` tokens
        return policy.generate(prompt, ones, s.new, eos_id=-1, pad_id=0)

    @torch.no_grad()
    def forward():
        return policy.response_logprobs(seqs, seq_mask, s.prompt)

    def train():
        for i in range(0, s.train_batch, s.micro):
            rows = slice(i % s.batch, i % s.batch + s.micro)
            with amp:
                lp = trainer.response_logprobs(seqs[rows], seq_mask[rows], s.prompt)
            loss = -(lp * adv[i:i + s.micro]).mean() * (s.micro / s.train_batch)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)

    def sync():
        return sync_parameters(_Synced("trainer", trainer), _Synced("policy", policy))

    return {"generate": generate, "forward": forward, "train": train, "sync": sync}


def run(dev: torch.device, small: bool, clusters: dict[str, ClusterSpec], deadline) -> dict[str, Any]:
    """Build the models, predict and measure each op while the deadline allows."""
    s = SMALL_SIZES if small else GPU_SIZES
    if s.micro > s.batch:
        raise ValueError(f"micro-batch {s.micro} exceeds the batch {s.batch}")
    torch.manual_seed(0)
    cfg = TinyGPTConfig(vocab_size=s.vocab, d_model=s.d_model, n_layers=s.layers,
                        n_heads=s.heads, max_len=s.prompt + s.new)
    half = dev.type == "cuda"  # bf16 inference on a GPU; fp32 everywhere on a CPU
    policy = TinyGPT(cfg).to(dev, torch.bfloat16 if half else torch.float32).eval()
    trainer = TinyGPT(cfg).to(dev)  # fp32 master weights
    dtype = "bf16" if half else "fp32"
    res_p = _resources("policy", policy, s, dtype, False)
    res_t = _resources("trainer", trainer, s, dtype, True)
    preds = {k: predictions(res_p, res_t, s, c) for k, c in clusters.items()}
    rows = []
    for op, fn in _ops(dev, s, policy, trainer).items():
        row: dict[str, Any] = {"op": op, **{f"predicted_{k}_s": p[op] for k, p in preds.items()}}
        if deadline.allows(f"cost model: {op}", 5.0):
            times = _timed(dev, fn, s.repeats)
            row.update(measured_s=statistics.median(times), measured_all_s=times)
            for k in preds:
                row[f"ratio_{k}"] = row["measured_s"] / row[f"predicted_{k}_s"]
        rows.append(row)
    shapes = {"generate": f"{s.batch} x ({s.prompt} prompt + {s.new} new)",
              "forward": f"{s.batch} x {s.prompt + s.new} tokens",
              "train": f"{s.train_batch} x {s.prompt + s.new} tokens, micro {s.micro}",
              "sync": f"{res_p.num_params} params, fp32 -> {dtype}"}
    for row in rows:
        row["shape"] = shapes[row["op"]]
    return {"model": {"num_params": res_p.num_params, "d_model": s.d_model, "layers": s.layers,
                      "heads": s.heads, "vocab": s.vocab, "dtype": dtype},
            "clusters": {k: c.model_dump() for k, c in clusters.items()}, "ops": rows,
            "skipped_steps": deadline.skipped}
