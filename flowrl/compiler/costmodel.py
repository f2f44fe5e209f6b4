"""The cost model: estimated seconds for calls, transfers and parameter syncs.

Notation: ``P`` parameters, ``B`` samples in the call, ``S`` sequence length (prompt +
response), ``S_p`` prompt length, ``N`` new tokens, ``L`` layers, ``h`` hidden size, ``n =
tp*pp*dp`` devices of the mesh (the mesh's parallel sizes are the layout: a planner may give
a model another layout than its config), ``F`` achieved FLOP/s per device (peak x
``flops_efficiency``), ``BW`` device memory bandwidth, ``W`` weight bytes.

* tensor-parallel communication (``tp > 1``, Megatron-style): every layer all-reduces its
  activations twice per forward pass (after attention and after the MLP), twice more in the
  backward pass; a ring all-reduce of ``x`` bytes over ``tp`` ranks takes
  ``2 (tp - 1) / tp * x / link + latency`` (NVLink-class inside a node, the network when the
  group spans nodes; ``latency``: ``collective_latency_us``). A pipeline stage holds
  ``L / pp`` layers; stages work on different micro-batches at once.
* forward (scoring, ``forward_step`` of a non-generating model): ``2 P B S`` FLOPs spread
  over ``n`` devices, but never faster than reading the weight shard once:
  ``max(2PBS / (n F), W / (tp pp) / BW)``, plus its TP all-reduces.
* generate = prefill + decode. Prefill is a forward over the ``S_p`` prompt tokens
  (compute-bound). Decode is ``N`` steps per replica (``b = ceil(B / dp)`` sequences), each
  memory-bound: it reads all weights of the replica (pipeline stages run one after another,
  so ``pp`` does not help) plus the KV cache (``kv_cache_bytes``: grouped-query attention
  counts ``num_kv_heads``), or is bound by its FLOPs, whichever is slower, plus ``2 L``
  latency-bound all-reduces of ``b h`` bytes:
  ``N * (max((W/tp + KV(b, S_p + N/2)) / BW, 2 P b / (tp F)) + 2 L allreduce(b h))``.
  With a response-length distribution (``generation.expected_new_tokens`` /
  ``p99_new_tokens``, :mod:`flowrl.compiler.lengths`) ``N`` becomes the expected longest
  response of the call under static batching, or the mean tokens at full slots plus the
  tail of the last requests under continuous batching (:func:`decode_time`).
* scoring and training count ``S`` as the *mean* sequence length (prompt + mean response:
  packed sequences, no padding to the longest); ``max_seq_len`` without a distribution.
* train (one ``train_step`` over a global batch of ``G`` samples): ``6 P G S`` FLOPs
  (forward + backward) over ``n`` devices, times the pipeline bubble
  ``1 + (pp - 1) / micro_steps``; plus ``4 L / pp`` TP all-reduces of the replica's
  activations; plus the optimizer update reading and writing weights, grads and the
  optimizer shard at ``BW``; plus the data-parallel gradient all-reduce
  ``2 (dp - 1) / dp * grad_shard / link``.
* host time ``cpu_seconds_per_sample * ceil(B / dp)``: a weightless model's (a rule
  reward's) whole call; added to a model's device time when its section sets it (an agent
  rollout waiting for its environment).
* offload / onload: ``bytes per device / host bandwidth`` (devices transfer in parallel).
* sync (trainer -> inference model): on the same devices with the same sharding a device copy
  (``2 * shard / BW``); otherwise each destination device receives its shard over the link
  (NVLink-class inside a node, network across nodes).
* dispatch (:func:`dispatch_time`): the runtime's per-call cost of sending one call to one
  worker and collecting its result (``ClusterSpec.call_overhead``: ~0 in process, 0.7 ms on
  Ray), paid once per worker the op is sent to: a call and an offload/onload go to each of
  the model's ``dp`` replicas; a sync is :data:`SYNC_DISPATCHES` driver requests plus one
  import per destination replica.
"""

from __future__ import annotations

import math
from typing import Literal

from flowrl.ir import FLOW_INPUT, CallNode, ClusterSpec, Mesh
from flowrl.compiler.resources import ModelResources
from flowrl.config import RuntimeArgs

CallKind = Literal["generate", "forward", "train"]

#: Sequences a continuous-batching generator decodes at once per replica (vLLM's default
#: ``max_num_seqs``); more requests queue and enter as others finish.
CONTINUOUS_SLOTS = 256

