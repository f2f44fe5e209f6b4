"""The Ray worker actor: hosts the modules of one worker group replica and only executes.

Inputs arrive as object references nested in lists, so the worker pulls them straight from
the object store (never through the driver) and can take its shard of a data-parallel batch.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch

from flowrl.runtime.data import Batch, merge_outputs


def concat_shards(shards: list[Any]) -> Any:
    """Gather data-parallel shards back in order (dicts row-wise, micro-batch lists joined)."""
    if len(shards) == 1:
        return shards[0]
    if isinstance(shards[0], list):
        return [mb for s in shards for mb in s]
    out: Batch = {}
    for k, v in shards[0].items():
        vals = [s[k] for s in shards]
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            out[k] = torch.cat(vals)
        elif isinstance(v, (list, tuple)):
            out[k] = [x for s in vals for x in s]
        else:
            out[k] = v
    return out


def take_shard(value: Any, rank: int, world: int) -> Any:
    """This replica's part of a batch: rows for dicts, every ``world``-th micro-batch for lists."""
    if world == 1:
        return value
    if isinstance(value, list):
        if len(value) % world:
            raise ValueError(f"{len(value)} micro-batches cannot be split over {world} "
                             f"data-parallel replicas")
        return value[rank::world]
    out: Batch = {}
    for k, v in value.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            out[k] = v.tensor_split(world)[rank]
        elif isinstance(v, (list, tuple)):
            n = len(v)
            lo, hi = rank * n // world, (rank + 1) * n // world
            out[k] = list(v[lo:hi])
        else:
            out[k] = v
    return out


class Worker:
    """One process of a worker group. Created by :class:`RayExecutor` as a Ray actor."""

    def __init__(self, config: dict, sys_path: list[str], blobs: dict[str, bytes], rank: int,
                 world: int, dp: dict[str, int], seed: int, threads: int) -> None:
        for p in reversed(sys_path):
            if p not in sys.path:
                sys.path.insert(0, p)
        import cloudpickle

        from flowrl import context

        torch.set_num_threads(threads)
        context.init(config)
        self.rank, self.world, self.dp, self.seed = rank, world, dp, seed
        self.modules = {}
        self.averagers = {}
        for name, blob in blobs.items():
            module = cloudpickle.loads(blob)
            context.register_module(module)
            self.modules[name] = module

    def pid(self) -> int:
        return os.getpid()

    def setup(self, master: str | None, bucket_bytes: int) -> None:
        import torch.distributed as dist

        from flowrl.runtime.collectives import enable_data_parallel

        for m in self.modules.values():
            m.ensure_setup()
        if master is not None and self.world > 1:
            dist.init_process_group("gloo", init_method=f"tcp://{master}", rank=self.rank,
                                    world_size=self.world)
            for name, m in self.modules.items():
                if self.dp[name] > 1 and m.trainable:
                    group = dist.new_group(list(range(self.dp[name])))
                    self.averagers[name] = enable_data_parallel(m, group, bucket_bytes)

    def call(self, node: str, model: str, method: str, iteration: int, is_train: bool,
             declared: list[str] | None, inputs: list[tuple[str, list]]) -> tuple[Any, dict]:
        import ray

        from flowrl.runtime.executor import call_metrics, call_seed, check_output

        t0 = time.time()
        parts = [(label, concat_shards(ray.get(refs))) for label, refs in inputs]
        data = parts[0][1] if len(parts) == 1 else merge_outputs(parts, f"the inputs of {node}")
        data = take_shard(data, self.rank, self.dp[model])
        module = self.modules[model]
        torch.manual_seed(call_seed(self.seed, node, iteration))
        if model in self.averagers and is_train:
            self.averagers[model].reset(len(data))
        out = getattr(module, method)(data, iteration)
        out = check_output(node, out, is_train, declared)
        meta = {"metrics": call_metrics(model, module.drain_logged(), out, is_train), "start": t0, "end": time.time(),
                "pid": os.getpid(), "rank": self.rank}
        return out, meta

    def build_dataset(self, model: str, prompts: list, is_eval: bool) -> Any:
        return self.modules[model].build_dataset(prompts, is_eval)

    def offload(self, model: str, what: tuple[str, ...]) -> int:
        return self.modules[model].offload(what)

    def onload(self, model: str, what: tuple[str, ...]) -> int:
        return self.modules[model].onload(what)

    def sync_signature(self, model: str) -> dict[str, tuple[tuple[int, ...], str]]:
        return {n: (tuple(t.shape), str(t.dtype))
                for n, t in self.modules[model].named_sync_tensors().items()}

    def sync_plan(self, model: str, bucket_bytes: int):
        from flowrl.runtime.buckets import plan_buckets

        return plan_buckets(self.modules[model].named_sync_tensors(), bucket_bytes)

    def export_bucket(self, model: str, plan, index: int) -> torch.Tensor:
        from flowrl.runtime.buckets import pack_bucket

        return pack_bucket(self.modules[model].named_sync_tensors(), plan.buckets[index])

    def import_buckets(self, model: str, plan, bucket_refs: list) -> tuple[int, float]:
        """Pull the source's buckets one at a time (bounded memory) and copy them in place."""
        import ray

        from flowrl.runtime.buckets import unpack_bucket

        t0 = time.time()
        targets = self.modules[model].named_sync_tensors()
        moved = 0
        for bucket, ref in zip(plan.buckets, bucket_refs):
            moved += unpack_bucket(ray.get(ref), bucket, targets)
        return moved, time.time() - t0

    def shutdown(self) -> None:
        for m in self.modules.values():
            m.shutdown()

    def state(self, model: str) -> dict:
        from flowrl.runtime.checkpoint import module_checkpoint_state

        return module_checkpoint_state(self.modules[model])

    def load_state(self, model: str, state: dict) -> None:
        from flowrl.runtime.checkpoint import load_module_checkpoint_state

        load_module_checkpoint_state(self.modules[model], state)
