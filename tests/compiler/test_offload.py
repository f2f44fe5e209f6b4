import pytest

from flowrl.compiler import check_residency
from flowrl.ir.cluster import ClusterSpec, parse_cluster
from flowrl.compiler.colocation import colocation_units
from flowrl.compiler.memory import memory
from flowrl.compiler.offload import entry_transfer_bytes, offload
from flowrl.compiler.placement import colocate
from flowrl.compiler.resources import model_resources
from flowrl.config import ModelConfig, RuntimeArgs
from flowrl.errors import OutOfMemoryAtCompileError

from compiler_helpers import ARGS, SYNC, compile_ppo, ppo_graphs, ppo_models, transfers

TINY_ARGS = RuntimeArgs(sample_per_episode=64, generation_batch_size=16,
                        train_global_batch_size=16, train_micro_batch_size=1, progress=False)
SMALL_ARGS = RuntimeArgs(sample_per_episode=512, generation_batch_size=64,
                         train_global_batch_size=64, train_micro_batch_size=2, progress=False)


def plan(models, cluster="8xH100-80GB", args=ARGS):
    graphs, spec = ppo_graphs(), parse_cluster(cluster)
    res = model_resources(models, graphs, SYNC)
    mem = memory(graphs, SYNC, res, colocate(colocation_units(res), res, spec), spec, args)
    return mem, offload(mem, res)


def test_no_transfers_when_everything_fits():
    mem, p = plan(ppo_models(1))
    assert max(mem.peak_before) <= mem.capacity
    assert all(not transfers(ops) for ops in p.ops.values())
    assert p.after == mem.before and p.residency[0] == frozenset(mem.items)


def test_overflow_is_fixed_and_every_device_fits():
    s = compile_ppo(ppo_models(7), args=SMALL_ARGS)
    assert max(s.memory.peak_before) > s.memory.capacity[0]
    assert max(s.memory.peak_after) <= s.memory.capacity[0]
    assert any(transfers(ops) for ops in s.ops.values())
    check_residency(s)


def test_transfers_happen_at_phase_boundaries():
    # Rollout models and their KV cache fit together: the rollout moves state only on entry,
    # so its repeats (8 per iteration) move nothing; trainer state is evicted instead.
    s = compile_ppo(ppo_models(7), args=SMALL_ARGS)
    rollout = s.ops["rollout"]
    first_call = next(i for i, o in enumerate(rollout) if o.kind == "call")
    assert transfers(rollout, first_call) == []
    assert {m for _, m, _ in transfers(rollout)} >= {"ppo_policy"}
    assert s.estimates.role_repeat_time["rollout"] < s.estimates.role_time["rollout"]


def test_entry_ops_are_no_ops_when_a_role_repeats():
    mem, p = plan(ppo_models(7), args=SMALL_ARGS)
    assert sum(entry_transfer_bytes(p, mem, "rollout", p.exit_state["rollout"])) == 0
    assert sum(entry_transfer_bytes(p, mem, "rollout", p.exit_state["sync"])) > 0


def test_never_raises_out_of_memory_naming_device_moment_models():
    with pytest.raises(OutOfMemoryAtCompileError,
                       match=r"out of memory at compile time on device 0 at rollout op "
                             r"'policy\.forward_step': needs .* GB but the device holds 72 GB; "
                             r"resident models: policy \(offload: never; weights 14 GB\); "
                             r"reference .*ppo_policy \(offload: never; weights 14 GB, grads "
                             r"14 GB, optimizer 10\.5 GB\).* Models reference, value, reward, "
                             r"ppo_policy, ppo_value may not be offloaded"):
        compile_ppo(ppo_models(7, offload="never"), args=SMALL_ARGS)


def test_op_alone_too_big_says_so():
    models = ppo_models(7)
    models["policy"] = ModelConfig(**{**models["policy"].model_dump(), "max_seq_len": 32768})
    with pytest.raises(OutOfMemoryAtCompileError, match=r"The op alone does not fit"):
        compile_ppo(models, strategy="colocate")


def test_forced_weights_policy_offloads_when_idle():
    models = ppo_models(1)
    models["reference"] = ModelConfig(**{**models["reference"].model_dump(),
                                         "offload": "weights"})
    s = compile_ppo(models)
    roll = s.ops["rollout"]
    ref_call = next(i for i, o in enumerate(roll) if o.node == "reference.forward_step")
    assert roll[ref_call - 1].kind == "onload" and roll[ref_call - 1].model == "reference"
    assert ("offload", "reference", ("weights",)) in transfers(roll, ref_call)
    check_residency(s)


def test_streams_the_optimizer_of_a_trainer_too_big_for_its_devices():
    models = ppo_models(7)
    s = compile_ppo(models, cluster=ClusterSpec.local(1, memory_gb=80), args=TINY_ARGS)
    train = s.ops["train"]
    i = next(i for i, o in enumerate(train) if o.node == "ppo_policy.train_step")
    before, after = train[i - 1], train[i + 1]
    assert (before.kind, before.what, before.streamed) == ("onload", ("optimizer",), True)
    assert (after.kind, after.what, after.streamed) == ("offload", ("optimizer",), True)
    assert max(s.memory.peak_after) <= s.memory.capacity[0]
    check_residency(s)


def test_optimizer_never_streamed_when_policy_forbids():
    models = ppo_models(7)
    models["ppo_policy"] = ModelConfig(**{**models["ppo_policy"].model_dump(),
                                          "offload": "weights"})
    with pytest.raises(OutOfMemoryAtCompileError,
                       match="device 0 at rollout op .policy.* Models ppo_policy may not be"):
        compile_ppo(models, cluster=ClusterSpec.local(1, memory_gb=80), args=TINY_ARGS)


def test_eval_flow_is_planned_but_not_counted_in_the_iteration():
    from flowrl.compiler import compile_schedule
    from flowrl.ir import FLOW_INPUT

    from compiler_helpers import METHODS, make_graph

    graphs = ppo_graphs()
    graphs["eval"] = make_graph("eval", ("policy.forward_step", (FLOW_INPUT,)),
                                ("reward.forward_step", ("policy.forward_step",)))
    s = compile_schedule(graphs, ppo_models(7), SYNC, "8xH100-80GB", "colocate", METHODS,
                         runtime_args=SMALL_ARGS)
    assert [o.node for o in s.ops["eval"] if o.kind == "call"] == \
        ["policy.forward_step", "reward.forward_step"]
    check_residency(s)  # includes eval -> rollout transitions
    e = s.estimates
    assert "eval" in e.role_time and "eval" not in e.repeats
    assert e.iteration_time == pytest.approx(
        sum(e.role_time[r] + (n - 1) * e.role_repeat_time[r] for r, n in e.repeats.items()))
