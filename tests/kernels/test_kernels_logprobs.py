"""token_logprobs / linear_logprobs: chunked torch and Triton vs the naive reference."""

from __future__ import annotations

import pytest
import torch

from flowrl.kernels import linear_logprobs, token_logprobs, use_backend
from flowrl.kernels.logprob_torch import token_logprobs_torch
from flowrl.kernels.reference import linear_logprobs_reference, token_logprobs_reference

# per-dtype tolerances for (values, grads); bf16/fp16 grads are rounded to the logits dtype
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=1e-2, atol=1e-2),
    torch.float64: dict(rtol=1e-10, atol=1e-10),
}


def make_logits(shape, V, dtype, device, masked_vocab=False):
    x = (torch.randn(*shape, V, dtype=torch.float32) * 3).to(dtype).to(device)
    t = torch.randint(0, V, shape, device=device)
    if masked_vocab and V > 4:  # some -inf logits (e.g. banned tokens), never the target
        flat = x.view(-1, V)
        flat[:, : V // 2] = float("-inf")
        t = torch.randint(V // 2, V, shape, device=device)
    return x.requires_grad_(), t


def ref_and_grads(x, t, temperature, entropy, wl=1.3, we=-0.4):
    out = token_logprobs_reference(x, t, temperature=temperature, return_entropy=entropy)
    lp, ent = out if entropy else (out, None)
    loss = (lp * wl).sum() + ((ent * we).sum() if entropy else 0.0)
    (g,) = torch.autograd.grad(loss, x)
    return lp.detach(), (ent.detach() if entropy else None), g


def run_and_grads(fn, x, t, temperature, entropy, wl=1.3, we=-0.4):
    out = fn(x, t, temperature, entropy)
    lp, ent = out if entropy else (out, None)
    loss = (lp * wl).sum() + ((ent * we).sum() if entropy else 0.0)
    (g,) = torch.autograd.grad(loss, x)
    return lp.detach(), (ent.detach() if entropy else None), g


def check(fn, shape, V, dtype, temperature, entropy, device, masked_vocab=False):
    x, t = make_logits(shape, V, dtype, device, masked_vocab)
    lp_r, ent_r, g_r = ref_and_grads(x, t, temperature, entropy)
    lp, ent, g = run_and_grads(fn, x, t, temperature, entropy)
    assert lp.shape == tuple(shape) and lp.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    value_tol = TOL[torch.float64] if dtype == torch.float64 else TOL[torch.float32]  # fp32 math on identical inputs
    torch.testing.assert_close(lp, lp_r, **value_tol)
    if entropy:
        torch.testing.assert_close(ent, ent_r, **value_tol)
    assert g.dtype == dtype
    torch.testing.assert_close(g.float(), g_r.float(), **TOL[dtype])


CASES = [
    # leading shape, V
    ((1,), 1),
    ((1, 1), 7),
    ((2, 3), 1000),  # V not a power of two
    ((5,), 1024),
    ((3, 1), 3001),
]


# ------------------------------------------------------------------ torch path


@pytest.mark.parametrize("shape,V", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("temperature,entropy", [(1.0, False), (0.7, True)])
def test_torch_matches_reference(shape, V, dtype, temperature, entropy, device):
    check(
        lambda x, t, T, e: token_logprobs(x, t, temperature=T, return_entropy=e, backend="torch"),
        shape, V, dtype, temperature, entropy, device,
    )


@pytest.mark.parametrize("chunk_elems", [1, 2500, 10**9])  # 1 row per chunk, ragged chunks, one chunk
def test_torch_chunking(chunk_elems, device):
    def fn(x, t, T, e):
        lp, ent = token_logprobs_torch(x.view(-1, x.shape[-1]), t.view(-1), T, e, chunk_elems=chunk_elems)
        return (lp.view(t.shape), ent.view(t.shape)) if e else lp.view(t.shape)

    check(fn, (7,), 1000, torch.float32, 1.3, True, device)


def test_masked_vocab_entries(device):
    check(lambda x, t, T, e: token_logprobs(x, t, temperature=T, return_entropy=e, backend="torch"),
          (4,), 300, torch.float32, 1.0, True, device, masked_vocab=True)


def test_gradcheck_reference_fp64():
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 6, (3,))
    assert torch.autograd.gradcheck(lambda z: token_logprobs_reference(z, t, temperature=0.8, return_entropy=True), (x,))


def test_gradcheck_chunked_torch_fp64():
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 9, (4,))
    fn = lambda z: token_logprobs_torch(z, t, 0.8, True, chunk_elems=20)  # noqa: E731 - 2 rows per chunk
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradcheck(lambda z: token_logprobs_torch(z, t, 1.0, False)[0], (x,))


def test_entropy_only_gradient(device):
    x, t = make_logits((3,), 50, torch.float32, device)
    _, ent = token_logprobs(x, t, return_entropy=True, backend="torch")
    (g,) = torch.autograd.grad(ent.sum(), x)
    _, ent_r = token_logprobs_reference(x, t, return_entropy=True)
    (g_r,) = torch.autograd.grad(ent_r.sum(), x)
    torch.testing.assert_close(g, g_r, rtol=1e-5, atol=1e-6)


def test_non_contiguous_logits(device):
    base = torch.randn(4, 2 * 37, device=device)
    x = base[:, ::2]  # stride 2 in the vocab dim
    t = torch.randint(0, 37, (4,), device=device)
    torch.testing.assert_close(token_logprobs(x, t, backend="torch"), token_logprobs_reference(x, t))


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("entropy", [False, True])
def test_shifted_slice_without_copy(backend, entropy, device, request):
    """logits[:, :-1] (rows not evenly strided) is read through batch/time strides, not copied."""
    if backend == "triton":
        device = request.getfixturevalue("triton_device")
    from flowrl.kernels.api import _rows_view

    full = torch.randn(3, 6, 50, device=device, requires_grad=True)
    x = full[:, :-1]
    assert _rows_view(x).data_ptr() == x.data_ptr() and _rows_view(x)._base is not None
    t = torch.randint(0, 50, (3, 5), device=device)
    out = token_logprobs(x, t, temperature=0.9, return_entropy=entropy, backend=backend)
    ref = token_logprobs_reference(x, t, temperature=0.9, return_entropy=entropy)
    out, ref = (out, ref) if entropy else ((out,), (ref,))
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)
    (g,) = torch.autograd.grad(sum(o.sum() for o in out), full)
    (g_r,) = torch.autograd.grad(sum(r.sum() for r in ref), full)
    torch.testing.assert_close(g, g_r, rtol=1e-5, atol=1e-5)
    assert (g[:, -1] == 0).all()