#: Driver requests of one sync besides the destination replicas' imports (the Ray runtime's
#: weight sync, flowrl/runtime/ray_executor.py: the source's and the destination's
#: parameter signatures, the bucket plan, one export per bucket: one bucket up to 64 MB).
SYNC_DISPATCHES = 4


def dispatch_time(cluster: ClusterSpec, workers: int) -> float:
    """Seconds the runtime spends sending one op to ``workers`` workers and collecting their
    results (the driver dispatches them one after another)."""
    return cluster.call_overhead * max(1, workers)


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


def allreduce_time(nbytes: float, devices: tuple[int, ...], cluster: ClusterSpec) -> float:
    """Seconds of one ring all-reduce of ``nbytes`` over ``devices`` (0 for one device)."""
    n = len(devices)
    if n <= 1:
        return 0.0
    return 2 * (n - 1) / n * nbytes / cluster.link_bandwidth(devices) + \
        cluster.collective_latency(devices)


def tp_group(mesh: Mesh) -> tuple[int, ...]:
    """Devices of the mesh's first tensor-parallel group (tp is the innermost dimension)."""
    return tuple(mesh.devices[:mesh.tp])


def tp_comm_time(res: ModelResources, mesh: Mesh, tokens: int, cluster: ClusterSpec,
                 passes: int = 1, layers: int | None = None) -> float:
    """Seconds of the tensor-parallel all-reduces of one replica processing ``tokens`` tokens:
    ``2 * passes`` all-reduces of ``tokens * h`` activations per layer (``passes``: 1 for a
    forward, 2 for forward + backward); ``layers`` default: one pipeline stage's ``L / pp``."""
    if mesh.tp <= 1 or res.weightless:
        return 0.0
    layers = math.ceil(res.num_layers / mesh.pp) if layers is None else layers
    per = allreduce_time(tokens * res.hidden_size * res.dtype_bytes, tp_group(mesh), cluster)
    return 2 * passes * layers * per


def kv_cache_bytes(res: ModelResources, mesh: Mesh, batch: int,
                   context: float | None = None) -> float:
    """KV-cache bytes per device of ``ceil(batch / dp)`` sequences of ``context`` tokens
    (default ``max_seq_len``): the rank's share of the KV heads (see
    :meth:`ModelResources.kv_bytes_per_token_per_rank`) of its stage's ``L / pp`` layers."""
    b = math.ceil(batch / mesh.dp)
    ctx = res.max_seq_len if context is None else context
    return b * ctx * res.kv_bytes_per_token_per_rank(mesh.tp) / mesh.pp


def cpu_time(res: ModelResources, mesh: Mesh, batch: int) -> float:
    """Host seconds of a call over ``batch`` samples, split over the model's workers."""
    return res.cpu_seconds_per_sample * math.ceil(batch / mesh.dp)


def forward_time(res: ModelResources, mesh: Mesh, batch: int, seq: float,
                 cluster: ClusterSpec) -> float:
    """A scoring forward (or a prefill) over ``batch`` sequences of ``seq`` tokens."""
    if res.weightless:
        return cpu_time(res, mesh, batch)
    flops = 2 * res.num_params * batch * seq
    weights_read = res.weight_bytes / (mesh.tp * mesh.pp) / cluster.memory_bandwidth
    comm = tp_comm_time(res, mesh, math.ceil(math.ceil(batch / mesh.dp) * seq), cluster)
    return max(flops / (len(mesh.devices) * cluster.flops), weights_read) + comm


def prefill_time(res: ModelResources, mesh: Mesh, batch: int, cluster: ClusterSpec) -> float:
    """Prompt processing: a compute-bound forward over the ``S_p`` prompt tokens."""
    return forward_time(res, mesh, batch, res.prompt_len, cluster)


def decode_step_time(res: ModelResources, mesh: Mesh, batch: int, context: float,
                     cluster: ClusterSpec) -> float:
    """One decode step of ``ceil(batch / dp)`` sequences at ``context`` tokens: weights + KV
    read (memory-bound), or its FLOPs if slower, plus ``2 L`` small TP all-reduces."""
    b = math.ceil(batch / mesh.dp)
    step_bytes = res.weight_bytes / mesh.tp + kv_cache_bytes(res, mesh, batch, context) * mesh.pp
    step_flops = 2 * res.num_params * b / mesh.tp
    comm = tp_comm_time(res, mesh, b, cluster, layers=res.num_layers)
    return max(step_bytes / cluster.memory_bandwidth, step_flops / cluster.flops) + comm


