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

from flowrl.ir import CallNode, Op
from flowrl.ir.interpreter import OpInterpreter
from flowrl.runtime.batch import concat_shards as batch_concat_shards
from flowrl.runtime.batch import take_shard


class Skipped(str):
    """Stands in for the output of a batch that ``on_nonfinite: skip_batch`` dropped (the
    reason, "model.method key 'k'"): calls already submitted downstream pass it on unrun."""


def concat_shards(shards: list[Any]) -> Any:
    """Gather data-parallel shards back in order (:func:`flowrl.runtime.batch.concat_shards`);
    when one replica dropped its shard the whole batch is dropped."""
    dropped = next((s for s in shards if isinstance(s, Skipped)), None)
    return dropped if dropped is not None else batch_concat_shards(shards)


class Worker(OpInterpreter):
    """One process of a worker group. Created by :class:`RayExecutor` as a Ray actor.

    The driver sends it ops one at a time (:meth:`execute`); it dispatches them like every
    other :class:`~flowrl.ir.OpInterpreter` and runs calls through the one call protocol
    (:func:`flowrl.runtime.calls.run_call`), as the local runtime does. Syncs are not ops
    here: the driver streams them through :meth:`sync_plan`, :meth:`export_bucket` and
    :meth:`import_buckets`.
    """

    def __init__(self, config: dict, sys_path: list[str], blobs: dict[str, bytes], rank: int,
                 world: int, dp: dict[str, int], seed: int, threads: int) -> None:
        for p in reversed(sys_path):
            if p not in sys.path:
                sys.path.insert(0, p)
        from ray import cloudpickle

        from flowrl.config import load_config
        from flowrl.context import seed_everything

        super().__init__()
        torch.set_num_threads(threads)
        cfg = load_config(config)
        seed_everything(cfg.runtime_args.seed)
        self.rank, self.world, self.dp, self.seed = rank, world, dp, seed
        self.modules = {}
        self.averagers = {}
        for name, blob in blobs.items():
            self.modules[name] = cloudpickle.loads(blob).bind(cfg)

    def pid(self) -> int:
        return os.getpid()

    def setup(self, master: str | None, bucket_bytes: int) -> None:
        import torch.distributed as dist

        from flowrl.runtime.calls import setup_modules
        from flowrl.runtime.collectives import enable_data_parallel

        setup_modules(self.modules)
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

    def execute(self, op: Op, node: CallNode | None, role: str, index: int, episode: int,
                iteration: int, inputs: list[tuple[str, list]]) -> tuple[Any, dict]:
        """Run op ``index`` of ``role`` (``node``: its call node, for calls) and return its
        result (a call's output, or bytes moved) with metadata: metrics, start, end, pid.
        A call runs on this replica's shard of ``inputs`` (``(source id, refs)`` pairs, in
        the node's input order); errors carry the same details as the local runtime's."""
        self.role, self.index = role, index
        self._call_args = (node, episode, iteration, inputs)
        t0 = time.time()
        meta = {"metrics": [], "start": t0, "pid": os.getpid(), "rank": self.rank,
                "version": getattr(self.modules[node.model], "weight_version", 0)
                if node is not None else None}
        out, meta["metrics"] = self.run_op(op)
        return out, {**meta, "end": time.time()}

    def node(self, op: Op) -> CallNode | None:
        return self._call_args[0]

    def fetch(self, refs: list) -> list:
        """The values of one input's shards, pulled from the object store."""
        import ray

        return ray.get(refs)

    def call(self, op: Op, node: CallNode | None) -> tuple[Any, list]:
        from flowrl.runtime.calls import CallContext, merge_inputs, run_call

        _, episode, iteration, inputs = self._call_args
        parts = [(src, concat_shards(self.fetch(refs))) for src, refs in inputs]
        dropped = next((v for _, v in parts if isinstance(v, Skipped)), None)
        if dropped is not None:
            return dropped, []
        data = take_shard(merge_inputs(node, parts), self.rank, self.dp[node.model])
        if node.model in self.averagers and node.is_train:
            self.averagers[node.model].reset(len(data))
        outcome = run_call(self.modules[node.model], node, data, iteration,
                           CallContext(self.seed, episode,
                                       self.modules[node.model].on_nonfinite))
        if outcome.skipped is not None:
            return Skipped(outcome.skipped), outcome.metrics
        return outcome.out, outcome.metrics

    def offload(self, op: Op) -> tuple[int, list]:
        return self.modules[op.model].offload(op.what), []

    def onload(self, op: Op) -> tuple[int, list]:
        return self.modules[op.model].onload(op.what), []

    def build_dataset(self, model: str, prompts: list, is_eval: bool) -> Any:
        return self.modules[model].build_dataset(prompts, is_eval)

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

    def import_buckets(self, model: str, plan, bucket_refs: list, version: int
                       ) -> tuple[int, float]:
        """Pull the source's buckets one at a time (bounded memory) and copy them in place;
        the weights are then version ``version``."""
        import ray

        from flowrl.runtime.buckets import unpack_bucket

        t0 = time.time()
        targets = self.modules[model].named_sync_tensors()
        moved = 0
        for bucket, ref in zip(plan.buckets, bucket_refs):
            moved += unpack_bucket(ray.get(ref), bucket, targets)
        self.modules[model].weight_version = version
        return moved, time.time() - t0

    def set_weight_version(self, model: str, version: int) -> None:
        """After a resume: the weights just loaded are version ``version``."""
        self.modules[model].weight_version = version

    def shutdown(self) -> None:
        for m in self.modules.values():
            m.shutdown()

    def state(self, model: str) -> dict:
        from flowrl.runtime.checkpoint import module_checkpoint_state

        return module_checkpoint_state(self.modules[model])

    def load_state(self, model: str, state: dict) -> None:
        from flowrl.runtime.checkpoint import load_module_checkpoint_state

        load_module_checkpoint_state(self.modules[model], state)
