"""Pass 3, ``memory``: per-device memory at every call and sync of one iteration.

Persistent state per model and device (its mesh has ``tp*pp*dp`` devices):

* weights ``P * dtype_bytes / (tp*pp)``;
* grads (trainers) ``P * dtype_bytes / (tp*pp)``;
* optimizer (trainers, Adam) ``P * 12 / (tp*pp*dp)`` for 16-bit training (fp32 master copy +
  two moments), ``P * 8 / (tp*pp*dp)`` for fp32: sharded over data parallel ranks
  (distributed optimizer / ZeRO-1).

Transient memory of the running op, on the devices of its mesh (``b`` samples per replica):

* generate: KV cache ``b * S * kv_per_token_per_rank / pp`` (``kv_per_token = 2 * L *
  kv_heads * head_dim * dtype_bytes``; a tensor-parallel rank holds ``max(kv_heads / tp, 1)``
  of the KV heads: grouped-query attention, see
  :func:`~flowrl.compiler.costmodel.kv_cache_bytes`) + prefill activations
  ``4 * b * S_p * h * dtype_bytes / tp`` + last-token fp32 logits ``4 * b * V / tp``;
* forward: activations ``4 * b * S * h * dtype_bytes / tp`` + fp32 logits ``4 * b * S * V / tp``;
* train: activations with selective recompute ``34 * S * m * h * L / tp * dtype_bytes / 2``
  (``m`` micro-batch samples per replica; with 1F1B a stage holds ``pp`` micro-batches of
  ``L/pp`` layers, i.e. ``L`` layers' worth) + fp32 logits and their gradient
  ``8 * m * S * V / tp``;
* sync: one bucket of ``sync_bucket_mb`` (at most the weight shard) on source and
  destination devices.

A weightless model (a rule reward) holds no device state and no working memory.
The parallel sizes are the mesh's (the layout placement chose), not the config's.

"Before offload" assumes every model's state stays resident all the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from flowrl.compiler.costmodel import (CONTINUOUS_SLOTS, CallKind, call_batch, call_kind,
                                       kv_cache_bytes, micro_batch_per_replica)
from flowrl.compiler.resources import ModelResources, episode_spec
from flowrl.config import RuntimeArgs
from flowrl.ir import ClusterSpec, EpisodeSpec, FlowGraph, Mesh, Op
#: Whether a sync needs both models *fully* onloaded. It does not: ``sync_parameters`` reads
#: and writes weights only and refuses a module only when its weights are offloaded, so
#: grads and optimizer state may stay off the device across the sync.
SYNC_NEEDS_ALL_STATE = False

Key = tuple[str, str]  # (model, state kind)


@dataclass(frozen=True)
class Item:
    """One model's state of one kind: the same bytes on each device of its mesh."""

    model: str
    kind: str
    per_device: int
    devices: tuple[int, ...]

    @property
    def total(self) -> int:
        return self.per_device * len(self.devices)


@dataclass
class Moment:
    """A call or sync op: the state it needs resident and its transient bytes per device."""

    role: str
    op: Op
    kind: str  # generate | forward | train | sync
    need: frozenset[Key]
    transient: dict[int, int]


