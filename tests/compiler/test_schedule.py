import pytest

from flowrl.ir.cluster import parse_cluster
from flowrl.compiler.costmodel import call_kind, call_time, sync_time, transfer_time
from flowrl.ir import FLOW_INPUT, Op
from flowrl.compiler.resources import model_resources, repeats
from flowrl.compiler.schedule import timeline

from compiler_helpers import ARGS, SYNC, compile_ppo, make_graph, ppo_graphs, ppo_models


def test_every_node_exactly_once_in_topological_order():
    s = compile_ppo(strategy="disaggregate")
    for role, g in s.graphs.items():
        calls = [o.node for o in s.ops[role] if o.kind == "call"]
        assert calls == [c.id for c in g.calls()]
    assert [(o.src, o.model) for o in s.ops["sync"] if o.kind == "sync"] == \
        [("ppo_policy", "policy"), ("ppo_value", "value")]


def test_op_durations_come_from_the_cost_model():
    s = compile_ppo()
    res = model_resources(ppo_models(7), ppo_graphs(), SYNC)
    cluster = parse_cluster("8xH100-80GB")
    for role, ops in s.ops.items():
        for op in ops:
            assert op.devices, op
            if op.kind == "call":
                kind = call_kind(s.graphs[role].call(op.node), role, res[op.model])
                want = call_time(kind, res[op.model], s.placement[op.model], ARGS, cluster)
            elif op.kind == "sync":
                want = sync_time(res[op.src], s.placement[op.src], res[op.model],
                                 s.placement[op.model], cluster)
                assert op.bytes == res[op.model].weight_bytes * s.placement[op.model].dp
            else:
                want = transfer_time(op.bytes // len(op.devices), cluster)
            assert op.duration == pytest.approx(want)


def test_ops_on_disjoint_devices_overlap():
    g = make_graph("rollout", ("a.forward_step", (FLOW_INPUT,)),
                   ("b.forward_step", ("a.forward_step",)), ("c.forward_step", ("a.forward_step",)))
    ops = [Op("call", "a", node="a.forward_step", devices=(0, 1)),
           Op("call", "b", node="b.forward_step", devices=(0,)),
           Op("call", "c", node="c.forward_step", devices=(1,))]
    assert timeline(ops, [2.0, 3.0, 1.0], g) == 5.0
    assert [o.start for o in ops] == [0.0, 2.0, 2.0]  # b and c run side by side after a
    ops[2].devices = (0,)
    assert timeline(ops, [2.0, 3.0, 1.0], g) == 6.0  # sharing a device serialises them


def test_iteration_time_counts_repeats():
    s = compile_ppo()
    e = s.estimates
    assert e.repeats == repeats(ARGS) == {"rollout": 8, "train": 8, "sync": 1}
    want = sum(e.role_time[r] + (n - 1) * e.role_repeat_time[r] for r, n in e.repeats.items())
    assert e.iteration_time == pytest.approx(want)
    for role, ops in s.ops.items():
        assert e.role_time[role] == pytest.approx(max(o.start + o.duration for o in ops))
        assert len(e.repeat_ops[role]) == len(ops)
    assert e.sync_bytes == sum(o.bytes for o in s.ops["sync"] if o.kind == "sync")
    times = [p.time for p in s.memory.timeline]
    assert times == sorted(times) and times[0] > 0  # entry transfers come first


def test_disaggregated_scoring_runs_in_parallel():
    s = compile_ppo(strategy="disaggregate")
    ops = {o.node: o for o in s.ops["rollout"] if o.kind == "call"}
    ref, val = ops["reference.forward_step"], ops["value.forward_step"]
    assert not set(ref.devices) & set(val.devices)
    assert ref.start == val.start == pytest.approx(ops["policy.forward_step"].start +
                                                   ops["policy.forward_step"].duration)
