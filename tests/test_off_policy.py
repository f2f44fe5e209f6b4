"""Off-policy correction (flowrl.algorithms.off_policy): hand-computed losses, gradients and
statistics of TIS and decoupled PPO, the cap, masking, the no-op on fresh samples (bit for
bit), the helper's metrics and its errors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from flowrl.algorithms import off_policy as op
from flowrl.config import load_config
from flowrl.config.off_policy import OffPolicyArgs
from flowrl.engines import grpo, ppo
from flowrl.errors import ConfigError

TIS = OffPolicyArgs(correction="tis", is_cap=2.0)
DECOUPLED = OffPolicyArgs(correction="decoupled", is_cap=2.0)
MASK = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is padding


def _tis_batch(version: int = 0) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """Ratios current / behaviour 3 and 0.5 on the real tokens (behaviour log-probs 0); the
    padded token has a huge ratio that must not count."""
    lp = torch.log(torch.tensor([[3.0, 0.5, 7.0]])).requires_grad_()
    batch = {"logprobs": torch.zeros(1, 3), "weight_version": torch.tensor([version])}
    return lp, batch, torch.tensor([[-1.0, 1.0, 5.0]])


def test_tis_loss_gradient_and_stats_by_hand():
    lp, batch, adv = _tis_batch()
    loss, m = op.correct_policy_loss(lp, batch, adv, MASK, 0.2, TIS, current_version=1)
    # token 1: r = 3 truncated to 2, A = -1: max(2, 1.2) = 2; token 2: r = 0.5, A = 1:
    # max(-0.5, -0.8) = -0.5. Mean over the 2 real tokens: 0.75 (uncorrected: 1.25).
    assert loss.item() == pytest.approx(0.75)
    loss.backward()
    # d/dlp: token 1 -A * min(r, C) / 2 = 1.0 (truncated, not zero); token 2 -A * r / 2.
    assert lp.grad[0].tolist() == pytest.approx([1.0, -0.25, 0.0])
    assert m["off_policy/is_weight_mean"].item() == pytest.approx(1.75)
    assert m["off_policy/is_weight_max"].item() == pytest.approx(3.0)
    assert m["off_policy/is_weight_min"].item() == pytest.approx(0.5)
    assert m["off_policy/clipped_frac"].item() == pytest.approx(0.5)
    assert m["clipfrac"].item() == 0.0
    assert m["approx_kl"].item() == pytest.approx(0.5 * (1.0986123**2 + 0.6931472**2) / 2)
    plain, _ = ppo.policy_loss(lp, batch["logprobs"], adv, MASK, 0.2)
    assert plain.item() == pytest.approx(1.25)


def _decoupled_batch(cap_row_ratio: float = 4.0):
    """Behaviour log-probs 0; proximal / behaviour 1.5 and 4; current / proximal 1.1, 0.5."""
    prox = torch.log(torch.tensor([[1.5, cap_row_ratio, 9.0]]))
    lp = (prox + torch.log(torch.tensor([[1.1, 0.5, 1.0]]))).requires_grad_()
    batch = {"logprobs": torch.zeros(1, 3), "proximal_logprobs": prox,
             "weight_version": torch.tensor([2])}
    return lp, batch, torch.tensor([[1.0, -2.0, 3.0]])


def test_decoupled_loss_gradient_and_stats_by_hand():
    lp, batch, adv = _decoupled_batch()
    loss, m = op.correct_policy_loss(lp, batch, adv, MASK, 0.2, DECOUPLED, current_version=4)
    # w = min(p / b, 2) = [1.5, 2]; token 1: r = 1.1, A = 1: -1.1 * 1.5 = -1.65;
    # token 2: r = 0.5, A = -2: max(1.0, 1.6) = 1.6 (clipped) * 2 = 3.2. Mean: 0.775.
    assert loss.item() == pytest.approx(0.775)
    loss.backward()
    assert lp.grad[0].tolist() == pytest.approx([-0.825, 0.0, 0.0])  # 1.5 * -1 * 1.1 / 2
    assert m["off_policy/is_weight_mean"].item() == pytest.approx(2.75)
    assert m["off_policy/is_weight_max"].item() == pytest.approx(4.0)
    assert m["off_policy/is_weight_min"].item() == pytest.approx(1.5)
    assert m["off_policy/clipped_frac"].item() == pytest.approx(0.5)
    assert m["clipfrac"].item() == pytest.approx(0.5)
    assert m["approx_kl"].item() == pytest.approx(0.5 * (math.log(1.1)**2 + math.log(0.5)**2) / 2)


def test_grpo_loss_takes_the_decoupled_ratio():
    lp, batch, _ = _decoupled_batch()
    ratio = op.policy_ratio(lp, batch, MASK, DECOUPLED, current_version=4)
    # Sequence advantage -2 on both tokens: token 1 r = 1.1 -> 2.2 * 1.5; token 2 -> 1.6 * 2.
    loss, stats = grpo.grpo_loss(lp, batch["logprobs"], lp.detach(), torch.tensor([-2.0]), MASK,
                                 0.2, kl_coef=0.0, ratio=ratio)
    assert loss.item() == pytest.approx((2.2 * 1.5 + 1.6 * 2.0) / 2)
    assert stats["off_policy/is_weight_max"].item() == pytest.approx(4.0)


def test_the_cap():
    lp, batch, adv = _tis_batch()
    loss, m = op.correct_policy_loss(lp, batch, adv, MASK, 0.2, OffPolicyArgs(is_cap=5.0), 1)
    assert loss.item() == pytest.approx(1.25)  # 3 < 5: nothing truncated
    assert m["off_policy/clipped_frac"].item() == 0.0
    lp, batch, adv = _decoupled_batch()
    loss, m = op.correct_policy_loss(lp, batch, adv, MASK, 0.2,
                                     OffPolicyArgs(correction="decoupled", is_cap=5.0), 4)
    assert loss.item() == pytest.approx((-1.65 + 4.0 * 1.6) / 2)  # w = 4, not truncated
    # log-ratio 100: exp overflows fp32, the truncated ratio does not.
    log_r = torch.tensor([math.log(0.5), math.log(2.0), math.log(8.0), 100.0],
                         requires_grad=True)
    r = op.truncated_ratio(log_r, 2.0)
    assert r.tolist() == pytest.approx([0.5, 2.0, 2.0, 2.0], rel=1e-5)
    r.sum().backward()
    assert log_r.grad.tolist() == pytest.approx([0.5, 2.0, 2.0, 2.0], rel=1e-5)  # min(r, C)


def test_masked_tokens_are_ignored():
    lp, batch, adv = _tis_batch()
    base, m0 = op.correct_policy_loss(lp, batch, adv, MASK, 0.2, TIS, 1)
    wild = lp.detach().clone()
    wild[0, 2] = 40.0  # exp(40): would dominate any statistic that saw it
    batch2 = {**batch, "logprobs": torch.tensor([[0.0, 0.0, -30.0]])}
    loss, m = op.correct_policy_loss(wild, batch2, torch.tensor([[-1.0, 1.0, -1e6]]), MASK,
                                     0.2, TIS, 1)
    assert loss.item() == base.item()
    assert {k: v.item() for k, v in m.items()} == {k: v.item() for k, v in m0.items()}
    empty = op.is_weight_stats(torch.tensor([[5.0]]), torch.zeros(1, 1), 2.0)
    assert {k: v.item() for k, v in empty.items()} == dict.fromkeys(op.METRIC_KEYS, 0.0)


def _random_batch(seed: int, version: int):
    g = torch.Generator().manual_seed(seed)
    b, t = 4, 6
    mask = (torch.rand(b, t, generator=g) > 0.2).float()
    behaviour = -torch.rand(b, t, generator=g) * 3 * mask
    lp = (behaviour + 0.7 * torch.randn(b, t, generator=g)).requires_grad_()
    batch = {"logprobs": behaviour, "weight_version": torch.full((b,), version),
             "proximal_logprobs": behaviour + 0.3 * torch.randn(b, t, generator=g)}
    return lp, batch, torch.randn(b, t, generator=g), mask


@pytest.mark.parametrize("correction", ["tis", "decoupled", "none"])
def test_fresh_samples_are_bit_identical(correction):
    cfg = OffPolicyArgs(correction=correction, is_cap=1.0)  # the harshest cap
    lp, batch, adv, mask = _random_batch(0, version=3)
    loss, m = op.correct_policy_loss(lp, batch, adv, mask, 0.2, cfg, current_version=3)
    (grad,) = torch.autograd.grad(loss, lp)
    ref, ref_stats = ppo.policy_loss(lp, batch["logprobs"], adv, mask, 0.2)
    (ref_grad,) = torch.autograd.grad(ref, lp)
    assert torch.equal(loss, ref) and torch.equal(grad, ref_grad)
    assert set(m) == {"clipfrac", "approx_kl"}  # no off_policy/* without stale samples
    assert all(torch.equal(m[k], ref_stats[k]) for k in m)
    no_versions = {k: v for k, v in batch.items() if k != "weight_version"}
    assert torch.equal(op.correct_policy_loss(lp, no_versions, adv, mask, 0.2, cfg, 3)[0], ref)
    seq_adv = adv[:, 0]
    ratio = op.policy_ratio(lp, batch, mask, cfg, 3)
    a = grpo.grpo_loss(lp, batch["logprobs"], batch["proximal_logprobs"], seq_adv, mask,
                       ratio=ratio)[0]
    assert torch.equal(a, grpo.grpo_loss(lp, batch["logprobs"], batch["proximal_logprobs"],
                                         seq_adv, mask)[0])


@pytest.mark.parametrize("correction", ["tis", "decoupled"])
def test_stale_samples_change_the_loss_and_report_metrics(correction):
    lp, batch, adv, mask = _random_batch(1, version=2)
    cfg = OffPolicyArgs(correction=correction, is_cap=1.2)
    loss, m = op.correct_policy_loss(lp, batch, adv, mask, 0.2, cfg, current_version=3)
    ref, _ = ppo.policy_loss(lp, batch["logprobs"], adv, mask, 0.2)
    assert not torch.equal(loss, ref)
    assert set(m) == {"clipfrac", "approx_kl", *op.METRIC_KEYS}
    assert m["off_policy/is_weight_min"] <= m["off_policy/is_weight_mean"] <= \
        m["off_policy/is_weight_max"]
    none, _ = op.correct_policy_loss(lp, batch, adv, mask, 0.2, OffPolicyArgs(correction="none"),
                                     3)
    assert torch.equal(none, ref)  # "none" trains on stale samples as if fresh


def test_only_stale_rows_are_corrected():
    # Two rows with ratio 3 and advantage -1: the stale one is truncated to 2, the fresh one
    # keeps 3 (the plain PPO term).
    lp = torch.log(torch.tensor([[3.0], [3.0]]))
    batch = {"logprobs": torch.zeros(2, 1), "weight_version": torch.tensor([4, 5])}
    loss, m = op.correct_policy_loss(lp, batch, torch.tensor([-1.0, -1.0]), torch.ones(2, 1),
                                     0.2, TIS, current_version=5)
    assert loss.item() == pytest.approx((2.0 + 3.0) / 2)
    assert m["off_policy/is_weight_mean"].item() == pytest.approx(3.0)  # the stale row only


def test_errors_name_the_key_and_field():
    lp, batch, adv = _decoupled_batch()
    del batch["proximal_logprobs"]
    with pytest.raises(op.OffPolicyError, match=r"no 'proximal_logprobs'.*runtime_args\."
                       r"off_policy.correction='decoupled'"):
        op.correct_policy_loss(lp, batch, adv, MASK, 0.2, DECOUPLED, 4)
    with pytest.raises(op.OffPolicyError, match=r"'weight_version'.*version 2, newer than the "
                       r"trainer's version 1"):
        op.correct_policy_loss(lp, batch, adv, MASK, 0.2, DECOUPLED, 1)
    with pytest.raises(op.OffPolicyError, match=r"'weight_version' must be an int64 \[B\]"):
        op.correct_policy_loss(lp, {**batch, "weight_version": 3}, adv, MASK, 0.2, TIS, 4)
    with pytest.raises(op.OffPolicyError, match="no 'logprobs'"):
        op.correct_policy_loss(lp, {"weight_version": torch.tensor([0])}, adv, MASK, 0.2, TIS, 4)


def test_config_section():
    a = load_config({}).runtime_args.off_policy
    assert (a.correction, a.is_cap) == ("tis", 2.0)
    with pytest.raises(ConfigError, match=r"runtime_args.off_policy.is_cap: Input should be "
                       r"greater than or equal to 1"):
        load_config({"runtime_args": {"off_policy": {"is_cap": 0.5}}})
    with pytest.raises(ConfigError, match=r"runtime_args.off_policy.correction: Input should "
                       r"be 'tis', 'decoupled' or 'none'"):
        load_config({"runtime_args": {"off_policy": {"correction": "vtrace"}}})


def test_trainer_version():
    args = SimpleNamespace(num_training_epoch=2, sample_per_episode=64,
                           train_global_batch_size=32)
    assert op.trainer_version(SimpleNamespace(weight_version=7, runtime_args=args), 0) == 7
    # 2 epochs x 64 / 32 = 4 steps per episode: step 9 is in episode 2 (0-based).
    assert op.trainer_version(SimpleNamespace(runtime_args=args), 9) == 2
    # Never behind its samples' weights (skipped rollouts: fewer steps than the formula).
    mbs = [{"weight_version": torch.tensor([3, 3])}, {"weight_version": torch.tensor([3, 2])}]
    assert op.trainer_version(SimpleNamespace(runtime_args=args), 9, mbs) == 3
    assert op.trainer_version(SimpleNamespace(runtime_args=args), 9, mbs[1]) == 3
    assert op.trainer_version(SimpleNamespace(runtime_args=args), 13, mbs) == 3


# ---- the built-in trainers (tests/fixtures) in a run ------------------------------------------
def _ppo_rows(**runtime_args):
    import copy

    from ppo_setup import TINY_PPO, build_ppo

    cfg = copy.deepcopy(TINY_PPO)
    cfg["runtime_args"].update(num_episode=3, **runtime_args)
    engine, mods = build_ppo(cfg)
    return engine.learn(), mods


@pytest.mark.parametrize("correction", ["tis", "decoupled"])
def test_ppo_trainer_corrects_stale_batches_and_logs_the_metrics(correction):
    rows, _ = _ppo_rows(max_staleness=1, off_policy={"correction": correction})
    keys = [f"ppo_policy/{k}" for k in op.METRIC_KEYS]
    assert not any(k in rows[0] for k in keys)  # episode 1 trains version-0 samples: fresh
    for row in rows[1:]:
        assert row["staleness/max"] == 1.0
        assert row["ppo_policy/off_policy/is_weight_min"] <= 1.0 <= \
            row["ppo_policy/off_policy/is_weight_max"] < 2.0
        assert 0.0 <= row["ppo_policy/off_policy/clipped_frac"] <= 1.0


@pytest.mark.parametrize("correction", ["tis", "decoupled"])
def test_grpo_trainer_corrects_stale_batches(correction):
    from tiny_engines import TINY_GRPO, build_grpo, config

    cfg = config(TINY_GRPO, max_staleness=2, off_policy={"correction": correction})
    rows = build_grpo(cfg, with_evaluator=False).learn()
    assert [r["staleness/max"] for r in rows] == [0.0, 1.0, 2.0]
    assert "grpo_policy/off_policy/is_weight_mean" not in rows[0]
    for row in rows[1:]:
        assert 0.0 < row["grpo_policy/off_policy/is_weight_min"] <= \
            row["grpo_policy/off_policy/is_weight_mean"] <= \
            row["grpo_policy/off_policy/is_weight_max"]


def test_synchronous_run_reports_no_off_policy_metrics():
    rows, _ = _ppo_rows()
    assert not [k for row in rows for k in row if "off_policy" in k]


def test_proximal_logprobs_are_the_trainers_current_logprobs():
    from ppo_setup import TINY_PPO, build_ppo

    from fixtures.tiny_ppo import full_sequence

    _, mods = build_ppo(TINY_PPO)
    trainer = mods["ppo_policy"]
    trainer.ensure_setup()
    g = torch.Generator().manual_seed(0)
    mbs = [{"prompt": torch.randint(3, 40, (2, 8), generator=g),
            "prompt_mask": torch.ones(2, 8, dtype=torch.long),
            "response": torch.randint(3, 40, (2, 4), generator=g),
            "response_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])} for _ in range(2)]
    out = trainer.proximal_logprobs(mbs, 0)["proximal_logprobs"]
    assert isinstance(out, list) and len(out) == 2  # one tensor per micro-batch
    for mb, lp in zip(mbs, out):
        want = trainer.model.response_logprobs(*full_sequence(mb), 1.0) * mb["response_mask"]
        assert torch.equal(lp, want.detach()) and not lp.requires_grad
        assert (lp[mb["response_mask"] == 0] == 0).all()
    assert torch.equal(trainer.proximal_logprobs(mbs[1], 0)["proximal_logprobs"], out[1])
