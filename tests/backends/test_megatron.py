"""MegatronModule: megatron-core GPT, TP=2 over two gloo CPU processes, sync to HF (TP=1)."""

from __future__ import annotations

import socket

import pytest
import torch

from _backend_utils import need, tiny_llama_dir  # noqa: F401  (fixture)

pytestmark = pytest.mark.backend


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hf_reference(model_dir, steps):
    """The same training as the worker's, on the plain Hugging Face model in one process."""
    from _megatron_worker import batch

    from flowrl.models import hf

    m = hf.load_causal_lm(model_dir)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0)
    tokens, mask = batch(m.config.vocab_size)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        total = 0.0
        for sl in (slice(0, 4), slice(4, 8)):
            lp = hf.response_logprobs(m, tokens[sl], mask[sl], 4)
            mm = mask[sl][:, 4:]
            loss = -(lp * mm).sum() / mm.sum()
            (loss / 2).backward()
            total += loss.item() / 2
        losses.append(total)
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    return losses, {n: p.detach() for n, p in m.named_parameters()}


@pytest.mark.parametrize("tp", [2, 1])
def test_tensor_parallel_training_and_sync_to_hf(tiny_llama_dir, tmp_path, tp):
    need("megatron.core", "megatron")
    need("transformers", "hf")
    import torch.multiprocessing as mp
    from _megatron_worker import tp_worker

    out = tmp_path / "result.pt"
    mp.spawn(tp_worker, args=(tp, _port(), str(tiny_llama_dir), str(out), 3), nprocs=tp)
    r = torch.load(out, weights_only=False)
    print(f"\nMegatron TP={tp} step: {min(r['times']) * 1000:.1f} ms; sync TP={tp} -> HF TP=1: "
          f"{r['sync_s'] * 1000:.1f} ms")
    shapes = r["shard_shapes"]
    assert shapes["decoder.layers.0.self_attention.linear_qkv.weight"][0] == 256 // tp
    assert shapes["embedding.word_embeddings.weight"][0] == 48 // tp
    # megatron TP=tp training == the Hugging Face model trained the same way
    ref_losses, ref = _hf_reference(tiny_llama_dir, 3)
    assert [s["loss"] for s in r["stats"]] == pytest.approx(ref_losses, rel=1e-5)
    assert r["sync_tensors"] == len(ref)
    for n, t in ref.items():
        # relative norm: Adam turns float noise in near-zero gradients into +-lr steps, so
        # single elements may differ by up to ~lr while the tensors agree to ~1e-5
        rel = ((r["synced"][n] - t).norm() / t.norm()).item()
        assert rel < 1e-4, (n, rel)
    # and the synced HF model computes megatron's logits (QKV / gate-up remapped correctly)
    m = r["mask"].bool()
    torch.testing.assert_close(r["hf_logits"][m], r["logits"][m], rtol=1e-4, atol=1e-4)


def test_cpu_shim_only_without_cuda():
    need("megatron.core", "megatron")
    from flowrl.models.megatron_module import install_cpu_shim

    if torch.cuda.is_available():
        assert install_cpu_shim() is False
    else:
        assert install_cpu_shim() is True
        assert torch.cuda.current_device() == "cpu"
