import pytest

from flowrl.ir.cluster import parse_cluster
from flowrl.compiler.costmodel import (call_kind, decode_time, forward_time, sync_time,
                                       train_time, transfer_time)
from flowrl.ir import FLOW_INPUT, CallNode, Mesh
from flowrl.compiler.resources import model_resources

from compiler_helpers import ARGS, SYNC, ppo_graphs, ppo_models

C8 = parse_cluster("8xH100-80GB")
RES = model_resources(ppo_models(7), ppo_graphs(), SYNC)


def test_call_kinds():
    policy, reference = RES["policy"], RES["reference"]
    assert policy.generates and not reference.generates  # policy is a sync destination
    entry = CallNode("p.forward_step", "p", "forward_step", (FLOW_INPUT,))
    assert call_kind(entry, "rollout", policy) == "generate"
    assert call_kind(entry, "rollout", reference) == "forward"  # scores prompts (offline DPO)
    assert call_kind(entry, "train", policy) == "forward"
    assert call_kind(CallNode("r.forward_step", "r", "forward_step", ("p.forward_step",)),
                     "rollout", policy) == "forward"
    assert call_kind(CallNode("t.train_step", "t", "train_step", (FLOW_INPUT,)),
                     "train", RES["ppo_policy"]) == "train"
    assert call_kind(CallNode("p.generate", "p", "generate", ("x",)), "train",
                     reference) == "generate"


def test_decode_is_memory_bandwidth_bound():
    r, mesh = RES["policy"], Mesh(tuple(range(8)), 1, 1, 8)
    b = 128 // 8
    step_bytes = r.weight_bytes + b * r.kv_bytes_per_token * (r.prompt_len + r.max_new_tokens / 2)
    assert decode_time(r, mesh, 128, C8) == pytest.approx(
        r.max_new_tokens * step_bytes / C8.memory_bandwidth)
    # more data parallelism barely helps: the weights are read every step either way
    half = decode_time(r, Mesh(tuple(range(4)), 1, 1, 4), 128, C8)
    assert half < 1.5 * decode_time(r, mesh, 128, C8)


def test_forward_is_compute_bound_for_big_batches():
    r, mesh = RES["reference"], Mesh(tuple(range(8)), 1, 1, 8)
    assert forward_time(r, mesh, 128, 2048, C8) == pytest.approx(
        2 * r.num_params * 128 * 2048 / (8 * C8.flops))


def test_train_time_terms():
    r = RES["ppo_policy"]
    one = train_time(r, Mesh((0,), 1, 1, 1), ARGS, C8)
    compute = 6 * r.num_params * ARGS.train_global_batch_size * r.max_seq_len / C8.flops
    update = 2 * (r.weight_bytes + r.grad_bytes + r.optimizer_bytes) / C8.memory_bandwidth
    assert one == pytest.approx(compute + update)
    eight = train_time(r, Mesh(tuple(range(8)), 1, 1, 8), ARGS, C8)
    allreduce = 2 * 7 / 8 * r.grad_bytes / C8.link_bandwidth(range(8))
    assert eight == pytest.approx(compute / 8 + 2 * (r.weight_bytes + r.grad_bytes +
                                                      r.optimizer_bytes / 8)
                                  / C8.memory_bandwidth + allreduce)


def test_transfer_and_sync_times():
    assert transfer_time(50e9, C8) == pytest.approx(50e9 / C8.host_bandwidth)
    src, dst = RES["ppo_policy"], RES["policy"]
    same = Mesh(tuple(range(8)), 1, 1, 8)
    assert sync_time(src, same, dst, same, C8) == pytest.approx(2 * 14e9 / C8.memory_bandwidth)
    other = sync_time(src, Mesh((0, 1), 1, 1, 2), dst, Mesh((2, 3), 1, 1, 2), C8)
    assert other == pytest.approx(14e9 / C8.link_bandwidth((0, 1, 2, 3)))
    cross = sync_time(src, Mesh((0,), 1, 1, 1), dst, Mesh((8,), 1, 1, 1),
                      parse_cluster("2x8xH100-80GB"))
    assert cross > other  # across nodes the network is slower than NVLink
