"""The cost model: estimated seconds for calls, transfers and parameter syncs.

Notation: ``P`` parameters, ``B`` samples in the call, ``S`` sequence length (prompt +
response), ``S_p`` prompt length, ``N`` new tokens, ``n = tp*pp*dp`` devices of the mesh,
``F`` achieved FLOP/s per device (peak x ``flops_efficiency``), ``BW`` device memory
bandwidth, ``W`` weight bytes.

* forward (scoring, ``forward_step`` of a non-generating model): ``2 P B S`` FLOPs spread
  over ``n`` devices, but never faster than reading the weight shard once:
  ``max(2PBS / (n F), W / (tp pp) / BW)``.
* generate: prefill as a forward over ``S_p`` tokens, then ``N`` decode steps per replica
  (``b = ceil(B / dp)`` sequences). A decode step reads all weights of the replica (pipeline
  stages run one after another, so ``pp`` does not help) plus the KV cache, or is bound by
  its FLOPs, whichever is slower (memory-bandwidth-bound decode):
  ``N * max((W + b * kv * (S_p + N/2)) / tp / BW, 2 P b / (tp F))``.
* train (one ``train_step`` over a global batch of ``G`` samples): ``6 P G S`` FLOPs
  (forward + backward) over ``n`` devices, times the pipeline bubble
  ``1 + (pp - 1) / micro_steps``; plus the optimizer update reading and writing weights,
  grads and the optimizer shard at ``BW``; plus the data-parallel gradient all-reduce
  ``2 (dp - 1) / dp * grad_shard / link``.
* offload / onload: ``bytes per device / host bandwidth`` (devices transfer in parallel).
* sync (trainer -> inference model): on the same devices with the same sharding a device copy
  (``2 * shard / BW``); otherwise each destination device receives its shard over the link
  (NVLink-class inside a node, network across nodes).
"""

from __future__ import annotations

import math
from typing import Literal

from flowrl.ir import FLOW_INPUT, CallNode, ClusterSpec, Mesh
from flowrl.compiler.resources import ModelResources
from flowrl.config import RuntimeArgs

CallKind = Literal["generate", "forward", "train"]


def call_kind(call: CallNode, role: str, res: ModelResources) -> CallKind:
    """``train`` for ``train_step``; ``generate`` for ``generate``, or for a rollout/eval flow's
    entry call (it reads the prompts) of a model that samples (``res.generates``);
    ``forward`` (scoring) otherwise."""
    if call.is_train:
        return "train"
    if call.method == "generate" or (res.generates and role in ("rollout", "eval")
                                     and FLOW_INPUT in call.inputs):
        return "generate"
    return "forward"


def call_batch(kind: CallKind, args: RuntimeArgs) -> int:
    """Samples one call processes: a generation batch, or a global batch for training."""
    return args.train_global_batch_size if kind == "train" else args.generation_batch_size


def micro_batch_per_replica(args: RuntimeArgs, dp: int) -> int:
    """A micro-batch is split over the data-parallel replicas."""
    return max(1, math.ceil(args.train_micro_batch_size / dp))


def forward_time(res: ModelResources, mesh: Mesh, batch: int, seq: int,
                 cluster: ClusterSpec) -> float:
    flops = 2 * res.num_params * batch * seq
    weights_read = res.weight_bytes / res.mp / cluster.memory_bandwidth
    return max(flops / (len(mesh.devices) * cluster.flops), weights_read)


def decode_time(res: ModelResources, mesh: Mesh, batch: int, cluster: ClusterSpec) -> float:
    b = math.ceil(batch / mesh.dp)
    n = res.max_new_tokens
    avg_ctx = res.prompt_len + n / 2
    step_bytes = (res.weight_bytes + b * res.kv_bytes_per_token * avg_ctx) / res.tp
    step_flops = 2 * res.num_params * b / res.tp
    return n * max(step_bytes / cluster.memory_bandwidth, step_flops / cluster.flops)


def generate_time(res: ModelResources, mesh: Mesh, batch: int, cluster: ClusterSpec) -> float:
    return forward_time(res, mesh, batch, res.prompt_len, cluster) + \
        decode_time(res, mesh, batch, cluster)


def train_time(res: ModelResources, mesh: Mesh, args: RuntimeArgs, cluster: ClusterSpec) -> float:
    g = args.train_global_batch_size
    flops = 6 * res.num_params * g * res.max_seq_len
    micro_steps = max(1, math.ceil(g / mesh.dp / micro_batch_per_replica(args, mesh.dp)))
    bubble = 1 + (res.pp - 1) / micro_steps
    compute = flops / (len(mesh.devices) * cluster.flops) * bubble
    shard = (res.weight_bytes + res.grad_bytes) / res.mp + res.optimizer_bytes / len(mesh.devices)
    update = 2 * shard / cluster.memory_bandwidth
    allreduce = 0.0
    if mesh.dp > 1:
        allreduce = 2 * (mesh.dp - 1) / mesh.dp * (res.grad_bytes / res.mp) / \
            cluster.link_bandwidth(mesh.devices)
    return compute + update + allreduce


def call_time(kind: CallKind, res: ModelResources, mesh: Mesh, args: RuntimeArgs,
              cluster: ClusterSpec) -> float:
    """Estimated seconds of one call of ``kind`` on ``mesh``."""
    if kind == "train":
        return train_time(res, mesh, args, cluster)
    batch = call_batch(kind, args)
    if kind == "generate":
        return generate_time(res, mesh, batch, cluster)
    return forward_time(res, mesh, batch, res.max_seq_len, cluster)


def transfer_time(bytes_per_device: int, cluster: ClusterSpec) -> float:
    """Offload/onload: every device moves its shard over its own host link."""
    return bytes_per_device / cluster.host_bandwidth


def sync_time(src: ModelResources, src_mesh: Mesh, dst: ModelResources, dst_mesh: Mesh,
              cluster: ClusterSpec) -> float:
    """Copy the trainer's weights into the inference model (see module docstring)."""
    shard = dst.weight_bytes / dst.mp
    if src_mesh.devices == dst_mesh.devices and (src.tp, src.pp) == (dst.tp, dst.pp):
        return 2 * shard / cluster.memory_bandwidth
    return shard / cluster.link_bandwidth(set(src_mesh.devices) | set(dst_mesh.devices))
