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

from flowrl.errors import FlowRLError

from flowrl.ir import CallNode
from flowrl.runtime.data import Batch, merge_outputs


class Skipped(str):
    """Stands in for the output of a batch that ``on_nonfinite: skip_batch`` dropped (the
    reason, "model.method key 'k'"): calls already submitted downstream pass it on unrun."""


def concat_shards(shards: list[Any]) -> Any:
    """Gather data-parallel shards back in order (dicts row-wise, micro-batch lists joined)."""
    if len(shards) == 1:
        return shards[0]
    dropped = next((s for s in shards if isinstance(s, Skipped)), None)
    if dropped is not None:  # one replica's shard was dropped: the whole batch is
        return dropped
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
        from ray import cloudpickle

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
        from flowrl.runtime.executor import SetupError

        for name, m in self.modules.items():
            try:
                m.ensure_setup()
            except FlowRLError:
                raise
            except Exception as e:  # name the module, as the local runtime does
                raise SetupError(f"setup() of model '{name}' ({type(m).__name__}) failed: "
                                 f"{type(e).__name__}: {e}") from e
        if master is not None and self.world > 1:
            dist.init_process_group("gloo", init_method=f"tcp://{master}", rank=self.rank,
                                    world_size=self.world)
            for name, m in self.modules.items():
                if self.dp[name] > 1 and m.trainable:
                    group = dist.new_group(list(range(self.dp[name])))
                    self.averagers[name] = enable_data_parallel(m, group, bucket_bytes)

    def rendezvous(self) -> str:
        """``ip:port`` on this worker's node where a process group can meet (rank 0 calls)."""
        import socket

        import ray

        with socket.socket() as sock:
            sock.bind(("", 0))
            return f"{ray.util.get_node_ip_address()}:{sock.getsockname()[1]}"

    def node_id(self) -> str:
        """The Ray node this worker runs on (to name the models a lost node took with it)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def call(self, call: CallNode, episode: int, iteration: int,
             inputs: list[tuple[str, list]]) -> tuple[Any, dict]:
        """Run one call on this replica's shard of its inputs; errors carry the same details
        as the local runtime's (``episode`` is 1-based)."""
        import ray

        from flowrl.models.base import nonfinite_policy
        from flowrl.runtime.executor import call_failure, call_metrics, call_seed, check_output
        from flowrl.runtime.guards import SKIPPED_METRIC, NonFiniteError, check_call_output

        t0 = time.time()
        meta = {"metrics": [], "start": t0, "pid": os.getpid(), "rank": self.rank}
        parts = [(label, concat_shards(ray.get(refs))) for label, refs in inputs]
        dropped = next((v for _, v in parts if isinstance(v, Skipped)), None)
        if dropped is not None:
            return dropped, {**meta, "end": time.time()}
        data = parts[0][1] if len(parts) == 1 else merge_outputs(
            parts, f"the inputs of {call.id} at {call.source}")
        data = take_shard(data, self.rank, self.dp[call.model])
        module = self.modules[call.model]
        torch.manual_seed(call_seed(self.seed, call.id, iteration))
        if call.model in self.averagers and call.is_train:
            self.averagers[call.model].reset(len(data))
        try:
            out = getattr(module, call.method)(data, iteration)
        except NonFiniteError as e:  # found inside the module: add the call site
            raise e.located(call.method, episode, iteration) from None
        except FlowRLError:
            raise
        except Exception as e:  # keep the real cause, add where it happened
            raise call_failure(call, module, episode, iteration, data, e) from e
        out = check_output(call.id, out, call.is_train,
                           sorted(call.outputs) if call.outputs is not None else None)
        logged = module.drain_logged()
        bad = check_call_output(call.model, call.method, out, call.is_train, nonfinite_policy(),
                                episode, iteration)
        if bad is not None:  # skip_batch: count it, keep NaN out of metrics and buffer
            meta["metrics"].append((f"{call.model}/{SKIPPED_METRIC}", 1.0, "sum"))
            if not call.is_train:
                return Skipped(f"{call.id} key '{bad}'"), {**meta, "end": time.time()}
            out = {k: v for k, v in out.items() if k != bad}
        meta["metrics"] += call_metrics(call.model, logged, out, call.is_train)
        return out, {**meta, "end": time.time()}

    def build_dataset(self, model: str, prompts: list, is_eval: bool) -> Any:
        return self.modules[model].build_dataset(prompts, is_eval)

    def offload(self, model: str, what: tuple[str, ...]) -> int:
        return self.modules[model].offload(what)

    def onload(self, model: str, what: tuple[str, ...]) -> int:
        return self.modules[model].onload(what)

    def sync_signature(self, model: str) -> dict[str, tuple[tuple[int, ...], str]] | None:
        """Names, shapes and dtypes a sync reads or writes (``None`` while offloaded)."""
        module = self.modules[model]
        if module.offloaded_state:
            return None
        return {n: (tuple(t.shape), str(t.dtype))
                for n, t in module.named_sync_tensors().items()}

    def sync_plan(self, model: str, bucket_bytes: int, dst: str):
        from flowrl.runtime.buckets import plan_buckets
        from flowrl.runtime.guards import check_weights

        tensors = self.modules[model].named_sync_tensors()
        check_weights(model, tensors, f"sync to '{dst}'")  # never spread NaN to inference
        return plan_buckets(tensors, bucket_bytes)

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
