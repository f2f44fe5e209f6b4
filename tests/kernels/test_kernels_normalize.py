"""whiten() and group_normalize() (GRPO)."""

from __future__ import annotations

import pytest
import torch

from flowrl.kernels import group_normalize, use_backend, whiten


def manual_whiten(x, m, shift_mean=True, eps=1e-8, unbiased=False):
    sel = x[m.bool()].double()
    mean = sel.mean()
    var = sel.var(unbiased=unbiased)
    out = (x.double() - mean) / torch.sqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m.bool(), out, 0.0)


@pytest.mark.parametrize("shape", [(1, 5), (4, 33), (7,)])
@pytest.mark.parametrize("shift_mean", [True, False])
@pytest.mark.parametrize("unbiased", [False, True])
def test_whiten_matches_manual(shape, shift_mean, unbiased, device):
    x = (torch.randn(shape) * 3 + 2).to(device)
    m = torch.rand(shape, device=device) > 0.3
    m.view(-1)[0] = True
    m.view(-1)[-1] = True
    out = whiten(x, m, shift_mean=shift_mean, unbiased=unbiased)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double().cpu(), manual_whiten(x, m, shift_mean, unbiased=unbiased).cpu(), rtol=1e-5, atol=1e-5)
    assert (out[~m] == 0).all()


def test_whiten_statistics_and_padding_ignored(device):
    x = torch.randn(8, 50, device=device)
    m = torch.arange(50, device=device)[None] < torch.randint(1, 51, (8, 1), device=device)
    x_padded = torch.where(m, x, torch.full_like(x, 1e6))  # huge padding values must not matter
    out = whiten(x_padded, m)
    sel = out[m].double()
    assert abs(sel.mean().item()) < 1e-5
    assert abs(sel.var(unbiased=False).item() - 1) < 1e-4


def test_whiten_all_masked_and_none_mask(device):
    x = torch.randn(3, 4, device=device)
    out = whiten(x, torch.zeros(3, 4, device=device))
    assert (out == 0).all()
    torch.testing.assert_close(whiten(x, None), whiten(x, torch.ones(3, 4, device=device)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_whiten_half_inputs(dtype, device):
    x = torch.randn(4, 16, device=device)
    m = torch.ones(4, 16, device=device)
    out = whiten(x.to(dtype), m)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, whiten(x.to(dtype).float(), m))


def test_whiten_shape_mismatch():
    with pytest.raises(ValueError, match=r"x \(2, 3\), mask \(3, 2\)"):
        whiten(torch.zeros(2, 3), torch.ones(3, 2))


# ------------------------------------------------------------------ group_normalize


def manual_group(scores, g, eps=1e-6, scale=True):
    s = scores.double().view(-1, g)
    out = s - s.mean(1, keepdim=True)
    if scale:
        out = out / (s.std(1, unbiased=False, keepdim=True) + eps)
    return out.view(-1)


@pytest.mark.parametrize("num_prompts,g", [(1, 1), (1, 4), (3, 5), (16, 8), (2, 64)])
@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_group_normalize(num_prompts, g, scale, backend, device, request):
    if backend == "triton":
        device = request.getfixturevalue("triton_device")
    scores = torch.randn(num_prompts * g, device=device)
    out = group_normalize(scores, g, scale=scale, backend=backend)
    assert out.dtype == torch.float32 and out.shape == scores.shape
    torch.testing.assert_close(out.double().cpu(), manual_group(scores, g, scale=scale).cpu(), rtol=1e-5, atol=1e-5)


def test_group_normalize_constant_group_is_zero(device):
    # identical rewards in a group: no signal, and no NaN/inf thanks to eps
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0], device=device)
    out = group_normalize(scores, 3)
    assert torch.isfinite(out).all()
    assert (out[:3] == 0).all()
    assert out[3:].sum().abs() < 1e-6


def test_group_normalize_use_backend_triton(triton_device):
    s = torch.randn(12, device=triton_device)
    with use_backend("triton"):
        out = group_normalize(s, 4)
    torch.testing.assert_close(out.double().cpu(), manual_group(s, 4).cpu(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "shape,g,match",
    [((10,), 3, r"multiple of group_size=3; got shape \(10,\)"), ((2, 4), 4, r"1-D scores.*\(2, 4\)"), ((4,), 0, "positive int")],
)
def test_group_normalize_errors(shape, g, match):
    with pytest.raises(ValueError, match=match):
        group_normalize(torch.zeros(shape), g)
