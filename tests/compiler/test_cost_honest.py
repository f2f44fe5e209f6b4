"""Issue 14 item 2: the cost and memory model sees grouped-query attention, tensor-parallel
communication, host memory per node, prefill vs decode, CPU-side rule rewards and shapes from
config.json."""

import json

import pytest

from flowrl.compiler import compile_schedule
from flowrl.compiler.costmodel import (allreduce_time, call_time, decode_step_time,
                                       decode_time, forward_time, kv_cache_bytes,
                                       prefill_time, tp_comm_time, train_time)
from flowrl.compiler.memory import memory
from flowrl.compiler.resources import DEFAULT_CPU_SECONDS, model_resources
from flowrl.config import ModelConfig, RuntimeArgs
from flowrl.errors import CompileError, OutOfMemoryAtCompileError
from flowrl.ir import Mesh
from flowrl.ir.cluster import parse_cluster

from compiler_helpers import ARGS, METHODS, PPO_NAMES, SYNC, ppo_graphs

A100_40 = parse_cluster("8xA100-40GB")
H100 = parse_cluster("8xH100-80GB")
TP8 = Mesh(tuple(range(8)), 8, 1, 1)
#: examples/ppo_70b_plan.yaml's sizes and batches.
PLAN_ARGS = RuntimeArgs(sample_per_episode=512, generation_batch_size=32,
                        train_global_batch_size=64, train_micro_batch_size=2, progress=False)


def llama3_70b(gqa: bool = True, **extra) -> dict:
    heads = dict(num_heads=64, num_kv_heads=8 if gqa else 64)
    return dict(num_params=70_000_000_000, num_layers=80, hidden_size=8192, vocab_size=128256,
                tensor_model_parallel_size=8, shape=heads, **extra)


def llama3_8b(**extra) -> dict:
    return dict(num_params=8_000_000_000, num_layers=32, hidden_size=4096, vocab_size=128256,
                tensor_model_parallel_size=2, shape=dict(num_heads=32, num_kv_heads=8), **extra)


def plan_70b(gqa: bool = True) -> dict[str, ModelConfig]:
    """examples/ppo_70b_plan.yaml with Llama-3's 8 KV heads (or full multi-head attention)."""
    big = {"policy": llama3_70b(gqa, max_seq_len=2048, max_new_tokens=1024),
           "reference": llama3_70b(gqa), "ppo_policy": llama3_70b(gqa)}
    return {n: ModelConfig(**big.get(n, llama3_8b())) for n in PPO_NAMES}


def test_gqa_kv_cache_of_a_llama3_70b_plan():
    res = model_resources(plan_70b(), ppo_graphs(), SYNC)["policy"]
    mha = model_resources(plan_70b(gqa=False), ppo_graphs(), SYNC)["policy"]
    # 32 sequences x 2048 tokens x 80 layers x K,V x 8 heads x 128 x 2 bytes / 8 ranks
    assert kv_cache_bytes(res, TP8, 32) == pytest.approx(32 * 2048 * 80 * 2 * 1 * 128 * 2)
    assert kv_cache_bytes(res, TP8, 32) / 1e9 == pytest.approx(2.68, abs=0.01)
    assert kv_cache_bytes(mha, TP8, 32) / 1e9 == pytest.approx(21.5, abs=0.05)
    # With more ranks than KV heads each rank keeps one head: GQA stops shrinking.
    tp16 = Mesh(tuple(range(16)), 16, 1, 1)
    assert kv_cache_bytes(res, tp16, 32) == kv_cache_bytes(res, TP8, 32)