def test_torch_chunks_cross_batch_rows(device):
    full = torch.randn(4, 7, 30, device=device, requires_grad=True)
    x, t = full[:, 1:], torch.randint(0, 30, (4, 6), device=device)
    lp, ent = token_logprobs_torch(x, t.reshape(-1), 1.0, True, chunk_elems=100)  # 3 rows per chunk
    lp_r, ent_r = token_logprobs_reference(x, t, return_entropy=True)
    torch.testing.assert_close(lp.view(4, 6), lp_r)
    torch.testing.assert_close(ent.view(4, 6), ent_r)


def test_empty_batch(device):
    x = torch.randn(0, 5, 11, device=device, requires_grad=True)
    lp, ent = token_logprobs(x, torch.zeros(0, 5, dtype=torch.long, device=device), return_entropy=True)
    assert lp.shape == (0, 5) and ent.shape == (0, 5)


# ------------------------------------------------------------------ triton path


@pytest.mark.parametrize("shape,V", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature,entropy", [(1.0, False), (0.7, True)])
def test_triton_matches_reference(shape, V, dtype, temperature, entropy, triton_device):
    check(
        lambda x, t, T, e: token_logprobs(x, t, temperature=T, return_entropy=e, backend="triton"),
        shape, V, dtype, temperature, entropy, triton_device,
    )


@pytest.mark.parametrize("V,block_v", [(1000, 128), (300, 64), (256, 256)])  # several chunks, ragged last chunk
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_multi_block(V, block_v, dtype, triton_device):
    from flowrl.kernels.dispatch import load_triton_module

    mod = load_triton_module("logprob_triton", "_logprob_fwd_kernel")

    def fn(x, t, T, e):
        lp, ent = mod.token_logprobs_triton(x.view(-1, V), t.view(-1), T, e, block_v=block_v)
        return (lp.view(t.shape), ent.view(t.shape)) if e else lp.view(t.shape)

    check(fn, (2, 3), V, dtype, 1.7, True, triton_device)


def test_triton_masked_vocab(triton_device):
    from flowrl.kernels.dispatch import load_triton_module

    mod = load_triton_module("logprob_triton", "_logprob_fwd_kernel")

    def fn(x, t, T, e):
        return mod.token_logprobs_triton(x, t, T, e, block_v=64)

    check(fn, (4,), 300, torch.float32, 1.0, True, triton_device, masked_vocab=True)


def test_triton_logprob_only_and_entropy_only_grads(triton_device):
    x, t = make_logits((3,), 200, torch.float32, triton_device)
    lp, ent = token_logprobs(x, t, return_entropy=True, backend="triton")
    lp_r, ent_r = token_logprobs_reference(x, t, return_entropy=True)
    for out, out_r in ((lp, lp_r), (ent, ent_r)):
        (g,) = torch.autograd.grad(out.sum(), x, retain_graph=True)
        (g_r,) = torch.autograd.grad(out_r.sum(), x, retain_graph=True)
        torch.testing.assert_close(g, g_r, rtol=1e-5, atol=1e-6)


def test_triton_fp64_gradcheck_loose(triton_device):
    # the kernels accumulate in the output dtype, so fp64 inputs run in fp64: gradcheck applies
    x = torch.randn(3, 10, dtype=torch.float64, device=triton_device, requires_grad=True)
    t = torch.randint(0, 10, (3,), device=triton_device)
    fn = lambda z: token_logprobs(z, t, temperature=0.9, return_entropy=True, backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))


