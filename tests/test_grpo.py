"""GRPO math against hand-computed values, the rule-based reward, and the GRPO engine."""

from __future__ import annotations

import math

import pytest
import torch

import flowrl
from flowrl import RuleReward
from flowrl.engines import grpo
from flowrl.engines.rewards import exact_match, first_number, math_answer_match
from flowrl.errors import ConfigError
from flowrl.models.toy_tokenizer import ToyTokenizer
from flowrl.runtime.episodes import repeat_samples
from tiny_engines import TINY_GRPO, build_grpo, config, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- math ---------------------------------------------------------------------------------
def test_group_advantages_normalise_within_each_group():
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = grpo.group_advantages(scores, 4)
    std = math.sqrt(0.25 * 0.75)  # population std of (1, 0, 0, 0)
    expected = [0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std, 0.0, 0.0, 0.0, 0.0]
    assert torch.allclose(adv, torch.tensor(expected), atol=1e-4)
    assert torch.allclose(grpo.group_advantages(scores, 4, scale=False),
                          torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]))


def test_grpo_loss_with_ratio_one_and_no_kl_is_minus_the_advantage():
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    lp = torch.zeros(2, 2)
    adv = torch.tensor([1.0, -2.0])
    # per-token loss -A: [[-1, -1], [2, (pad)]]
    loss, stats = grpo.grpo_loss(lp, lp, lp, adv, mask, kl_coef=0.5)
    assert loss.item() == pytest.approx((-1.0 + 2.0) / 2)  # mean of sequence means
    loss_t, _ = grpo.grpo_loss(lp, lp, lp, adv, mask, loss_agg="token-mean")
    assert loss_t.item() == pytest.approx((-1.0 - 1.0 + 2.0) / 3)
    assert stats["kl"].item() == 0.0 and stats["clipfrac"].item() == 0.0


def test_grpo_loss_clips_the_ratio_and_adds_the_k3_kl():
    mask = torch.ones(1, 2)
    old = torch.zeros(1, 2)
    lp = torch.tensor([[math.log(1.5), 0.0]])  # ratio 1.5 on the first token, 1 on the second
    ref = torch.tensor([[math.log(1.5) - 1.0, 0.0]])  # log p - log q = 1 on the first token
    adv = torch.tensor([1.0])
    loss, stats = grpo.grpo_loss(lp, old, ref, adv, mask, clip_eps=0.2, kl_coef=0.1)
    k3 = math.exp(-1.0) - 1.0 + 1.0
    # token 1: max(-1.5, -1.2) = -1.2 (clipped); token 2: -1
    assert loss.item() == pytest.approx(((-1.2 + 0.1 * k3) + (-1.0)) / 2, rel=1e-5)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["kl"].item() == pytest.approx(k3 / 2, rel=1e-5)
    with pytest.raises(ValueError, match="unknown loss_agg"):
        grpo.grpo_loss(lp, old, ref, adv, mask, loss_agg="sum")


