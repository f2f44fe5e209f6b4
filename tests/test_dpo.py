"""DPO / IPO losses against hand-computed values, preference data, and the DPO engines."""

from __future__ import annotations

import json
import math

import pytest
import torch

import flowrl
from flowrl import PreferenceDataset, load_preference_records
from flowrl.engines import dpo
from flowrl.errors import ConfigError
from tiny_engines import one_thread  # noqa: F401 (fixture)
from tiny_engines import TINY_DPO, TINY_ONLINE_DPO, build_dpo, build_online_dpo, config

T = torch.tensor

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- losses -------------------------------------------------------------------------------
def test_sigmoid_dpo_loss_and_stats_by_hand():
    # h = (pi_c - pi_r) - (ref_c - ref_r) = (-1 + 3) - 0 = 2; beta h = 1
    loss, stats = dpo.dpo_loss(T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)))  # -log sigmoid(1)
    assert stats["chosen_reward"].item() == pytest.approx(0.5)  # 0.5 * (-1 - -2)
    assert stats["rejected_reward"].item() == pytest.approx(-0.5)  # 0.5 * (-3 - -2)
    assert stats["margin"].item() == pytest.approx(1.0)
    assert stats["accuracy"].item() == 1.0


def test_label_smoothing_and_ipo_by_hand():
    args = (T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0]))
    smooth, _ = dpo.dpo_loss(*args, beta=0.5, label_smoothing=0.1)
    assert smooth.item() == pytest.approx(0.9 * math.log1p(math.exp(-1.0)) +
                                          0.1 * math.log1p(math.exp(1.0)))
    ipo, _ = dpo.dpo_loss(*args, beta=0.5, loss_type="ipo")
    assert ipo.item() == pytest.approx((2.0 - 1.0 / (2 * 0.5)) ** 2)  # (h - 1/(2 beta))^2 = 1
    with pytest.raises(ValueError, match="unknown DPO loss_type 'kto'"):
        dpo.dpo_loss(*args, loss_type="kto")


def test_weights_drop_pairs_and_gradients_push_chosen_up():
    pc = T([-1.0, -5.0], requires_grad=True)
    pr = T([-3.0, -1.0], requires_grad=True)
    loss, stats = dpo.dpo_loss(pc, pr, T([-2.0, 0.0]), T([-2.0, 0.0]), beta=0.5,
                               weights=T([1.0, 0.0]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)))  # the second pair is ignored
    assert stats["accuracy"].item() == 1.0
    loss.backward()
    assert pc.grad[0] < 0 < pr.grad[0] and pc.grad[1] == 0 and pr.grad[1] == 0


def test_sequence_logprobs_by_hand():
    # V = 4; uniform logits everywhere except position 1, where token 3 has logit ln 3
    logits = torch.zeros(1, 4, 4)
    logits[0, 1, 3] = math.log(3.0)  # p(3) = 3 / (3 + 3) = 0.5
    tokens = T([[1, 2, 3, 0]])
    loss_mask = T([[0, 0, 1, 1]])  # tokens 2 and 3 (the response) count, via positions 1 and 2
    lp = dpo.sequence_logprobs(logits, tokens, loss_mask)
    assert lp.item() == pytest.approx(math.log(0.5) + math.log(0.25))
    avg = dpo.sequence_logprobs(logits, tokens, loss_mask, average=True)
    assert avg.item() == pytest.approx((math.log(0.5) + math.log(0.25)) / 2)


def test_select_pairs_and_ties():
    scores = T([0.1, 0.5, 0.3, 0.2, 0.2, 0.2])
    chosen, rejected, valid = dpo.select_pairs(scores, 3)
    assert chosen.tolist() == [1, 3] and rejected.tolist() == [0, 3]
    assert valid.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="group_size >= 2"):
        dpo.select_pairs(scores, 1)