def test_use_backend_triton_for_logprobs(triton_device):
    x, t = make_logits((2,), 33, torch.float32, triton_device)
    with use_backend("triton"):
        lp = token_logprobs(x, t)
    torch.testing.assert_close(lp, token_logprobs_reference(x, t))


# ------------------------------------------------------------------ linear_logprobs


@pytest.mark.parametrize("N,H,V,chunk", [(1, 8, 5, 2), (6, 16, 100, 33), (4, 8, 64, 4096)])
def test_linear_logprobs(N, H, V, chunk, device):
    h = torch.randn(N, H, device=device, requires_grad=True)
    w = torch.randn(V, H, device=device, requires_grad=True)
    t = torch.randint(0, V, (N,), device=device)
    out = linear_logprobs(h, w, t, temperature=1.3, chunk_size=chunk)
    ref = linear_logprobs_reference(h, w, t, temperature=1.3)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.autograd.grad((out * torch.arange(N, device=device)).sum(), (h, w))
    g_r = torch.autograd.grad((ref * torch.arange(N, device=device)).sum(), (h, w))
    for a, b in zip(g, g_r):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_linear_logprobs_gradcheck_fp64():
    h = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 7, (3,))
    assert torch.autograd.gradcheck(lambda a, b: linear_logprobs(a, b, t, temperature=0.9, chunk_size=3), (h, w))


def test_linear_logprobs_leading_dims(device):
    h = torch.randn(2, 3, 8, device=device)
    w = torch.randn(20, 8, device=device)
    t = torch.randint(0, 20, (2, 3), device=device)
    out = linear_logprobs(h, w, t, chunk_size=7)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, linear_logprobs_reference(h, w, t), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ errors


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"logits \(2, 3, 10\), targets \(2, 4\)"):
        token_logprobs(torch.randn(2, 3, 10), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"hidden \(2, 8\), weight \(5, 4\)"):
        linear_logprobs(torch.randn(2, 8), torch.randn(5, 4), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("bad", ["loop", "gpu", ""])
def test_invalid_backend(bad):
    with pytest.raises(ValueError, match="allowed: 'auto', 'torch', 'triton'$"):
        token_logprobs(torch.randn(2, 5), torch.zeros(2, dtype=torch.long), backend=bad)


def test_bad_arguments():
    x, t = torch.randn(2, 5), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        token_logprobs(x, t, temperature=0.0)
    with pytest.raises(TypeError, match="integer tensor"):
        token_logprobs(x, t.float())
    with pytest.raises(TypeError, match="floating tensor"):
        token_logprobs(x.long(), t)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        linear_logprobs(torch.randn(2, 4), torch.randn(5, 4), t, chunk_size=0)
