"""Built-in inference modules on a tiny local Llama: Policy (dataset, generation, log-probs,
greedy baseline, sync), Reference, Critic, RewardModel, and their bad inputs."""

from __future__ import annotations

import pytest
import torch

from flowrl.config import load_config
from flowrl.errors import ConfigError, DatasetError, MissingExtraError
from flowrl.models import hf
from flowrl.models._extras import available
from flowrl.models.builtin.critic import Critic
from flowrl.models.builtin.inference import full_sequence
from flowrl.models.builtin.policy import Policy
from flowrl.models.builtin.prompts import left_align
from flowrl.models.builtin.reference import Reference
from flowrl.models.builtin.reward_model import RewardModel

GEN = {"max_new_tokens": 8, "temperature": 0.7}
RECORDS = [{"prompt": "hello world", "answer": "a", "level": 1},
           {"prompt": "ab", "answer": "b", "level": 2},
           {"prompt": "xyz q", "answer": "c", "level": 3}]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("builtin_inference")
    policy = hf.save_tiny_llama(base / "policy", seed=0, initializer_range=0.2)
    other = hf.save_tiny_llama(base / "other", seed=1, initializer_range=0.2)
    tok = hf.build_char_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(2)
        cfg = hf.tiny_llama_config(48, num_labels=1, pad_token_id=tok.pad_token_id)
        classifier = hf.transformers().LlamaForSequenceClassification(cfg)
    classifier.save_pretrained(str(base / "classifier"))
    tok.save_pretrained(str(base / "classifier"))
    value = hf.HFValueModel.from_pretrained(policy, head_seed=3)
    value.save_pretrained(base / "value")
    return {"policy": str(policy), "other": str(other), "classifier": str(base / "classifier"),
            "value": str(base / "value")}


def _config(dirs, **policy_args):
    return load_config({"models": {
        "policy": {"model_path": dirs["policy"], "generation": GEN,
                   "args": {"max_prompt_len": 6, "generator": "hf", **policy_args}},
        "ref": {"model_path": dirs["policy"], "generation": GEN},
        "trainer": {"model_path": dirs["other"], "trainable": True, "dtype": "fp32"},
        "critic": {"model_path": dirs["policy"], "args": {"head_seed": 5}},
        "rm": {"model_path": dirs["classifier"]},
        "rm_value": {"model_path": dirs["value"]},
        "bad": {"model_path": dirs["policy"] + "_missing"},
        "unset": {},
        "not_rm": {"model_path": dirs["policy"]}}})


def _up(module, config):
    module.bind(config).ensure_setup()
    return module


@pytest.fixture(scope="module")
def config(dirs):
    return _config(dirs)


@pytest.fixture(scope="module")
def policy(config):
    return _up(Policy("policy"), config)


@pytest.fixture(scope="module")
def rollout(policy):
    ds = policy.build_dataset(RECORDS)
    batch = ds.collate_fn([ds[i] for i in range(len(ds))])
    torch.manual_seed(0)
    return batch, policy.forward_step(batch)


# ---- dataset -------------------------------------------------------------------------------
def test_dataset_left_pads_truncates_and_passes_columns(policy):
    ds = policy.build_dataset(RECORDS)
    batch = ds.collate_fn([ds[0], ds[1]])
    tok = policy.tokenizer
    full = tok("hello world").input_ids
    assert batch["prompt"].shape == (2, 6)  # the longest, capped at max_prompt_len
    assert batch["prompt"][0].tolist() == full[-6:]  # truncated from the left
    assert batch["prompt"][1].tolist() == [tok.pad_token_id] * 4 + tok("ab").input_ids
    assert batch["prompt_mask"].tolist() == [[1] * 6, [0, 0, 0, 0, 1, 1]]
    assert batch["prompt_text"] == ["hello world", "ab"]
    assert batch["answer"] == ["a", "b"] and batch["level"] == [1, 2]
    short = ds.collate_fn([ds[1]])
    assert short["prompt"].shape == (1, 2)  # padded to this batch's longest only


def test_dataset_accepts_strings(policy):
    ds = policy.build_dataset(["ab", "abc"])
    batch = ds.collate_fn([ds[0], ds[1]])
    assert batch["prompt_text"] == ["ab", "abc"]
    assert set(batch) == {"prompt", "prompt_mask", "prompt_text"}