def test_grpo_loss_is_finite_with_extreme_values_on_padding():
    mask = torch.tensor([[1.0, 0.0]])
    lp = torch.tensor([[-0.5, -200.0]], requires_grad=True)
    loss, _ = grpo.grpo_loss(lp, torch.tensor([[-0.5, 0.0]]), torch.tensor([[-0.7, 0.0]]),
                             torch.tensor([1.0]), mask, kl_coef=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all() and lp.grad[0, 1] == 0


# ---- rule-based reward --------------------------------------------------------------------
def test_rules():
    assert exact_match("  Seven ", "seven") == 1.0 and exact_match("7 ", "8") == 0.0
    assert first_number("x = -12. or 3") == -12 and first_number("none") is None
    assert math_answer_match("7", "7") == 1.0 and math_answer_match("7.", 7) == 1.0
    assert math_answer_match("77", "7") == 0.0 and math_answer_match("", "7") == 0.0


def _responses(tok: ToyTokenizer, texts: list[str], width: int = 3) -> dict:
    resp = torch.full((len(texts), width), tok.pad_id)
    mask = torch.zeros(len(texts), width, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = tok.encode(t, bos=False) + [tok.eos_id]
        resp[i, :len(ids)], mask[i, :len(ids)] = torch.tensor(ids), 1
    return {"response": resp, "response_mask": mask}


def test_rule_reward_scores_and_group_advantages():
    flowrl.init({"runtime_args": {"num_inference_per_prompt": 2, "generation_batch_size": 4,
                                  "sample_per_episode": 4, "train_global_batch_size": 4,
                                  "train_micro_batch_size": 4},
                 "models": {"reward": {}}})
    tok = ToyTokenizer()
    reward = RuleReward("reward", tok, rule=math_answer_match).bind(flowrl.get_args())
    data = {**_responses(tok, ["7", "5", "1", "1"]), "answer": ["7", "7", "2", "2"]}
    out = reward.forward_step(data)
    assert out["score"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert torch.allclose(out["advantages"], torch.tensor([1.0, -1.0, 0.0, 0.0]), atol=1e-4)
    logged = dict((n, v) for n, v, _ in reward.drain_logged())
    assert logged == {"score": 0.25, "accuracy": 0.25}
    assert set(reward.eval_step(data)) == {"score"}
    with pytest.raises(KeyError, match="'reward' needs the reference answers under key 'answer'"):
        reward.forward_step(_responses(tok, ["1"]))


class _HFStyleTokenizer:
    """Decodes like a Hugging Face tokenizer: special tokens stay unless asked to skip them."""

    all_special_ids = [2]

    def decode(self, ids, **kwargs):
        keep = [i for i in ids if not (kwargs.get("skip_special_tokens") and i == 2)]
        return "".join("<eos>" if i == 2 else str(i - 10) for i in keep)


def test_rule_reward_skips_special_tokens_of_an_hf_style_tokenizer():
    # '6<eos>' must read as '6': RuleReward decodes with special tokens skipped.
    flowrl.init({"runtime_args": {"generation_batch_size": 2, "sample_per_episode": 2,
                                  "train_global_batch_size": 2, "train_micro_batch_size": 2},
                 "models": {"reward": {}}})
    reward = RuleReward("reward", _HFStyleTokenizer(), rule=exact_match).bind(flowrl.get_args())
    data = {"response": torch.tensor([[16, 2], [15, 2]]),
            "response_mask": torch.ones(2, 2, dtype=torch.long), "answer": ["6", "6"]}
    assert reward.texts(data) == ["6", "5"]
    assert reward.eval_step(data)["score"].tolist() == [1.0, 0.0]


# ---- episode semantics for n samples per prompt --------------------------------------------
def test_repeat_samples_makes_consecutive_groups():
    batch = {"prompt": torch.tensor([[1, 2], [3, 4]]), "answer": ["a", "b"], "n": 2}
    out = repeat_samples(batch, 3)
    assert out["prompt"][:, 0].tolist() == [1, 1, 1, 3, 3, 3]
    assert out["answer"] == ["a", "a", "a", "b", "b", "b"] and out["n"] == 2
    assert repeat_samples(batch, 1) is batch


def test_group_size_must_divide_the_rollout_batch():
    with pytest.raises(ConfigError, match="num_inference_per_prompt=3 must divide "
                                          "generation_batch_size=8"):
        flowrl.init({"runtime_args": {"num_inference_per_prompt": 3, "generation_batch_size": 8,
                                      "sample_per_episode": 8, "train_global_batch_size": 8}})


def test_grpo_engine_flows_groups_and_sync():
    engine = build_grpo(config(TINY_GRPO, num_episode=1), with_evaluator=False)
    assert [c.id for c in engine.graphs["rollout"].calls()] == [
        "policy.forward_step", "reference.forward_step", "reward.forward_step"]
    assert engine.sync_pairs == [("grpo_policy", "policy")]
    rows = engine.learn()
    # 32 samples = 8 prompts x 4; each rollout batch of 16 holds 4 groups of one prompt each
    assert rows[0]["samples"] == 32.0
    samples = engine.runner.buffer.samples
    for g in range(0, 32, 4):
        group = samples[g:g + 4]
        assert len({s["answer"] for s in group}) == 1
        assert all(torch.equal(s["prompt"], group[0]["prompt"]) for s in group)
        assert abs(sum(float(s["advantages"]) for s in group)) < 1e-4
    assert engine.runner.prompts.state_dict()["batch_in_epoch"] == 2  # 2 batches of 4 prompts
    for a, b in zip(engine.modules["policy"].model.parameters(),
                    engine.modules["grpo_policy"].model.parameters()):
        assert torch.equal(a, b)
    for key in ("reward/accuracy", "grpo_policy/loss", "grpo_policy/kl", "sync/bytes"):
        assert key in rows[0], key


@pytest.mark.slow
def test_grpo_accuracy_rises():
    """The example's learning signal, shortened: near-greedy accuracy on the training problems."""
    cfg = config(TINY_GRPO, num_episode=60, num_inference_per_prompt=8, sample_per_episode=256,
                 generation_batch_size=128, train_global_batch_size=128,
                 train_micro_batch_size=128, num_training_epoch=2, eval_episode_interval=60,
                 enable_eval_before_training=True, seed=1)
    for m in ("policy", "reference", "grpo_policy"):
        cfg["models"][m]["args"]["d_model"] = 64
    cfg["models"]["grpo_policy"]["args"]["lr"] = 0.001
    rows = build_grpo(cfg).learn()
    assert rows[0]["episode"] == 0 and rows[-1]["episode"] == 60
    before, after = rows[0]["eval/accuracy_train"], rows[-1]["eval/accuracy_train"]
    assert after > before + 0.15, (before, after)
    acc = [r["reward/accuracy"] for r in rows[1:]]
    assert sum(acc[-10:]) / 10 > sum(acc[:10]) / 10 + 0.1, acc