def decode_time(res: ModelResources, mesh: Mesh, batch: int, cluster: ClusterSpec) -> float:
    """Decode of ``batch`` responses whose lengths follow ``res.lengths`` (default: all
    ``N`` long, so ``N`` steps at the average context ``S_p + N / 2``).

    The call ends when its longest response does, on whichever replica holds it: the
    expected longest of the ``batch`` draws, ``n_max``. Static batching (HF generate) keeps
    every sequence in the batch until then: ``n_max`` full-batch steps. Continuous batching
    (vLLM) lets finished requests leave and queued ones enter (at most
    :data:`CONTINUOUS_SLOTS` at once): the replica's ``b * mean`` tokens at ``c = min(b,
    slots)`` sequences per step, then the tail of the last requests, ``n_max - mean`` steps
    of a nearly empty batch (one sequence: the weight read).
    """
    dist = res.lengths
    n_max = dist.expected_max(batch)
    if res.batching != "continuous":
        return n_max * decode_step_time(res, mesh, batch, res.prompt_len + n_max / 2, cluster)
    b = math.ceil(batch / mesh.dp)
    slots = min(b, CONTINUOUS_SLOTS)
    ctx = res.prompt_len + dist.mean / 2
    bulk = b * dist.mean / slots * decode_step_time(res, mesh, slots * mesh.dp, ctx, cluster)
    tail = max(0.0, n_max - dist.mean) * decode_step_time(
        res, mesh, mesh.dp, res.prompt_len + (dist.mean + n_max) / 2, cluster)
    return bulk + tail


def generate_time(res: ModelResources, mesh: Mesh, batch: int, cluster: ClusterSpec) -> float:
    if res.weightless:
        return cpu_time(res, mesh, batch)
    return prefill_time(res, mesh, batch, cluster) + decode_time(res, mesh, batch, cluster)


def train_time(res: ModelResources, mesh: Mesh, args: RuntimeArgs, cluster: ClusterSpec) -> float:
    g = args.train_global_batch_size
    seq = res.expected_seq_len  # packed sequences: the mean length, not the cap
    flops = 6 * res.num_params * g * seq
    micro_steps = max(1, math.ceil(g / mesh.dp / micro_batch_per_replica(args, mesh.dp)))
    bubble = 1 + (mesh.pp - 1) / micro_steps
    compute = flops / (len(mesh.devices) * cluster.flops) * bubble
    mp = mesh.tp * mesh.pp
    shard = (res.weight_bytes + res.grad_bytes) / mp + res.optimizer_bytes / len(mesh.devices)
    update = 2 * shard / cluster.memory_bandwidth
    comm = tp_comm_time(res, mesh, math.ceil(math.ceil(g / mesh.dp) * seq), cluster, passes=2)
    allreduce = 0.0
    if mesh.dp > 1:
        allreduce = 2 * (mesh.dp - 1) / mesh.dp * (res.grad_bytes / mp) / \
            cluster.link_bandwidth(mesh.devices)
    return compute + comm + update + allreduce


def call_time(kind: CallKind, res: ModelResources, mesh: Mesh, args: RuntimeArgs,
              cluster: ClusterSpec) -> float:
    """Estimated seconds of one call of ``kind`` on ``mesh``: its device time plus its host
    time (``cpu_seconds_per_sample``: a rule reward's whole call, an environment's steps in
    an agent rollout, which the call waits for)."""
    host = cpu_time(res, mesh, call_batch(kind, args))
    if res.weightless:
        return host
    if kind == "train":
        return train_time(res, mesh, args, cluster) + host
    batch = call_batch(kind, args)
    if kind == "generate":
        return generate_time(res, mesh, batch, cluster) + host
    return forward_time(res, mesh, batch, res.expected_seq_len, cluster) + host


def transfer_time(bytes_per_device: int, cluster: ClusterSpec) -> float:
    """Offload/onload: every device moves its shard over its own host link."""
    return bytes_per_device / cluster.host_bandwidth


def sync_time(src: ModelResources, src_mesh: Mesh, dst: ModelResources, dst_mesh: Mesh,
              cluster: ClusterSpec) -> float:
    """Copy the trainer's weights into the inference model (see module docstring)."""
    shard = dst.weight_bytes / (dst_mesh.tp * dst_mesh.pp)
    if src_mesh.devices == dst_mesh.devices and \
            (src_mesh.tp, src_mesh.pp) == (dst_mesh.tp, dst_mesh.pp):
        return 2 * shard / cluster.memory_bandwidth
    return shard / cluster.link_bandwidth(set(src_mesh.devices) | set(dst_mesh.devices))