@pytest.mark.parametrize("records, message", [
    ([{"prompt": "ab"}, {"question": "x"}],
     "models.policy.build_dataset: record 1 has no 'prompt'"),
    ([{"prompt": [{"role": "user", "content": "x"}]}], "record 0 has list"),
    ([3], "item 0 is a int"),
    ([{"prompt": "ab", "prompt_text": "x"}], "record 0 has column 'prompt_text'"),
])
def test_dataset_bad_records(policy, records, message):
    with pytest.raises(DatasetError, match=message):
        policy.build_dataset(records)


def test_left_align_restores_left_padding():
    prompt = torch.tensor([[5, 6, 0, 0], [1, 2, 3, 4]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    aligned, m = left_align(prompt, mask, pad_id=9)
    assert aligned.tolist() == [[9, 9, 5, 6], [1, 2, 3, 4]]
    assert m.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]


# ---- generation ----------------------------------------------------------------------------
def test_forward_step_keys_shapes_and_mask_after_eos(policy, rollout):
    batch, out = rollout
    assert set(out) == {"prompt", "prompt_mask", "response", "response_mask", "logprobs",
                        "prompt_text", "answer", "level"}
    assert out["answer"] == ["a", "b", "c"] and out["prompt_text"] == batch["prompt_text"]
    assert torch.equal(out["prompt"], batch["prompt"])
    assert out["response"].shape == out["response_mask"].shape == out["logprobs"].shape == (3, 8)
    eos, pad = policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id
    for row, mask in zip(out["response"].tolist(), out["response_mask"].tolist()):
        n = sum(mask)
        assert mask == [1] * n + [0] * (8 - n)  # 1 up to and including EOS
        assert eos not in row[:n - 1]
        assert row[n:] == [pad] * (8 - n)
        if n < 8:
            assert row[n - 1] == eos
    assert (out["logprobs"][out["response_mask"] == 0] == 0).all()
    assert (out["logprobs"][out["response_mask"] == 1] < 0).all()
    assert policy.drain_logged()  # generated_tokens, response_length


def test_logprobs_equal_recomputed_at_generation_temperature(policy, rollout):
    _, out = rollout
    tokens, mask, p = full_sequence(out)
    with torch.no_grad():
        ref = hf.response_logprobs(policy.model, tokens, mask, p, temperature=0.7)
    torch.testing.assert_close(out["logprobs"], ref * out["response_mask"])


def test_right_padded_prompts_are_realigned(policy, rollout):
    batch, _ = rollout
    pad = policy.tokenizer.pad_token_id
    flipped = {"prompt": torch.stack([torch.cat([r[m.bool()], r[~m.bool()]]) for r, m in
                                      zip(batch["prompt"], batch["prompt_mask"])]),
               "prompt_mask": batch["prompt_mask"].flip(1)}
    assert flipped["prompt"][1].tolist()[-1] == pad  # right-padded now
    a = policy.greedy_step(batch)
    b = policy.greedy_step(flipped)
    assert torch.equal(a["baseline_response"], b["baseline_response"])


def test_greedy_step_is_deterministic(policy, rollout):
    batch, _ = rollout
    torch.manual_seed(1)
    a = policy.greedy_step(batch)
    torch.manual_seed(2)
    b = policy.greedy_step(batch)
    assert set(a) == {"baseline_response", "baseline_response_mask"}
    assert torch.equal(a["baseline_response"], b["baseline_response"])
    assert torch.equal(a["baseline_response_mask"], b["baseline_response_mask"])


def test_reference_equals_policy_logprobs_at_the_same_weights(config, rollout):
    _, out = rollout
    ref = _up(Reference("ref"), config).forward_step(out)
    torch.testing.assert_close(ref["ref_logprobs"], out["logprobs"])


def test_reference_on_rollouts_of_different_prompt_widths(config, policy):
    """The replay buffer collates rows of several rollouts, right-padding the narrower prompts
    with 0; the scorers re-align the prompt block, so the numbers do not change."""
    from flowrl.runtime.batch import Batch

    ds = policy.build_dataset(["ab", "hello world"])
    torch.manual_seed(3)
    parts = [policy.forward_step(ds.collate_fn([ds[i]])) for i in (0, 1)]
    mixed = Batch.collate(Batch(parts[0]).samples() + Batch(parts[1]).samples())
    assert mixed["prompt_mask"][0].tolist() == [1, 1, 0, 0, 0, 0]  # right-padded by collate
    ref = _up(Reference("ref"), config).forward_step(mixed)
    torch.testing.assert_close(ref["ref_logprobs"], mixed["logprobs"])


def test_forward_batch_size_chunks_give_the_same_numbers(dirs, rollout):
    _, out = rollout
    config = load_config({"models": {"ref": {"model_path": dirs["policy"], "generation": GEN,
                                             "args": {"forward_batch_size": 2}}}})
    ref = _up(Reference("ref"), config).forward_step(out)
    torch.testing.assert_close(ref["ref_logprobs"], out["logprobs"])


def test_policy_accepts_sync_from_a_trainer(dirs, rollout):
    from flowrl.models.hf import HFModule
    from flowrl.runtime.sync import sync_parameters

    config = _config(dirs)
    policy = _up(Policy("policy"), config)
    trainer = _up(HFModule("trainer"), config)
    _, out = rollout
    tokens, mask, p = full_sequence(out)
    sync_parameters(trainer, policy)
    with torch.no_grad():
        after = hf.response_logprobs(policy.model, tokens, mask, p, 0.7)
        want = hf.response_logprobs(trainer.model, tokens, mask, p, 0.7)
    torch.testing.assert_close(after, want)
    assert not torch.allclose(after * out["response_mask"], out["logprobs"])


# ---- scorers -------------------------------------------------------------------------------
def test_critic_values_on_response_positions(config, rollout):
    _, out = rollout
    critic = _up(Critic("critic"), config)
    values = critic.forward_step(out)["values"]
    assert values.shape == (3, 8)
    assert (values[out["response_mask"] == 0] == 0).all()
    tokens, mask, p = full_sequence(out)
    with torch.no_grad():
        want = hf.response_values(critic.model, tokens, mask, p) * out["response_mask"]
    torch.testing.assert_close(values, want)


@pytest.mark.parametrize("name", ["rm", "rm_value"])
def test_reward_model_scores_last_real_token(config, rollout, name):
    _, out = rollout
    rm = _up(RewardModel(name), config)
    score = rm.forward_step(out)["score"]
    assert score.shape == (3,) and score.dtype == torch.float32
    # the score of row 0 alone, without any padding, is the same number
    n = int(out["response_mask"][0].sum())
    keep = out["prompt_mask"][0].bool()
    alone = torch.cat([out["prompt"][0][keep], out["response"][0][:n]])[None]
    torch.testing.assert_close(rm.scores(alone, torch.ones_like(alone))[0], score[0])
    base = rm.baseline_step({**out, "baseline_response": out["response"],
                             "baseline_response_mask": out["response_mask"]})
    torch.testing.assert_close(base["baseline_score"], score)


# ---- bad inputs ----------------------------------------------------------------------------
def test_missing_model_path(config):
    with pytest.raises(ConfigError, match=r"models\.unset\.model_path must name"):
        _up(Reference("unset"), config)


def test_model_dir_does_not_exist(config, dirs):
    with pytest.raises(ConfigError, match=r"models\.bad\.model_path: directory .*_missing "
                                          r"does not exist"):
        _up(Reference("bad"), config)


def test_causal_lm_is_not_a_reward_model(config, dirs):
    with pytest.raises(ConfigError, match=r"^models\.not_rm\.model_path: .* is not a reward "
                                          r"model: its config.json architectures are "
                                          r"\['LlamaForCausalLM'\]"):
        _up(RewardModel("not_rm"), config)


def test_wrong_generator_name(dirs):
    config = _config(dirs, generator="sglang")
    with pytest.raises(ConfigError, match=r"models\.policy\.args\.generator: Input should be "
                                          r"'auto', 'hf' or 'vllm'"):
        Policy("policy").bind(config)


@pytest.mark.skipif(available("vllm"), reason="vllm is installed")
def test_vllm_generator_without_vllm(dirs):
    policy = Policy("policy").bind(_config(dirs, generator="vllm"))
    with pytest.raises(MissingExtraError, match=r"models\.policy\.args\.generator is 'vllm': "
                                                r".*pip install 'flowrl\[vllm\]'"):
        policy.ensure_setup()
    auto = _up(Policy("policy"), _config(dirs, generator="auto"))
    assert auto.generator_name == "hf" and auto.engine is None


def test_step_without_rollout_keys(config):
    ref = Reference("ref").bind(config)
    with pytest.raises(ConfigError, match=r"models\.ref: forward_step needs batch keys "
                                          r"response, response_mask"):
        ref.forward_step({"prompt": torch.zeros(1, 2), "prompt_mask": torch.ones(1, 2)})