def test_gqa_makes_the_70b_rollout_fit_on_a100_40gb():
    """The generate moment fits 36 GB usable with 8 KV heads and not without; training 70B
    still does not fit 8 x 40 GB (weights + grads alone are 35 GB per device)."""
    for gqa, fits in ((True, True), (False, False)):
        models = plan_70b(gqa)
        res = model_resources(models, ppo_graphs(), SYNC)
        meshes = {n: Mesh(tuple(range(8)), r.tp, 1, 8 // r.tp) for n, r in res.items()}
        mem = memory(ppo_graphs(), SYNC, res, meshes, A100_40, PLAN_ARGS)
        gen = next(m for m in mem.moments if m.op.node == "policy.forward_step")
        need = mem.items[("policy", "weights")].per_device + gen.transient[0]
        assert (need <= A100_40.capacity_bytes) is fits
    with pytest.raises(OutOfMemoryAtCompileError, match="train op 'ppo_policy.train_step'"):
        compile_schedule(ppo_graphs(), plan_70b(), SYNC, A100_40, methods=METHODS,
                         runtime_args=PLAN_ARGS)
    with pytest.raises(OutOfMemoryAtCompileError, match="rollout op 'policy.forward_step'"):
        compile_schedule(ppo_graphs(), plan_70b(gqa=False), SYNC, A100_40, methods=METHODS,
                         runtime_args=PLAN_ARGS)


def test_tensor_parallel_all_reduces():
    res = model_resources(plan_70b(), ppo_graphs(), SYNC)["reference"]
    tokens = 32 * 2048
    one = allreduce_time(tokens * 8192 * 2, TP8.devices, H100)
    assert one == pytest.approx(2 * 7 / 8 * tokens * 8192 * 2 / 450e9 + 10e-6)
    assert tp_comm_time(res, TP8, tokens, H100) == pytest.approx(2 * 80 * one)
    assert tp_comm_time(res, TP8, tokens, H100, passes=2) == pytest.approx(4 * 80 * one)
    assert tp_comm_time(res, Mesh(tuple(range(8)), 1, 1, 8), tokens, H100) == 0.0
    # a TP group spanning two nodes all-reduces over the network: much slower
    two = parse_cluster("2x8xH100-80GB")
    wide = Mesh(tuple(range(16)), 16, 1, 1)
    assert tp_comm_time(res, wide, tokens, two) > 5 * tp_comm_time(res, TP8, tokens, two)
    # the forward pays it on top of its FLOPs
    flops = 2 * res.num_params * 32 * 2048 / (8 * H100.flops)
    assert forward_time(res, TP8, 32, 2048, H100) == pytest.approx(
        flops + tp_comm_time(res, TP8, tokens, H100))


def test_train_time_counts_tp_all_reduces():
    res = model_resources(plan_70b(), ppo_graphs(), SYNC)["ppo_policy"]
    tp8 = train_time(res, TP8, PLAN_ARGS, H100)
    comm = tp_comm_time(res, TP8, 64 * 2048, H100, passes=2)
    assert comm > 0.5  # 80 layers x 4 all-reduces of 64 x 2048 x 8192 x 2 bytes
    no_comm = H100.model_copy(update={"intra_node_bandwidth_gbps": 1e9,
                                      "collective_latency_us": 0.0})
    assert tp8 - train_time(res, TP8, PLAN_ARGS, no_comm) == pytest.approx(comm, rel=1e-6)


def test_prefill_is_compute_bound_decode_memory_bound():
    res = model_resources(plan_70b(), ppo_graphs(), SYNC)["policy"]
    pre = prefill_time(res, TP8, 32, H100)
    flops = 2 * res.num_params * 32 * res.prompt_len / (8 * H100.flops)
    assert pre >= flops and pre < 1.5 * flops
    step = decode_step_time(res, TP8, 32, 1536, H100)
    read = (res.weight_bytes / 8 + kv_cache_bytes(res, TP8, 32, 1536)) / H100.memory_bandwidth
    # memory-bound: reading the weights shard + KV dominates; 160 small all-reduces on top
    assert step == pytest.approx(read + tp_comm_time(res, TP8, 32, H100, layers=80))
    assert read > 2 * res.num_params * 32 / 8 / H100.flops
    assert decode_time(res, TP8, 32, H100) == pytest.approx(1024 * step)


def test_decode_bigger_batches_cost_little_more_per_token():
    res = model_resources(plan_70b(), ppo_graphs(), SYNC)["policy"]
    small, big = decode_step_time(res, TP8, 8, 1536, H100), \
        decode_step_time(res, TP8, 64, 1536, H100)
    assert big < 2 * small  # 8x the sequences, < 2x the time: weights are read once per step


def _plan_yaml():
    import yaml

    from compiler_helpers import ROOT
    cfg = yaml.safe_load((ROOT / "examples" / "ppo_70b_plan.yaml").read_text())
    return {n: ModelConfig(**m) for n, m in cfg["models"].items()}


def test_host_memory_per_node_bounds_offloading():
    from flowrl.errors import HostMemoryError

    ok = compile_schedule(ppo_graphs(), _plan_yaml(), SYNC, H100, methods=METHODS,
                          runtime_args=PLAN_ARGS)
    mem = ok.memory
    assert H100.host_memory_gb == 2048 and mem.host_capacity == int(2048e9 * 0.8)
    assert 1.0e12 < mem.host_peak[0] <= mem.host_capacity  # the 70B trainer's state, offloaded
    assert mem.host_models[0]["ppo_policy"] >= 840e9  # at least its optimizer state
    assert sum(mem.host_models[0].values()) == mem.host_peak[0]
    small = H100.model_copy(update={"host_memory_gb": 1000.0})
    with pytest.raises(HostMemoryError, match=r"host memory of node 0 overflows at .* op "
                                              r"'.*': 1\.\d+ TB of offloaded state > 800 GB "
                                              r"usable .*offloaded there: .*ppo_policy \d"):
        compile_schedule(ppo_graphs(), _plan_yaml(), SYNC, small, methods=METHODS,
                         runtime_args=PLAN_ARGS)
    # the catalogue's figure is for an 8-device server; virtual devices are not checked
    assert parse_cluster("4xA100-40GB").host_memory_gb == 512
    assert parse_cluster("local:2").host_capacity_bytes == 0


def test_rule_reward_is_planned_without_a_size():
    models = {n: ModelConfig(**llama3_8b()) for n in PPO_NAMES}
    models["reward"] = ModelConfig()  # a rule: no shape, no checkpoint
    s = compile_schedule(ppo_graphs(), models, SYNC, H100, methods=METHODS, runtime_args=ARGS)
    res = model_resources(models, ppo_graphs(), SYNC)["reward"]
    assert res.weightless and res.weight_bytes == 0
    assert s.memory.state["reward"] == {}  # no device state, nothing to offload
    assert not any(op.model == "reward" for ops in s.ops.values() for op in ops
                   if op.kind in ("offload", "onload"))
    call = next(op for op in s.ops["rollout"] if op.node == "reward.forward_step")
    dp = s.placement["reward"].dp
    assert call.duration == pytest.approx(DEFAULT_CPU_SECONDS * -(-128 // dp))
    models["reward"] = ModelConfig(cpu_seconds_per_sample=0.01)
    slow = compile_schedule(ppo_graphs(), models, SYNC, H100, methods=METHODS,
                            runtime_args=ARGS)
    call = next(op for op in slow.ops["rollout"] if op.node == "reward.forward_step")
    assert call.duration == pytest.approx(0.01 * -(-128 // dp))
    # a measured time (a profile's op_costs) replaces the per-sample estimate
    measured = compile_schedule(ppo_graphs(), models, SYNC, H100, methods=METHODS,
                                runtime_args=ARGS,
                                op_costs=lambda role, op, d: 3.0 if op.node ==
                                "reward.forward_step" else d)
    call = next(op for op in measured.ops["rollout"] if op.node == "reward.forward_step")
    assert call.duration == 3.0


def test_a_trainer_without_a_size_is_still_an_error():
    models = {n: ModelConfig(**llama3_8b()) for n in PPO_NAMES}
    models["ppo_value"] = ModelConfig()
    with pytest.raises(CompileError, match="model 'ppo_value' has no size: set "
                                           "models.ppo_value.num_params .* must not train"):
        model_resources(models, ppo_graphs(), SYNC)


def test_config_json_gives_the_shape_and_the_parameter_count(tmp_path):
    hf = dict(hidden_size=4096, num_hidden_layers=32, vocab_size=128256,
              num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
              hidden_act="silu", tie_word_embeddings=False, torch_dtype="bfloat16")
    (tmp_path / "config.json").write_text(json.dumps(hf))
    m = ModelConfig(model_path=str(tmp_path))
    assert m.shape.num_params == 8_030_261_248  # Llama-3-8B's published count
    assert (m.shape.num_heads, m.shape.num_kv_heads) == (32, 8)
    assert ModelConfig(model_path=str(tmp_path), num_params=8_000_000_000).shape.num_params \
        == 8_000_000_000  # a written (rounded) count wins
    res = model_resources({n: ModelConfig(model_path=str(tmp_path)) for n in PPO_NAMES},
                          ppo_graphs(), SYNC)["policy"]
    assert res.kv_bytes_per_token_per_rank(1) == 2 * 32 * 8 * 128 * 2


def test_async_steady_state_is_built_from_the_honest_times():
    from flowrl.compiler.pipelining import role_total

    args = ARGS.model_copy(update={"max_staleness": 1, "generation_batch_size": 32})
    models = {n: ModelConfig(**llama3_8b()) for n in PPO_NAMES}
    two = parse_cluster("2x8xH100-80GB")
    fast_links = two.model_copy(update={"intra_node_bandwidth_gbps": 1e9,
                                        "collective_latency_us": 0.0})
    plans = [compile_schedule(ppo_graphs(), models, SYNC, c, "disaggregate", methods=METHODS,
                              runtime_args=args) for c in (two, fast_links)]
    for s in plans:
        est, plan = s.estimates, s.pipeline
        r, t, y = (role_total(est, k) for k in ("rollout", "train", "sync"))
        assert plan.overlap and plan.steady_state_time == pytest.approx(max(r, t) + y)
    # the TP2 models' all-reduces reach the steady state
    assert plans[0].pipeline.steady_state_time > plans[1].pipeline.steady_state_time


def test_a_rule_reward_runs_on_the_host_beside_the_devices():
    models = {n: ModelConfig(**llama3_8b()) for n in PPO_NAMES}
    models["reward"] = ModelConfig(cpu_seconds_per_sample=0.01)
    s = compile_schedule(ppo_graphs(), models, SYNC, H100, methods=METHODS, runtime_args=ARGS)
    ops = {op.node: op for op in s.ops["rollout"] if op.kind == "call"}
    reward = ops["reward.forward_step"]
    assert reward.devices == ()  # holds no device: device work of the next run may overlap
    ready = max(ops[n].start + ops[n].duration for n in
                ("policy.forward_step", "reference.forward_step", "value.forward_step"))
    assert reward.start == pytest.approx(ready)


def test_host_seconds_add_to_a_model_with_weights():
    """An agent rollout's environment steps (``cpu_seconds_per_sample`` on a generating
    model) add to its device time: the call waits for them."""
    res = model_resources({n: ModelConfig(**llama3_8b()) for n in PPO_NAMES}, ppo_graphs(),
                          SYNC)["policy"]
    waits = model_resources({n: ModelConfig(**llama3_8b(cpu_seconds_per_sample=0.5))
                             for n in PPO_NAMES}, ppo_graphs(), SYNC)["policy"]
    mesh = Mesh(tuple(range(8)), 2, 1, 4)
    assert call_time("generate", waits, mesh, ARGS, H100) == pytest.approx(
        call_time("generate", res, mesh, ARGS, H100) + 0.5 * 128 / 4)