def test_preference_pairs_layout():
    data = {"prompt": T([[0, 1, 5], [0, 1, 5], [1, 6, 7], [1, 6, 7]]),
            "prompt_mask": T([[0, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]]),
            "response": T([[8, 2], [9, 0], [10, 2], [11, 2]]),
            "response_mask": T([[1, 1], [1, 0], [1, 1], [1, 1]])}
    out = dpo.preference_pairs(data, T([0.0, 1.0, 0.5, 0.2]), 2)
    assert set(out) == set(dpo.PAIR_KEYS)
    assert out["chosen_tokens"].tolist() == [[0, 1, 5, 9, 0], [1, 6, 7, 10, 2]]
    assert out["rejected_tokens"].tolist() == [[0, 1, 5, 8, 2], [1, 6, 7, 11, 2]]
    assert out["chosen_mask"].tolist() == [[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert out["chosen_loss_mask"].tolist() == [[0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    assert out["chosen_score"].tolist() == [1.0, 0.5] and out["pair_weight"].tolist() == [1, 1]


# ---- preference data ----------------------------------------------------------------------
def _encode(s: str) -> list[int]:
    return [ord(c) - 96 for c in s]


def test_preference_dataset_tokenizes_and_pads():
    ds = PreferenceDataset([{"prompt": "ab", "chosen": "c", "rejected": "dde", "id": 7}],
                           _encode, pad_id=0, eos_id=30)
    batch = ds.collate_fn([ds[0]])
    assert batch["chosen_tokens"].tolist() == [[1, 2, 3, 30]]
    assert batch["chosen_loss_mask"].tolist() == [[0, 0, 1, 1]]
    assert batch["rejected_tokens"].tolist() == [[1, 2, 4, 4, 5, 30]]
    assert batch["rejected_mask"].tolist() == [[1, 1, 1, 1, 1, 1]]
    assert batch["rejected_loss_mask"].tolist() == [[0, 0, 1, 1, 1, 1]]
    two = ds.collate_fn([ds[0], ds[0]])
    assert two["chosen_tokens"].shape == (2, 4)


def test_preference_records_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="record 1 key 'rejected' is missing"):
        PreferenceDataset([{"prompt": "a", "chosen": "b", "rejected": "c"},
                           {"prompt": "a", "chosen": "b"}], _encode, 0)
    with pytest.raises(ConfigError, match="record 0 key 'chosen' is a int"):
        PreferenceDataset([{"prompt": "a", "chosen": 3, "rejected": "c"}], _encode, 0)
    with pytest.raises(ConfigError, match="over max_len=3"):
        PreferenceDataset([{"prompt": "ab", "chosen": "cd", "rejected": "e"}], _encode, 0,
                          max_len=3)
    path = tmp_path / "prefs.jsonl"
    rec = {"prompt": "p", "chosen": "good", "rejected": "bad"}
    path.write_text(json.dumps(rec) + "\n\n" + json.dumps(rec) + "\n")
    assert load_preference_records(path) == [rec, rec]
    path.write_text(json.dumps(rec) + "\n{oops\n")
    with pytest.raises(ConfigError, match="prefs.jsonl:2: not valid JSON"):
        load_preference_records(path)


# ---- engines ------------------------------------------------------------------------------
def test_dpo_engine_flows_have_no_sync_and_the_trainer_builds_the_data():
    engine = build_dpo(config(TINY_DPO))
    assert [c.id for c in engine.graphs["rollout"].calls()] == ["reference.forward_step"]
    assert [c.id for c in engine.graphs["train"].calls()] == ["policy.train_step"]
    assert engine.sync_pairs == [] and engine.compile().ops["sync"] == []


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_margin_grows(loss_type):
    cfg = config(TINY_DPO, num_episode=6, eval_episode_interval=6,
                 enable_eval_before_training=True)
    for m in ("policy", "reference"):
        cfg["models"][m]["args"]["loss_type"] = loss_type
    cfg["models"]["policy"]["args"]["beta"] = 0.1 if loss_type == "sigmoid" else 0.5
    rows = build_dpo(cfg).learn()
    train = [r["policy/margin"] for r in rows[1:]]
    assert train[-1] > train[0] + 0.05 and train[-1] > 0, train
    assert rows[-1]["policy/loss"] < rows[1]["policy/loss"]
    assert rows[0]["eval/margin"] == 0.0  # policy == reference before training
    assert rows[-1]["eval/margin"] > 0.05 and rows[-1]["eval/correct"] > 0.8, rows[-1]
    assert rows[1]["samples"] == 32.0


def test_online_dpo_ranks_groups_into_pairs_and_reward_rises():
    cfg = config(TINY_ONLINE_DPO, num_episode=10, sample_per_episode=128,
                 generation_batch_size=64, train_global_batch_size=16, train_micro_batch_size=16,
                 seed=1)
    for m in ("policy", "reference", "dpo_policy"):
        cfg["models"][m]["args"]["d_model"] = 64
    cfg["models"]["policy"]["args"]["max_new_tokens"] = 16
    engine = build_online_dpo(cfg)
    assert [c.id for c in engine.graphs["rollout"].calls()] == [
        "policy.forward_step", "reward.forward_step", "reference.forward_step"]
    assert engine.sync_pairs == [("dpo_policy", "policy")]
    rows = engine.learn()
    assert rows[0]["samples"] == 32.0  # 128 samples = 32 prompts x 4 -> 32 pairs
    pairs = engine.runner.buffer.samples
    assert all(float(p["chosen_score"]) >= float(p["rejected_score"]) for p in pairs)
    reward = [r["reward/reward"] for r in rows]
    assert sum(reward[-3:]) / 3 > sum(reward[:3]) / 3 + 0.05, reward
    for a, b in zip(engine.modules["policy"].model.parameters(),
                    engine.modules["dpo_policy"].model.parameters()):
        assert torch.equal(a, b)


def test_online_dpo_needs_two_samples_per_prompt():
    with pytest.raises(ConfigError, match="num_inference_per_prompt >= 2"):
        build_online_dpo(config(TINY_ONLINE_DPO, num_inference_per_prompt=1))


def test_too_few_pairs_for_a_global_batch_is_explained():
    engine = build_online_dpo(config(TINY_ONLINE_DPO, train_global_batch_size=16,
                                     train_micro_batch_size=16))
    with pytest.raises(flowrl.FlowRLError, match="produced 8 samples this episode, fewer than "
                                                 "one global batch"):
        engine.learn()
