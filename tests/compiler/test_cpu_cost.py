"""Issue 14 follow-up: what the cost model counts on a CPU with virtual devices.

* the runtime's per-call dispatch cost (``ClusterSpec.call_overhead``: local ~0, Ray
  0.7 ms measured; overridable), paid once per worker an op is sent to;
* virtual devices sharing fewer host cores slow each other only where their ops overlap in
  the timeline (:mod:`flowrl.compiler.core_sharing`), not per op.
"""

from __future__ import annotations

import pytest

from flowrl.compiler import compile_schedule
from flowrl.compiler.core_sharing import Job, shared_timeline
from flowrl.errors import CompileError
from flowrl.ir import ClusterSpec, parse_cluster
from flowrl.ir.cluster import RUNTIME_CALL_OVERHEAD_US, host_cpu_count

from compiler_helpers import ARGS, METHODS, SYNC, ppo_graphs, ppo_models


def cpu(n: int, cores: float | None = None, **kw) -> ClusterSpec:
    """``local:n`` with fixed speeds (independent of this machine)."""
    return ClusterSpec(name=f"cpu:{n}", devices_per_node=n, device_memory_gb=64,
                       device_tflops=0.1, memory_bandwidth_gbps=20, intra_node_bandwidth_gbps=10,
                       flops_efficiency=1.0, host_cores=cores, **kw)


def compile_ppo(cluster: ClusterSpec, strategy: str = "colocate"):
    return compile_schedule(ppo_graphs(), ppo_models(0.01), SYNC, cluster, strategy, METHODS,
                            runtime_args=ARGS)


def test_runtime_sets_the_dispatch_cost_and_a_field_overrides_it():
    assert cpu(1).call_overhead == RUNTIME_CALL_OVERHEAD_US["local"] * 1e-6
    assert cpu(1, runtime="ray").call_overhead == pytest.approx(700e-6)
    assert cpu(1, runtime="ray", call_overhead_us=2500).call_overhead == pytest.approx(2.5e-3)
    with pytest.raises(CompileError, match="invalid cluster spec 'x': call_overhead_us: "):
        parse_cluster({"name": "x", "devices_per_node": 1, "device_memory_gb": 1,
                       "device_tflops": 1, "memory_bandwidth_gbps": 1,
                       "intra_node_bandwidth_gbps": 1, "call_overhead_us": -1})
    with pytest.raises(CompileError, match="invalid cluster spec 'x': runtime: "):
        parse_cluster({"name": "x", "devices_per_node": 1, "device_memory_gb": 1,
                       "device_tflops": 1, "memory_bandwidth_gbps": 1,
                       "intra_node_bandwidth_gbps": 1, "runtime": "mpi"})


def test_every_call_pays_dispatch_once_per_replica():
    local = compile_ppo(cpu(2))
    ray = compile_ppo(cpu(2, runtime="ray", call_overhead_us=1000))
    for role in ("rollout", "train"):
        for a, b in zip(local.ops[role], ray.ops[role]):
            if a.kind == "call":  # colocate: every model dp2 on both devices
                assert b.duration - a.duration == pytest.approx(2e-3)
    sync_a = [op for op in local.ops["sync"] if op.kind == "sync"]
    sync_b = [op for op in ray.ops["sync"] if op.kind == "sync"]
    for a, b in zip(sync_a, sync_b):  # 4 driver requests + one import per replica
        assert b.duration - a.duration == pytest.approx(6e-3)


def test_local_cluster_shares_this_machines_cores():
    c = parse_cluster("local:8")
    assert c.host_cores == host_cpu_count()
    assert c.shares_cores == (host_cpu_count() < 8)
    assert parse_cluster("8xH100-80GB").host_cores is None  # GPUs are independent
    two = cpu(6, cores=2)
    assert (two.speed(1), two.speed(2), two.speed(3), two.speed(6)) == \
        (1.0, 1.0, pytest.approx(2 / 3), pytest.approx(1 / 3))


def test_overlapping_ops_slow_each_other_only_while_they_overlap():
    one_core = cpu(2, cores=1)
    # both busy until the short one ends at 2 (half speed each); the long one then runs alone
    assert shared_timeline([Job((0,), 1.0), Job((1,), 2.0)], one_core, {}) == \
        [(0.0, 2.0), (0.0, pytest.approx(3.0))]
    # list order on a device and a predecessor: the third waits for the first
    free: dict[int, float] = {}
    got = shared_timeline([Job((0,), 1.0), Job((1,), 1.0), Job((1,), 1.0, preds=(0,))],
                          one_core, free)
    assert got == [(0.0, 2.0), (0.0, 2.0), (2.0, 3.0)]
    assert free == {0: 2.0, 1: 3.0}
    # three devices on two cores: two thirds of full speed while all three run
    three = shared_timeline([Job((d,), 1.0) for d in range(3)], cpu(3, cores=2), {})
    assert [e for _, e in three] == [pytest.approx(1.5)] * 3


def test_disaggregated_scorers_on_shared_cores_take_longer_one_device_does_not():
    free = compile_ppo(cpu(6), "disaggregate")
    shared = compile_ppo(cpu(6, cores=2), "disaggregate")
    # reference, value and reward score at once on three devices: 2 cores -> 2/3 speed
    assert shared.estimates.role_time["rollout"] > free.estimates.role_time["rollout"]
    scorers = [op for op in shared.ops["rollout"] if op.kind == "call" and op.model in
               ("reference", "value")]
    alone = {op.model: op.duration for op in free.ops["rollout"] if op.kind == "call"}
    for op in scorers:
        assert op.duration > alone[op.model]
    # one device is never slowed: the same estimate with or without sharing
    assert compile_ppo(cpu(1, cores=1)).estimates.iteration_time == \
        compile_ppo(cpu(1)).estimates.iteration_time


def test_measured_costs_get_the_formula_and_keep_the_dispatch_workers_do_not_time():
    seen = []

    def measured(role, op, analytic):  # a profile measuring every op at 1 s
        seen.append((op.kind, analytic))
        return 1.0

    cluster = cpu(2, runtime="ray", call_overhead_us=1000)
    s = compile_schedule(ppo_graphs(), ppo_models(0.01), SYNC, cluster, "colocate", METHODS,
                         runtime_args=ARGS, op_costs=measured)
    formula = compile_ppo(cpu(2))  # the local runtime: no dispatch at all
    calls = [op for op in s.ops["train"] if op.kind == "call"]
    assert calls and all(op.duration == pytest.approx(1.0 + 2e-3) for op in calls)  # dp2
    syncs = [op for op in s.ops["sync"] if op.kind == "sync"]
    assert syncs and all(op.duration == pytest.approx(1.0) for op in syncs)  # driver-timed
    train = [op.duration for op in formula.ops["train"] if op.kind == "call"]
    assert [a for k, a in seen if k == "call"][-len(train):] == pytest.approx(train)
