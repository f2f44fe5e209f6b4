"""GAE: loop reference vs vectorised torch vs Triton (interpreter on CPU)."""

from __future__ import annotations

import pytest
import torch

from flowrl.kernels import gae, use_backend
from flowrl.kernels.reference import gae_loop, gae_torch, reverse_linear_scan


def make_batch(B: int, T: int, lengths: list[int] | None = None, dtype=torch.float32, device="cpu", nan_pad=True):
    """Right-padded batch; padded values/rewards are NaN to prove they are ignored."""
    r = torch.randn(B, T, dtype=torch.float64)
    v = torch.randn(B, T, dtype=torch.float64)
    if lengths is None:
        lengths = torch.randint(0, T + 1, (B,)).tolist()
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    if nan_pad:
        r[~mask] = float("nan")
        v[~mask] = float("nan")
    return r.to(dtype).to(device), v.to(dtype).to(device), mask.to(device)


def assert_close_scaled(actual, expected, rtol=1e-5):
    """Elementwise error relative to the batch's magnitude (near-zero entries make pure rtol ill-posed)."""
    scale = expected.abs().max().clamp_min(1.0)
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=rtol * scale.item())


def loop_ref(r, v, m, gamma, lam):
    """fp64 loop on the CPU as ground truth."""
    a, ret = gae_loop(r.double().cpu(), v.double().cpu(), m.cpu(), gamma, lam)
    return a, ret


# ------------------------------------------------------------------ loop semantics


def test_loop_matches_hand_computed():
    r = torch.tensor([[1.0, 0.0, 2.0, 9.0]])
    v = torch.tensor([[0.5, 0.25, 1.0, 9.0]])
    m = torch.tensor([[1, 1, 1, 0]])
    g, lam = 0.9, 0.8
    d2 = 2.0 - 1.0  # last real token: next value is 0
    d1 = 0.0 + g * 1.0 - 0.25
    d0 = 1.0 + g * 0.25 - 0.5
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    adv, ret = gae(r, v, m, g, lam, backend="loop")
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.5, a1 + 0.25, a2 + 1.0, 0.0]]))


def test_mask_gap_cuts_the_recursion():
    # a 0 in the middle ends the episode there: the part after it does not leak back
    r = torch.tensor([[1.0, 1.0, 0.0, 5.0, 5.0]])
    v = torch.zeros(1, 5)
    m = torch.tensor([[1, 1, 0, 1, 1]])
    for backend in ("loop", "torch"):
        adv, _ = gae(r, v, m, 1.0, 1.0, backend=backend)
        torch.testing.assert_close(adv, torch.tensor([[2.0, 1.0, 0.0, 10.0, 5.0]]))


# ------------------------------------------------------------------ torch vs loop


@pytest.mark.parametrize(
    "B,T,lengths",
    [
        (1, 1, [1]),
        (1, 7, [7]),
        (3, 5, [0, 0, 0]),  # all rows fully masked
        (4, 33, [33, 1, 0, 17]),
        (8, 100, None),
        (2, 257, [257, 200]),
    ],
)
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.9), (0.5, 0.0)])
def test_torch_matches_loop(B, T, lengths, gamma, lam, device):
    r, v, m = make_batch(B, T, lengths, device=device)
    a_ref, ret_ref = loop_ref(r, v, m, gamma, lam)
    adv, ret = gae(r, v, m, gamma, lam, backend="torch")
    assert adv.dtype == torch.float32 and adv.shape == (B, T)
    assert not torch.isnan(adv).any() and not torch.isnan(ret).any()
    assert_close_scaled(adv.cpu(), a_ref)
    assert_close_scaled(ret.cpu(), ret_ref)
    assert (adv.cpu()[~m.cpu()] == 0).all() and (ret.cpu()[~m.cpu()] == 0).all()


def test_torch_exact_at_long_T(device):
    """T=2048, gamma*lam=0.95: vectorised torch within ~1e-5 (relative) of the fp32 and fp64 loops."""
    r, v, m = make_batch(4, 2048, [2048, 2000, 1024, 1], device=device)
    a32, ret32 = gae(r, v, m, 1.0, 0.95, backend="loop")
    adv, ret = gae(r, v, m, 1.0, 0.95, backend="torch")
    assert_close_scaled(adv, a32, rtol=1e-5)
    assert_close_scaled(ret, ret32, rtol=1e-5)
    a64, _ = loop_ref(r, v, m, 1.0, 0.95)
    assert_close_scaled(adv.cpu(), a64, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_torch_dtypes_accumulate_in_fp32(dtype, device):
    r, v, m = make_batch(3, 64, [64, 10, 0], dtype=dtype, device=device)
    adv, ret = gae(r, v, m, 0.99, 0.95, backend="torch")
    assert adv.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    a_ref, ret_ref = loop_ref(r, v, m, 0.99, 0.95)  # same (rounded) inputs, fp64 math
    assert_close_scaled(adv.cpu(), a_ref, rtol=1e-5)
    assert_close_scaled(ret.cpu(), ret_ref, rtol=1e-5)


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32, torch.uint8])
def test_mask_dtypes(mask_dtype, device):
    r, v, m = make_batch(2, 9, [9, 4], device=device)
    base, _ = gae(r, v, m, 0.9, 0.9, backend="torch")
    adv, _ = gae(r, v, m.to(mask_dtype), 0.9, 0.9, backend="torch")
    torch.testing.assert_close(adv, base)


