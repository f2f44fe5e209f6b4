"""Hugging Face TorchModule path: local load, generation, fused log-probs, value head, sync."""

from __future__ import annotations

import time

import pytest
import torch

from _backend_utils import need, tiny_llama_dir  # noqa: F401  (fixture)

pytestmark = pytest.mark.backend


@pytest.fixture(autouse=True)
def _hf():
    need("transformers", "hf")


def _prompts(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc.input_ids, enc.attention_mask


def test_load_local_and_left_padding(tiny_llama_dir):
    from flowrl.models import hf

    tok = hf.load_tokenizer(tiny_llama_dir)
    assert tok.padding_side == "left"
    ids, mask = _prompts(tok, ["ab", "hello wo"])
    assert ids[0, 0] == tok.pad_token_id and mask[0, 0] == 0 and mask[:, -1].all()
    assert tok.decode(tok("hello wo").input_ids) == "hello wo"
    with pytest.raises(FileNotFoundError, match="local directories only"):
        hf.load_causal_lm(tiny_llama_dir / "nope")


def test_greedy_left_padded_matches_unpadded(tiny_llama_dir):
    from flowrl.models import hf

    tok, model = hf.load_tokenizer(tiny_llama_dir), hf.load_causal_lm(tiny_llama_dir)
    texts = ["ab", "hello wo", "xyz"]
    ids, mask = _prompts(tok, texts)
    out = hf.generate(model, ids, mask, 10, tok.eos_token_id, tok.pad_token_id, do_sample=False)
    assert out["tokens"].shape == (3, ids.shape[1] + 10)
    assert out["response_mask"].shape == (3, 10)
    for i, t in enumerate(texts):
        one = torch.tensor([tok(t).input_ids])
        single = hf.generate(model, one, torch.ones_like(one), 10, tok.eos_token_id,
                             tok.pad_token_id, do_sample=False)
        assert single["tokens"][0, one.shape[1]:].tolist() == out["tokens"][i, ids.shape[1]:].tolist()


def test_sampling_eos_and_logprobs(tiny_llama_dir):
    from flowrl.models import hf

    tok, model = hf.load_tokenizer(tiny_llama_dir), hf.load_causal_lm(tiny_llama_dir)
    ids, mask = _prompts(tok, ["ab", "hello wo"] * 8)
    torch.manual_seed(0)
    out = hf.generate(model, ids, mask, 12, tok.eos_token_id, tok.pad_token_id,
                      temperature=0.8, top_p=0.9)
    resp, rmask = out["tokens"][:, ids.shape[1]:], out["response_mask"]
    # EOS is kept and masked in; everything after it is padding, masked out
    for row, m in zip(resp.tolist(), rmask.tolist()):
        if tok.eos_token_id in row:
            k = row.index(tok.eos_token_id)
            assert m[:k + 1] == [1] * (k + 1) and m[k + 1:] == [0] * (len(m) - k - 1)
            assert all(t == tok.pad_token_id for t in row[k + 1:])
        else:
            assert all(m)
    torch.manual_seed(0)
    again = hf.generate(model, ids, mask, 12, tok.eos_token_id, tok.pad_token_id,
                        temperature=0.8, top_p=0.9)
    assert torch.equal(again["tokens"], out["tokens"])
    # log-probs through the kernel dispatcher == plain log_softmax of the logits
    lp = hf.response_logprobs(model, out["tokens"], out["attention_mask"], ids.shape[1], 0.8)
    logits = hf.sequence_logits(model, out["tokens"], out["attention_mask"])[:, ids.shape[1] - 1:-1]
    ref = torch.log_softmax(logits.float() / 0.8, -1).gather(-1, resp[..., None]).squeeze(-1)
    torch.testing.assert_close(lp, ref, rtol=1e-5, atol=1e-5)
    assert lp.shape == rmask.shape


def test_value_head_save_load(tiny_llama_dir, tmp_path):
    from flowrl.models import hf

    tok = hf.load_tokenizer(tiny_llama_dir)
    v = hf.HFValueModel.from_pretrained(tiny_llama_dir, head_seed=1)
    ids, mask = _prompts(tok, ["ab", "hello wo"])
    vals = hf.response_values(v, ids, mask, 2)
    assert vals.shape == (2, ids.shape[1] - 2)
    scores = hf.sequence_scores(v, ids, mask)
    assert scores.shape == (2,)
    with torch.no_grad():
        v.value_head.weight.add_(1.0)
    v.save_pretrained(tmp_path / "value")
    back = hf.HFValueModel.from_pretrained(tmp_path / "value")
    torch.testing.assert_close(hf.sequence_scores(back, ids, mask), hf.sequence_scores(v, ids, mask))


def test_fresh_value_head_depends_on_head_seed_only(tiny_llama_dir):
    from flowrl.models import hf

    heads = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        heads.append(hf.HFValueModel.from_pretrained(tiny_llama_dir, head_seed=7).value_head)
    assert torch.equal(heads[0].weight, heads[1].weight)
    other = hf.HFValueModel.from_pretrained(tiny_llama_dir, head_seed=8).value_head
    assert not torch.equal(heads[0].weight, other.weight)


def test_hf_module_train_and_sync(tiny_llama_dir):
    import flowrl
    from flowrl.engines import ppo
    from flowrl.models.hf import HFModule
    from flowrl.runtime.sync import sync_parameters

    flowrl.init({"models": {"policy": {"model_path": str(tiny_llama_dir), "dtype": "fp32",
                                       "generation": {"max_new_tokens": 8, "temperature": 1.0}},
                            "trainer": {"trainable": True, "model_path": str(tiny_llama_dir),
                                        "dtype": "fp32", "optim": {"lr": 1e-3}}}})
    policy, trainer = (HFModule(n).bind(flowrl.get_args()) for n in ("policy", "trainer"))
    policy.ensure_setup()
    trainer.ensure_setup()
    ids, mask = _prompts(policy.tokenizer, ["ab", "hello wo", "xyz", "q"])
    out = policy.generate(ids, mask)
    p = ids.shape[1]
    with torch.no_grad():
        old = policy.response_logprobs(out["tokens"], out["attention_mask"], p)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        trainer.optimizer.zero_grad()
        lp = trainer.response_logprobs(out["tokens"], out["attention_mask"], p)
        loss, _ = ppo.policy_loss(lp, old, torch.ones_like(old), out["response_mask"].float())
        loss.backward()
        trainer.optimizer.step()
        times.append(time.perf_counter() - t0)
    print(f"\nHF TorchModule train step: {min(times) * 1000:.1f} ms")
    stats = sync_parameters(trainer, policy)
    assert stats.tensors == len(dict(policy.model.named_parameters()))
    for (n, a), (_, b) in zip(trainer.model.named_parameters(), policy.model.named_parameters()):
        assert torch.equal(a, b), n
