"""GRPO options (issue 15 item 9): group normalisation through RuleReward, and a GRPO engine
that runs no reference model when the KL coefficient is 0."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import flowrl
from flowrl import GRPOEngine, RuleReward
from flowrl.engines import grpo
from flowrl.engines.rewards import math_answer_match
from flowrl.errors import AlgorithmError, ConfigError
from flowrl.models.toy_tokenizer import ToyTokenizer
from tiny_engines import TINY_GRPO, config, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- group normalisation options ----------------------------------------------------------
def test_group_advantages_std_estimator_scale_and_eps():
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    unbiased = math.sqrt(0.25)  # sample std of (1, 0, 0, 0): sqrt(0.75 / 3)
    adv = grpo.group_advantages(scores, 4, std="unbiased", eps=0.0)
    expected = [0.75 / unbiased, -0.25 / unbiased, -0.25 / unbiased, -0.25 / unbiased, 0, 0, 0, 0]
    torch.testing.assert_close(adv, torch.tensor(expected))
    pop = math.sqrt(0.25 * 0.75)
    torch.testing.assert_close(grpo.group_advantages(scores, 4, eps=0.5)[:1],
                               torch.tensor([0.75 / (pop + 0.5)]))
    torch.testing.assert_close(grpo.group_advantages(scores, 4, scale=False, std="unbiased"),
                               torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]))


def _reward(**options) -> RuleReward:
    flowrl.init({"runtime_args": {"num_inference_per_prompt": 2, "generation_batch_size": 4,
                                  "sample_per_episode": 4, "train_global_batch_size": 4,
                                  "train_micro_batch_size": 4},
                 "models": {"reward": {}}})
    return RuleReward("reward", ToyTokenizer(), rule=math_answer_match,
                      **options).bind(flowrl.get_args())


def _data(tok: ToyTokenizer, texts: list[str], answers: list[str]) -> dict:
    resp = torch.full((len(texts), 2), tok.pad_id)
    mask = torch.zeros(len(texts), 2, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = tok.encode(t, bos=False) + [tok.eos_id]
        resp[i, :len(ids)], mask[i, :len(ids)] = torch.tensor(ids), 1
    return {"response": resp, "response_mask": mask, "answer": answers}


@pytest.mark.parametrize("options, expected", [
    ({}, [1.0, -1.0, 0.0, 0.0]),  # today's default: population std, eps 1e-6
    ({"group_std": "unbiased", "group_eps": 0.0}, [1 / math.sqrt(2), -1 / math.sqrt(2), 0, 0]),
    ({"group_scale": False}, [0.5, -0.5, 0.0, 0.0]),  # Dr. GRPO
])
def test_rule_reward_group_normalisation_options(options, expected):
    reward = _reward(**options)
    data = _data(reward.tokenizer, ["7", "5", "1", "1"], ["7", "7", "2", "2"])
    torch.testing.assert_close(reward.forward_step(data)["advantages"], torch.tensor(expected),
                               atol=1e-5, rtol=0)


def test_rule_reward_rejects_bad_group_options():
    with pytest.raises(ConfigError, match="RuleReward 'reward': group_std must be one of "
                                          "'population', 'unbiased', got 'sample'"):
        _reward(group_std="sample")
    with pytest.raises(ConfigError, match="RuleReward 'reward': group_eps must be >= 0"):
        _reward(group_eps=-1.0)


# ---- the KL term without a reference model --------------------------------------------------
def _loss_batch():
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    old = -torch.rand(2, 3, generator=g)
    lp = (old + 0.3 * torch.randn(2, 3, generator=g)).requires_grad_()
    return lp, old, old + 0.2 * torch.randn(2, 3, generator=g), torch.tensor([1.0, -1.0]), mask


def test_grpo_loss_without_reference_needs_kl_coef_zero():
    lp, old, ref, adv, mask = _loss_batch()
    with_ref, s1 = grpo.grpo_loss(lp, old, ref, adv, mask, kl_coef=0.0)
    no_ref, s2 = grpo.grpo_loss(lp, old, None, adv, mask, kl_coef=0.0)
    assert torch.equal(with_ref, no_ref)
    assert set(s1) - set(s2) == {"kl"} and s1["kl"] > 0  # the drift monitor needs a reference
    assert all(torch.equal(s1[k], s2[k]) for k in s2)
    with pytest.raises(AlgorithmError, match="grpo_loss: kl_coef=0.04 needs ref_logprobs"):
        grpo.grpo_loss(lp, old, None, adv, mask)


def _build(kl_coef: float, with_reference: bool) -> GRPOEngine:
    from fixtures.tiny_grpo import GRPOTrainer, MathPolicy, PolicyReference, split_problems

    cfg = copy.deepcopy(config(TINY_GRPO, num_episode=2))
    cfg["models"]["grpo_policy"]["args"]["kl_coef"] = kl_coef
    if not with_reference:
        del cfg["models"]["reference"]
    flowrl.init(cfg)
    policy = MathPolicy("policy")
    reference = PolicyReference("reference") if with_reference else None
    reward = RuleReward("reward", ToyTokenizer(), rule=math_answer_match)
    engine = GRPOEngine(policy, reference, reward, GRPOTrainer("grpo_policy"))
    return engine.set_dataset(split_problems()[0])


def test_no_reference_call_is_traced_and_a_kl_of_zero_learns_the_same():
    no_ref = _build(0.0, with_reference=False)
    assert [c.id for c in no_ref.graphs["rollout"].calls()] == [
        "policy.forward_step", "reward.forward_step"]
    assert "reference" not in no_ref.modules
    rows = no_ref.learn()
    with_ref = _build(0.0, with_reference=True)  # today's flow: the output is unused
    ref_rows = with_ref.learn()
    assert len(rows) == len(ref_rows) == 2
    for got, want in zip(rows, ref_rows):
        assert set(want) - set(got) >= {"grpo_policy/kl"}
        # everything but timings and what the reference itself reports is the same
        same = [k for k in got if k in want and "time" not in k and "reference" not in k
                and not k.endswith("_per_s") and not k.startswith(("perf/", "mem/", "sync/"))]
        assert {"reward/accuracy", "reward/score", "grpo_policy/loss"} <= set(same)
        assert {k: got[k] for k in same} == {k: want[k] for k in same}
    for a, b in zip(no_ref.modules["grpo_policy"].model.parameters(),
                    with_ref.modules["grpo_policy"].model.parameters()):
        assert torch.equal(a, b)


def test_reference_none_with_a_kl_coefficient_is_a_config_error():
    with pytest.raises(ConfigError, match=r"models.grpo_policy.args.kl_coef=0.01: the KL term "
                                          r"needs a reference model, but GRPOEngine got "
                                          r"reference=None"):
        _build(0.01, with_reference=False)