@pytest.mark.parametrize("T", [1, 2, 3, 50, 64])
def test_reverse_linear_scan_matches_recurrence(T):
    a, b = torch.rand(3, T, dtype=torch.float64), torch.randn(3, T, dtype=torch.float64)
    x = reverse_linear_scan(a, b)
    expect, nxt = torch.zeros_like(b), torch.zeros(3, dtype=torch.float64)
    for t in reversed(range(T)):
        nxt = b[:, t] + a[:, t] * nxt
        expect[:, t] = nxt
    torch.testing.assert_close(x, expect)


def test_torch_path_has_no_python_loop_over_T(monkeypatch):
    """The scan runs ceil(log2 T) steps: count the torch.addcmul calls for T=1024."""
    calls = []
    real = torch.addcmul
    monkeypatch.setattr(torch, "addcmul", lambda *a, **k: calls.append(1) or real(*a, **k))
    r, v, m = make_batch(2, 1024, [1024, 3])
    gae_torch(r, v, m, 1.0, 0.95)
    assert len(calls) == 10


def test_reverse_linear_scan_leaves_inputs_alone():
    a, b = torch.rand(2, 9), torch.randn(2, 9)
    a0, b0 = a.clone(), b.clone()
    reverse_linear_scan(a, b)
    assert torch.equal(a, a0) and torch.equal(b, b0)


# ------------------------------------------------------------------ triton vs loop


@pytest.mark.parametrize(
    "B,T,lengths,block_t",
    [
        (1, 1, [1], None),
        (1, 19, [19], None),
        (3, 6, [0, 0, 0], None),  # all-masked rows
        (4, 37, [37, 0, 1, 20], 16),  # T not a multiple of the block: 3 blocks, carry across
        (2, 64, [64, 63], 16),  # exact multiple
        (5, 50, None, 8),
    ],
)
@pytest.mark.parametrize("reverse_scan", [False, True])
def test_triton_matches_loop(B, T, lengths, block_t, reverse_scan, triton_device):
    from flowrl.kernels.dispatch import load_triton_module

    mod = load_triton_module("gae_triton", "gae_kernel")
    r, v, m = make_batch(B, T, lengths, device=triton_device)
    adv, ret = mod.gae_triton(r, v, m, 0.99, 0.95, block_t=block_t, use_reverse_scan=reverse_scan)
    a_ref, ret_ref = loop_ref(r, v, m, 0.99, 0.95)
    assert adv.dtype == torch.float32
    assert_close_scaled(adv.cpu(), a_ref)
    assert_close_scaled(ret.cpu(), ret_ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_triton_dtypes(dtype, mask_dtype, triton_device):
    r, v, m = make_batch(3, 24, [24, 5, 0], dtype=dtype, device=triton_device)
    adv, ret = gae(r, v, m.to(mask_dtype), 1.0, 0.95, backend="triton")
    assert adv.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    a_ref, ret_ref = loop_ref(r, v, m, 1.0, 0.95)
    assert_close_scaled(adv.cpu(), a_ref)
    assert_close_scaled(ret.cpu(), ret_ref)


def test_triton_long_sequence(triton_device):
    r, v, m = make_batch(1, 2048, [2000], device=triton_device)
    adv, _ = gae(r, v, m, 1.0, 0.95, backend="triton")
    a_ref, _ = loop_ref(r, v, m, 1.0, 0.95)
    assert_close_scaled(adv.cpu(), a_ref, rtol=1e-5)


def test_triton_non_contiguous_inputs(triton_device):
    r, v, m = make_batch(6, 20, None, device=triton_device)
    r2, v2, m2 = r.t().contiguous().t(), v[::2], m[::2]  # column-major and row-strided
    adv, _ = gae(r2[::2], v2, m2, 0.9, 0.9, backend="triton")
    ref, _ = gae(r[::2], v[::2], m[::2], 0.9, 0.9, backend="loop")
    assert_close_scaled(adv, ref)


def test_use_backend_selects_triton(triton_device):
    r, v, m = make_batch(2, 10, [10, 3], device=triton_device)
    with use_backend("triton"):
        adv, _ = gae(r, v, m, 0.9, 0.9)
    assert_close_scaled(adv.cpu(), loop_ref(r, v, m, 0.9, 0.9)[0])


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "shapes",
    [((2, 3), (2, 3), (2, 4)), ((2, 3), (3, 2), (2, 3)), ((6,), (6,), (6,)), ((1, 2, 3),) * 3],
)
def test_shape_mismatch_raises(shapes):
    r, v, m = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=r"same \[B, T\] shape.*rewards \("):
        gae(r, v, m, 1.0, 0.95)


def test_invalid_backend_raises():
    r = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="allowed: 'auto', 'torch', 'triton', 'loop'"):
        gae(r, r, r, 1.0, 0.95, backend="cuda")


@pytest.mark.parametrize("backend", ["loop", "torch"])
def test_empty_and_detached(backend, device):
    for shape in ((0, 5), (3, 0)):
        z = torch.zeros(shape, device=device)
        adv, ret = gae(z, z, torch.ones_like(z), 1.0, 0.9, backend=backend)
        assert adv.shape == shape and ret.shape == shape
    r, v, m = make_batch(2, 5, [5, 3], device=device, nan_pad=False)
    v.requires_grad_()
    adv, ret = gae(r, v, m, 1.0, 0.9, backend=backend)
    assert not adv.requires_grad and not ret.requires_grad
