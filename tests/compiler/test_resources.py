import pytest

from flowrl.compiler.resources import model_resources, repeats
from flowrl.config import ModelConfig, RuntimeArgs
from flowrl.errors import CompileError

from compiler_helpers import ppo_graphs, ppo_models


def test_sizes_from_num_params_and_from_shape():
    models = ppo_models(7)
    models["reward"] = ModelConfig(num_layers=2, hidden_size=64, vocab_size=100)
    res = model_resources(models, ppo_graphs())
    assert res["reward"].num_params == 12 * 2 * 64 * 64 + 100 * 64
    p = res["ppo_policy"]
    assert p.trainable and not res["policy"].trainable  # inferred from train_step calls
    assert p.weight_bytes == 7e9 * 2 and p.grad_bytes == 7e9 * 2
    assert p.optimizer_bytes == 7e9 * 12  # fp32 master + Adam moments
    assert p.kv_bytes_per_token == 2 * 32 * 4096 * 2


def test_who_generates():
    models = ppo_models(7)
    models["reward"] = ModelConfig(**{**models["reward"].model_dump(), "max_new_tokens": 64})
    res = model_resources(models, ppo_graphs(), [("ppo_policy", "policy")])
    assert [n for n, r in res.items() if r.generates] == ["policy", "reward"]
    assert not any(r.generates for r in model_resources(ppo_models(7), ppo_graphs()).values())


def test_shape_guessed_from_num_params():
    models = ppo_models(7)
    models["policy"] = ModelConfig(num_params=7_000_000_000)
    r = model_resources(models, ppo_graphs())["policy"]
    assert 3500 <= r.hidden_size <= 4500 and 20 <= r.num_layers <= 45
    assert r.max_seq_len == 2048 and r.max_new_tokens == 1024  # documented defaults


def test_missing_size_names_the_field():
    models = ppo_models(7)
    models["value"] = ModelConfig(num_layers=4)
    with pytest.raises(CompileError, match=r"models\.value\.num_params"):
        model_resources(models, ppo_graphs())


def test_sequence_lengths_are_shared_by_the_flow():
    models = ppo_models(7)
    models["policy"] = ModelConfig(**{**models["policy"].model_dump(), "max_seq_len": 4096,
                                      "max_new_tokens": 512})
    res = model_resources(models, ppo_graphs())
    assert res["reference"].max_seq_len == 4096 and res["policy"].prompt_len == 3584


def test_repeats():
    a = RuntimeArgs(sample_per_episode=64, generation_batch_size=16, train_global_batch_size=32,
                    train_micro_batch_size=8, num_training_epoch=2)
    assert repeats(a) == {"rollout": 4, "train": 4, "sync": 1}
