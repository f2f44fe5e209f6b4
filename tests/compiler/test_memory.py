import math

from flowrl.ir.cluster import parse_cluster
from flowrl.compiler.memory import SYNC_NEEDS_ALL_STATE, memory, state_bytes, transient_bytes
from flowrl.compiler.placement import colocate
from flowrl.compiler.colocation import colocation_units
from flowrl.compiler.resources import model_resources

from compiler_helpers import ARGS, SYNC, ppo_graphs, ppo_models

C8 = parse_cluster("8xH100-80GB")


def build(models=None, cluster=C8, args=ARGS):
    graphs = ppo_graphs()
    res = model_resources(models or ppo_models(7), graphs, SYNC)
    meshes = colocate(colocation_units(res), res, cluster)
    return memory(graphs, SYNC, res, meshes, cluster, args), res, meshes


def test_state_bytes_per_device():
    mem, res, meshes = build()
    assert mem.items[("policy", "weights")].per_device == 14e9  # tp=1: the whole model
    assert ("policy", "grads") not in mem.items
    st = state_bytes(res["ppo_policy"], meshes["ppo_policy"])
    assert st == {"weights": 14e9, "grads": 14e9, "optimizer": math.ceil(84e9 / 8)}  # ZeRO-1


def test_transient_formulas():
    mem, res, meshes = build()
    r, m = res["policy"], meshes["policy"]
    b = ARGS.generation_batch_size // m.dp
    kv = b * r.max_seq_len * 2 * r.num_layers * r.hidden_size * 2
    assert transient_bytes("generate", r, m, ARGS) == int(
        kv + 4 * b * r.prompt_len * r.hidden_size * 2 + 4 * b * r.vocab_size)
    assert transient_bytes("forward", r, m, ARGS) == int(
        4 * b * r.max_seq_len * r.hidden_size * 2 + 4 * b * r.max_seq_len * r.vocab_size)
    micro = math.ceil(ARGS.train_micro_batch_size / m.dp)
    assert transient_bytes("train", r, m, ARGS) == int(
        34 * r.max_seq_len * micro * r.hidden_size * r.num_layers * 2 / 2
        + 8 * micro * r.max_seq_len * r.vocab_size)


def test_moments_and_before_offload_timeline():
    mem, res, _ = build()
    labels = [(m.role, m.op.label()) for m in mem.moments]
    assert labels == [("rollout", "policy.forward_step"), ("rollout", "reference.forward_step"),
                      ("rollout", "value.forward_step"), ("rollout", "reward.forward_step"),
                      ("train", "ppo_policy.train_step"), ("train", "ppo_value.train_step"),
                      ("sync", "sync ppo_policy -> policy"), ("sync", "sync ppo_value -> value")]
    assert [m.kind for m in mem.moments[:5]] == ["generate", "forward", "forward", "forward",
                                                "train"]
    everything = sum(it.per_device for it in mem.items.values())
    for t, m in enumerate(mem.moments):
        assert mem.before[t][0] == everything + m.transient[0]
    assert mem.peak_before == [max(u[d] for u in mem.before) for d in range(8)]
    sync_need = mem.moments[6].need
    assert ("policy", "weights") in sync_need
    assert (("ppo_policy", "optimizer") in sync_need) == SYNC_NEEDS_ALL_STATE
    assert mem.repeats == {"rollout": 8, "train": 8, "sync": 1}
