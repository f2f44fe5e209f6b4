"""``RayExecutor``: the same :class:`~flowrl.ir.Schedule` on Ray actors.

One placement group per worker group (device mesh), one bundle per device (a custom
``flowrl_device`` resource stands for a device on CPU-only machines), one actor per replica;
a model's ``ray_node_resource`` pins its group to the nodes offering that custom resource.
The driver only submits: data between stages moves as object references from actor to actor;
the driver fetches a flow's result and the per-call metadata (metrics, timings) at the end.
Because actors run their calls in submission order while different actors run concurrently,
``run_many`` pipelines generation batches: the policy generates batch i+1 while reference,
value and reward process batch i on their own devices.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from flowrl.ir import FLOW_INPUT, CallNode, Op, Schedule
from flowrl.ir.interpreter import OpInterpreter
from flowrl.config import FlowRLConfig
from flowrl.errors import ConfigError, FlowRLError, StageError
from flowrl.models.base import BaseModule
from flowrl.runtime.batch import Batch
from flowrl.runtime.protocol import FlowResult, OpRecord, write_trace_events
from flowrl.runtime.layout import WorkerGroup, worker_groups
from flowrl.runtime.ray_cluster import (DEVICE_RESOURCE, PIN_AMOUNT, RayClusterError,
                                        check_capacity, connect, pickle_modules, start_local,
                                        worker_threads)
from flowrl.runtime.ray_worker import Skipped, Worker, concat_shards
from flowrl.runtime.sync import SyncStats, check_sync_compatible

__all__ = ["DEVICE_RESOURCE", "RayClusterError", "RayExecutor"]


@dataclass
class _Side:
    """Submitted work besides calls (an offload, onload or sync): its refs, what to call it
    in errors, and what to do with its results once fetched."""

    what: str
    refs: list
    done: Callable[[FlowResult, list], None]


@dataclass
class _Pending:
    """A submitted flow: result refs and (model, replica, meta ref) per call, fetched later."""

    role: str
    outputs: list[tuple[str, list]]
    metas: list[tuple[str, int, str, Any]]
    side: list[_Side]


class RaySubmission(OpInterpreter):
    """Submits one run of a flow role to the actors: each op becomes remote work whose
    results stay object references (a call's output feeds the next call actor to actor);
    :meth:`RayExecutor.collect` fetches them."""

    def __init__(self, executor: "RayExecutor", data: Any, iteration: int) -> None:
        super().__init__(executor.schedule)
        self.ex, self.iteration = executor, iteration
        self.values: dict[str, list] = {FLOW_INPUT: [executor.ray.put(data)]}

    def begin(self, role: str, ops: list[Op]) -> None:
        self.pending = _Pending(role, [], [], [])

    def call(self, op: Op, node: CallNode | None) -> None:
        inputs = [(s, self.values[s]) for s in node.inputs]
        outs = []
        for r, w in enumerate(self.ex.replicas(node.model)):
            out, meta = w.execute.options(num_returns=2).remote(
                op, node, self.role, self.index, self.ex.episode + 1, self.iteration, inputs)
            outs.append(out)
            self.pending.metas.append((node.id, r, node.model, meta))
        self.values[node.id] = outs

    def offload(self, op: Op) -> None:
        def done(result: FlowResult, moved: list) -> None:
            self.ex.offload_ops += len(moved)
            self.ex.offload_bytes += sum(moved)
        self._move(op, done)

    def onload(self, op: Op) -> None:
        def done(result: FlowResult, moved: list) -> None:
            self.ex.onload_ops += len(moved)
            self.ex.onload_bytes += sum(moved)
        self._move(op, done)

    def _move(self, op: Op, done: Callable[[FlowResult, list], None]) -> None:
        """Offload/onload on every process of the model's group (they share its devices)."""
        for r, w in enumerate(self.ex.workers[self.ex.model_group[op.model].name]):
            out, _ = w.execute.options(num_returns=2).remote(
                op, None, self.role, self.index, self.ex.episode + 1, self.iteration, [])
            self.pending.side.append(_Side(f"{op.kind} of '{op.model}' replica {r}", [out], done))

    def sync(self, op: Op) -> None:
        src, dst = op.src, op.model
        # a sync run for episode e (its iteration) publishes version e + 1; the destination's
        # actor applies it after the calls already queued on it (in-flight rollouts)
        refs, nbytes, t0 = self.ex._sync(src, dst, self.iteration + 1)
        role = self.role

        def done(result: FlowResult, _: list) -> None:
            result.syncs.append(SyncStats(src, dst, 0, nbytes, time.perf_counter() - t0))
            self.ex.records.append(OpRecord(role, f"sync {src} -> {dst}", dst,
                                            time.perf_counter() - t0, nbytes))
        self.pending.side.append(_Side(f"parameter sync {src} -> {dst}", refs, done))

    def end(self, role: str, ops: list[Op]) -> _Pending:
        graph = self.graphs.get(role)
        if graph is not None:
            self.pending.outputs = [(n, self.values[n]) for n in graph.outputs]
        return self.pending


class RayExecutor:
    """Executes schedule ops on Ray actors; implements
    :class:`~flowrl.runtime.protocol.Executor`, like ``LocalExecutor``."""

    def __init__(self, schedule: Schedule, modules: dict[str, BaseModule], config: FlowRLConfig,
                 seed: int = 0) -> None:
        import ray

        self.ray = ray
        self.schedule, self.config, self.seed = schedule, config, seed
        self.module_names = list(modules)
        self.episode = 0
        self.records: list[OpRecord] = []
        self.trace_events: list[dict] = []
        self.offload_ops = self.onload_ops = 0
        self.offload_bytes = self.onload_bytes = 0
        self._blobs = pickle_modules(modules)  # here, so a module Ray cannot send is named now
        configs = {n: config.model(n) for n in modules}
        self.groups = worker_groups(schedule.worker_groups, configs)
        self.actor_nodes: dict[tuple[str, int], str] = {}  # (group, replica) -> Ray node id
        self.node_resources: dict[str, list[str]] = {}  # node id -> its custom resources
        self.workers: dict[str, list[Any]] = {}  # group name -> actor handles
        self.model_group: dict[str, WorkerGroup] = {m: g for g in self.groups for m in g.models}
        self.bucket_bytes = int(config.runtime_args.sync_bucket_mb * 2**20)
        self._pgs: list[Any] = []
        #: models a sync writes (inference twins): their weights have versions
        self.synced = {op.model for op in schedule.ops_for("sync") if op.kind == "sync"}
        self.weight_version = 0

    # ---- start-up ------------------------------------------------------------------------
    def _ensure_ray(self) -> None:
        if self.ray.is_initialized():
            return
        n_devices = sum(len(g.devices) for g in self.groups)
        if self.config.ray_address:
            connect(self.config.ray_address, self.config.runtime_args.ray_connect_timeout_s)
        else:  # one local node offers every pinned resource: a multi-node config runs here too
            pinned = {g.node_resource: float(n_devices) for g in self.groups if g.node_resource}
            start_local({DEVICE_RESOURCE: n_devices, **pinned})

    def setup(self) -> None:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self._ensure_ray()
        check_capacity(self.groups, self.ray.nodes())
        cfg = self.config.model_dump(exclude={"source"})
        remote_worker = self.ray.remote(Worker)
        n_devices = sum(len(g.devices) for g in self.groups)
        for g in self.groups:
            pg = self._reserve(g, placement_group)
            per = max(1, len(g.devices) // g.replicas)
            threads = worker_threads(self.config.runtime_args.ray_worker_threads,
                                     torch.get_num_threads(), per, n_devices)
            blobs = {m: self._blobs[m] for m in g.models}
            self.workers[g.name] = [
                remote_worker.options(
                    num_cpus=0, name=None, max_concurrency=1,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        pg, placement_group_bundle_index=r * per),
                ).remote(cfg, list(sys.path), blobs, r, g.replicas, g.dp, self.seed, threads)
                for r in range(g.replicas)]
        setups = []
        for g in self.groups:  # rank 0's node hosts the group's gloo rendezvous
            master = self._get(self.workers[g.name][0].rendezvous.remote(),
                               f"setup of {'/'.join(g.models)}") if g.replicas > 1 else None
            setups += [(g, r, w.setup.remote(master, self.bucket_bytes))
                       for r, w in enumerate(self.workers[g.name])]
        for g, r, ref in setups:
            self._get(ref, f"setup of {'/'.join(g.models)} replica {r}")
        self._record_nodes()
        self.set_weight_version(0)  # modules pickled from an engine that ran start over

    def _reserve(self, g: WorkerGroup, placement_group: Any) -> Any:
        """The group's placement group, ready; a bounded wait, then an error naming models."""
        bundle = {DEVICE_RESOURCE: 1}
        if g.node_resource:
            bundle[g.node_resource] = PIN_AMOUNT
        pg = placement_group([dict(bundle) for _ in g.devices], strategy="PACK")
        self._pgs.append(pg)  # removed by shutdown(), ready or not
        timeout = self.config.runtime_args.ray_connect_timeout_s
        try:
            self.ray.get(pg.ready(), timeout=timeout)
        except self.ray.exceptions.GetTimeoutError:
            raise RayClusterError(
                f"the Ray cluster did not reserve {len(g.devices)} x {bundle} for models "
                f"{', '.join(g.models)} within runtime_args.ray_connect_timeout_s={timeout:g} s "
                f"(other jobs may hold the resources)") from None
        return pg

    def _record_nodes(self) -> None:
        """Where each worker runs, so a lost node can be reported by the models it hosted."""
        refs = {(g.name, r): w.node_id.remote() for g in self.groups
                for r, w in enumerate(self.workers[g.name])}
        self.actor_nodes = {k: self.ray.get(ref) for k, ref in refs.items()}
        skip = ("CPU", "GPU", "memory", "object_store_memory", DEVICE_RESOURCE)
        self.node_resources = {n["NodeID"]: sorted(r for r in n["Resources"] if r not in skip
                                                   and not r.startswith("node:"))
                               for n in self.ray.nodes()}

    def check_sync_pairs(self, pairs: list[tuple[str, str]]) -> None:
        """Right after setup: both sides of every sync have weights of the same names and
        shapes (an error now, not after the first rollout)."""
        for src, dst in pairs:
            sigs = {}
            for name in (src, dst):
                try:
                    sigs[name] = self._get(self.replicas(name)[0].sync_signature.remote(name),
                                           f"sync plan of {name}")
                except StageError as e:
                    cause = getattr(e.__cause__, "cause", None)  # the worker's exception
                    if not isinstance(cause, (NotImplementedError, RuntimeError)):
                        raise
                    raise ConfigError(f"sync {src} -> {dst}: model '{name}' has no weights to "
                                      f"sync: {cause}") from e
            if sigs[src] is not None and sigs[dst] is not None:
                check_sync_compatible(*(_as_tensors(sigs[n]) for n in (src, dst)), src, dst)

    def replicas(self, model: str) -> list[Any]:
        g = self.model_group[model]
        return self.workers[g.name][:g.dp[model]]

    def _get(self, ref: Any, what: str) -> Any:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            raise StageError(f"{what}: the worker process died ({type(e).__name__}); "
                             f"{self._loss_report()}; resume from the last checkpoint with "
                             f"learn(resume=True)") from e
        except self.ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else None
            if isinstance(cause, FlowRLError):  # already names call, model and episode
                raise cause from e  # chained: the worker's traceback stays visible
            raise StageError(f"{what} failed: {cause!r}" if cause else f"{what} failed: {e}") \
                from e

    def _loss_report(self) -> str:
        """Which models died with their workers and which nodes went with them. Dead actors
        answer a ping at once with an error; busy live ones are simply not waited for."""
        keys = [(g.name, r) for g in self.groups for r in range(len(self.workers.get(g.name, [])))]
        pings = [self.workers[k[0]][k[1]].pid.remote() for k in keys]
        ready, _ = self.ray.wait(pings, num_returns=len(pings), timeout=5)
        dead = set()
        for key, ref in zip(keys, pings):
            if ref in ready:
                try:
                    self.ray.get(ref)
                except self.ray.exceptions.RayActorError:
                    dead.add(key)
        groups = {g.name: g for g in self.groups}
        models = [m for m in self.module_names if any(m in groups[k[0]].models for k in dead)]
        hosts = {self.actor_nodes[k] for k in dead if k in self.actor_nodes}
        deadline = time.monotonic() + 3  # Ray marks a node dead a moment after its actors
        while True:
            lost = sorted(hosts - {n["NodeID"] for n in self.ray.nodes() if n["Alive"]})
            if lost or not hosts or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        nodes = "; ".join(f"Ray node {n[:12]} (resources: "
                          f"{', '.join(self.node_resources.get(n, [])) or 'none'}) is gone"
                          for n in lost)
        return (f"models lost: {', '.join(models) or 'none found'}" +
                (f" ({nodes})" if nodes else ""))

    # ---- running flows ---------------------------------------------------------------------
    def submit(self, role: str, data: Any, iteration: int) -> _Pending:
        """Submit every op of ``role`` on ``data`` without waiting (see :class:`RaySubmission`).
        The sync role of episode ``iteration`` publishes weight version ``iteration + 1``."""
        pending = RaySubmission(self, data, iteration).run(role)
        if role == "sync":
            self.weight_version = iteration + 1
        return pending

    def _sync(self, src: str, dst: str, version: int) -> tuple[list, int, float]:
        """Stream the trainer's weights to every inference replica in fixed-size buckets."""
        src_worker = self.replicas(src)[0]  # data-parallel replicas hold identical weights
        dst_workers = self.replicas(dst)
        src_sig = self._get(src_worker.sync_signature.remote(src), f"sync plan of {src}")
        dst_sig = self._get(dst_workers[0].sync_signature.remote(dst), f"sync plan of {dst}")
        if src_sig is not None and dst_sig is not None:  # offloaded sides are checked onloaded
            check_sync_compatible(_as_tensors(src_sig), _as_tensors(dst_sig), src, dst)
        plan = self._get(src_worker.sync_plan.remote(src, self.bucket_bytes, dst),
                         f"sync of {src}")
        buckets = [src_worker.export_bucket.remote(src, plan, i) for i in range(len(plan.buckets))]
        t0 = time.perf_counter()
        refs = [w.import_buckets.remote(dst, plan, buckets, version) for w in dst_workers]
        return refs, plan.total_bytes, t0

    def collect(self, pending: _Pending) -> FlowResult:
        result = FlowResult(None, {})
        for side in pending.side:
            side.done(result, [self._get(r, side.what) for r in side.refs])
        for node, replica, model, meta_ref in pending.metas:
            meta = self._get(meta_ref, f"{node} (model '{model}', replica {replica}, episode "
                                       f"{self.episode + 1})")
            result.metrics.extend(meta["metrics"])
            if model in self.synced:  # the version the weights had when this call ran
                old = result.weight_version
                result.weight_version = meta["version"] if old is None else \
                    min(old, meta["version"])
            self.records.append(OpRecord(pending.role, node, model, meta["end"] - meta["start"]))
            self.trace_events.append({"name": node, "ph": "X", "pid": meta["pid"], "tid": replica,
                                      "ts": meta["start"] * 1e6,
                                      "dur": (meta["end"] - meta["start"]) * 1e6,
                                      "args": {"model": model, "episode": self.episode + 1}})
        if pending.outputs:
            parts = [(n, concat_shards(self._get(refs, f"result of {n}")))
                     for n, refs in pending.outputs]
            dropped = next((v for _, v in parts if isinstance(v, Skipped)), None)
            if dropped is not None:  # on_nonfinite: skip_batch dropped this batch (counted)
                result.skipped = str(dropped)
            else:
                result.output = parts[0][1] if len(parts) == 1 else Batch.merge(
                    parts, f"the result of flow '{pending.role}'")
        return result

    def build_dataset(self, model: str, prompts: list, is_eval: bool) -> Any:
        """Built where the model lives (its ``setup`` made the tokenizer), sent back here."""
        return self._get(self.replicas(model)[0].build_dataset.remote(model, prompts, is_eval),
                         f"{model}.build_dataset")

    def run(self, role: str, data: Any, iteration: int) -> FlowResult:
        return self.collect(self.submit(role, data, iteration))

    def run_many(self, role: str, batches: list[Any], first_iteration: int
                 ) -> Iterator[FlowResult]:
        """Submit every batch before collecting any, so stages on disjoint devices overlap."""
        yield from (self.collect(p) for p in self.submit_many(role, batches, first_iteration))

    def submit_many(self, role: str, batches: list[Any], first_iteration: int
                    ) -> list[_Pending]:
        """Submit ``role`` on every batch without waiting: what is submitted next (a train
        flow on other actors) runs meanwhile."""
        return [self.submit(role, b, first_iteration + i) for i, b in enumerate(batches)]

    def collect_many(self, handle: list[_Pending]) -> list[FlowResult]:
        return [self.collect(p) for p in handle]

    def set_weight_version(self, version: int) -> None:
        self.weight_version = version
        refs = [(m, w.set_weight_version.remote(m, version)) for m in sorted(self.synced)
                for w in self.replicas(m)]
        for m, ref in refs:
            self._get(ref, f"setting the weight version of '{m}'")

    # ---- checkpoints, trace, shutdown --------------------------------------------------------
    def module_states(self) -> dict[str, dict]:
        return {m: self._get(self.replicas(m)[0].state.remote(m), f"state of {m}")
                for m in self.module_names}

    def load_module_states(self, states: dict[str, dict]) -> None:
        refs = [(m, r, w.load_state.remote(m, st)) for m, st in states.items()
                for r, w in enumerate(self.replicas(m))]
        for m, r, ref in refs:
            self._get(ref, f"loading the checkpoint of '{m}' replica {r}")

    def write_trace(self, path: str | Path) -> Path:
        """Chrome/Perfetto trace of every call as it really ran (one row per process)."""
        return write_trace_events(self.trace_events, path)

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        if not self.ray.is_initialized():  # setup failed before Ray started: nothing to free
            return  # (and any ray call here would start a local Ray instance)
        actors = [a for group in self.workers.values() for a in group]
        # Let backends stop their own engines first; a dead or stuck worker is killed anyway.
        self.ray.wait([a.shutdown.remote() for a in actors], num_returns=len(actors), timeout=30)
        for a in actors:
            self.ray.kill(a)
        for pg in self._pgs:
            remove_placement_group(pg)
        self.workers, self._pgs = {}, []


def _as_tensors(signature: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, torch.Tensor]:
    """Shape-only stand-ins for a worker's sync tensors (what the compatibility check reads)."""
    return {n: torch.empty(shape, device="meta") for n, (shape, _) in signature.items()}