@dataclass
class MemoryModel:
    """Everything the offload pass needs, plus the before-offload timeline."""

    num_devices: int
    capacity: int
    items: dict[Key, Item]
    moments: list[Moment]
    episode: EpisodeSpec
    before: list[list[int]] = field(default_factory=list)  # per moment, per device
    peak_before: list[int] = field(default_factory=list)
    devices_per_node: int = 0  # for the host-memory check (0: one node holds every device)
    host_capacity: int = 0  # offloadable bytes per node's host RAM (0: unchecked)

    def node_of(self, device: int) -> int:
        return device // self.devices_per_node if self.devices_per_node else 0

    @property
    def num_nodes(self) -> int:
        return -(-self.num_devices // self.devices_per_node) if self.devices_per_node else 1

    @property
    def roles(self) -> list[str]:
        """Roles in episode order."""
        return list(self.episode.roles)

    @property
    def repeats(self) -> dict[str, int]:
        """Runs of each role per iteration."""
        return self.episode.repeats

    def usage(self, resident, moment: Moment | None,
              extra: dict[int, int] | None = None) -> list[int]:
        """Bytes per device while ``moment`` runs (None: between ops) with ``resident`` state."""
        use = [0] * self.num_devices
        for key in resident:
            it = self.items[key]
            for d in it.devices:
                use[d] += it.per_device
        for d, b in (moment.transient.items() if moment is not None else ()):
            use[d] += b
        for d, b in (extra or {}).items():
            use[d] += b
        return use


def state_bytes(res: ModelResources, mesh: Mesh) -> dict[str, int]:
    """Per-device bytes of each kind of persistent state (none for a weightless model)."""
    if res.weightless:
        return {}
    mp = mesh.tp * mesh.pp
    out = {"weights": math.ceil(res.weight_bytes / mp)}
    if res.trainable:
        out["grads"] = math.ceil(res.grad_bytes / mp)
        out["optimizer"] = math.ceil(res.optimizer_bytes / len(mesh.devices))
    return out


def transient_bytes(kind: CallKind, res: ModelResources, mesh: Mesh, args: RuntimeArgs) -> int:
    """Per-device working memory of one call (see the module docstring)."""
    if res.weightless:
        return 0
    h, v, dt, tp = res.hidden_size, res.vocab_size, res.dtype_bytes, mesh.tp
    s = res.max_seq_len
    if kind == "train":
        m = micro_batch_per_replica(args, mesh.dp)
        act = 34 * s * m * h * res.num_layers / tp * dt / 2
        return int(act + 8 * m * s * v / tp)
    batch = call_batch(kind, args)
    b = math.ceil(batch / mesh.dp)
    if kind == "generate":
        kv = kv_cache_bytes(res, mesh, batch)
        if res.batching == "continuous":  # paged KV: the slots in flight, at their mean context
            b = min(b, CONTINUOUS_SLOTS)
            kv = kv_cache_bytes(res, mesh, b * mesh.dp, res.expected_seq_len)
        return int(kv + 4 * b * res.prompt_len * h * dt / tp + 4 * b * v / tp)
    return int(4 * b * s * h * dt / tp + 4 * b * s * v / tp)


def memory(graphs: dict[str, FlowGraph], sync: list[tuple[str, str]],
           resources: dict[str, ModelResources], placement: dict[str, Mesh],
           cluster: ClusterSpec, args: RuntimeArgs) -> MemoryModel:
    """State items, the moments of one iteration (roles in episode order) and the memory at
    each moment if nothing were ever offloaded."""
    items: dict[Key, Item] = {}
    for name, res in resources.items():
        mesh = placement[name]
        for kind, b in state_bytes(res, mesh).items():
            items[(name, kind)] = Item(name, kind, b, mesh.devices)
    episode = episode_spec(args, has_eval="eval" in graphs)
    moments: list[Moment] = []
    bucket = int(args.sync_bucket_mb * 1e6)
    for role in episode.roles:
        if role == "sync":
            for src, dst in sync:
                kinds = ("weights", "grads", "optimizer") if SYNC_NEEDS_ALL_STATE else ("weights",)
                need = frozenset((m, k) for m in (src, dst) for k in kinds if (m, k) in items)
                devices = tuple(sorted(set(placement[src].devices) | set(placement[dst].devices)))
                op = Op("sync", dst, src=src, devices=devices)
                b = min(bucket, items[(dst, "weights")].per_device)
                moments.append(Moment(role, op, "sync", need, {d: b for d in devices}))
            continue
        for call in graphs[role].calls():
            res, mesh = resources[call.model], placement[call.model]
            kind = call_kind(call, role, res)
            need = {(call.model, "weights")} & set(items)
            if kind == "train":
                need |= {(call.model, k) for k in ("grads", "optimizer")
                         if (call.model, k) in items}
            t = transient_bytes(kind, res, mesh, args)
            # A weightless model's call runs on the host: it holds no device in the timeline.
            op = Op("call", call.model, node=call.id,
                    devices=() if res.weightless else mesh.devices)
            moments.append(Moment(role, op, kind, frozenset(need), {d: t for d in op.devices}))
    mem = MemoryModel(cluster.num_devices, cluster.capacity_bytes, items, moments, episode,
                      devices_per_node=cluster.devices_per_node,
                      host_capacity=cluster.host_capacity_bytes)
    everything = list(items)
    mem.before = [mem.usage(everything, m) for m in moments]
    mem.peak_before = [max((u[d] for u in mem.before), default=0)
                       for d in range(cluster.num_devices)]
    return mem
