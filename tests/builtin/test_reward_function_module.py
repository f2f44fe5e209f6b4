"""FunctionReward: a user's reward file scores decoded completions (special tokens skipped)
with the batch's columns; exceptions and timeouts score error_score, are counted in the
module's metrics, and never hang; the pool closes on shutdown."""

from __future__ import annotations

import time

import pytest
import torch

from flowrl.config import load_config
from flowrl.errors import ConfigError
from flowrl.models import hf
from flowrl.models.builtin.function_reward import FunctionReward
from flowrl.rewards import RewardConfig, RewardFunctionError

REWARDS = '''
import time

def score(prompts, completions, answer, **columns):
    return [float(c == a) + 0.1 * len(p) for p, c, a in zip(prompts, completions, answer)]

def boom(prompts, completions, **columns):
    raise ValueError("no score")

def slow(prompts, completions, **columns):
    time.sleep(1.0)
    return [1.0] * len(completions)

def seen(prompts, completions, level, **columns):
    return [float(x) for x in level]
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("function_reward")
    (base / "rewards.py").write_text(REWARDS)
    model = hf.save_tiny_llama(base / "model", seed=0)
    config = load_config({"models": {"reward": {}}})
    return base, model, config


def _module(env, function, **kw):
    base, model, config = env
    cfg = RewardConfig(function=f"rewards.py:{function}", mode=kw.pop("mode", "inline"), **kw)
    module = FunctionReward("reward", cfg, base_dir=base, tokenizer_path=model)
    module.bind(config).ensure_setup()
    return module


def _batch(tokenizer, completions, key="response"):
    """Responses as a policy writes them: text + EOS, padded after it."""
    rows = [tokenizer(c, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
            for c in completions]
    width = max(map(len, rows)) + 2
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return {key: ids, f"{key}_mask": mask, "prompt_text": ["ab", "abcd", "a"],
            "answer": ["six", "x", "seven"], "level": [1, 2, 3]}


def _metrics(module):
    return {name: (value, reduce) for name, value, reduce in module.drain_logged()}


def test_scores_decoded_completions_with_columns(env):
    module = _module(env, "score")
    out = module.forward_step(_batch(module.tokenizer, ["six", "y", "seven"]))
    assert set(out) == {"score"} and out["score"].dtype == torch.float32
    # 'six</s>' decodes to 'six' (special tokens skipped): exact match scores 1
    torch.testing.assert_close(out["score"], torch.tensor([1.2, 0.4, 1.1]))
    m = _metrics(module)
    assert m["reward/errors"] == (0.0, "sum") and m["reward/timeouts"] == (0.0, "sum")
    assert m["reward/mean"][0] == pytest.approx(2.7 / 3) and m["reward/mean"][1] == "mean"
    assert m["time/reward_s"][0] >= 0 and m["time/reward_s"][1] == "sum"
    module.shutdown()


def test_passthrough_columns_and_baseline_step(env):
    module = _module(env, "seen")
    batch = _batch(module.tokenizer, ["a", "b", "c"], key="baseline_response")
    out = module.baseline_step(batch)
    assert out["baseline_score"].tolist() == [1.0, 2.0, 3.0]
    module.shutdown()


def test_prompts_decoded_when_there_is_no_prompt_text(env):
    module = _module(env, "score")
    tok = module.tokenizer
    batch = _batch(tok, ["six", "x", "no"])
    del batch["prompt_text"]
    batch["prompt"] = torch.tensor([[tok.pad_token_id] * 2 + tok("ab").input_ids,
                                    tok("abcd").input_ids,
                                    [tok.pad_token_id] * 3 + tok("a").input_ids])
    batch["prompt_mask"] = (batch["prompt"] != tok.pad_token_id).long()
    torch.testing.assert_close(module.forward_step(batch)["score"],
                               torch.tensor([1.2, 1.4, 0.1]))
    module.shutdown()


def test_exception_scores_error_score_and_is_counted(env, caplog):
    module = _module(env, "boom", error_score=-1.0, call_batch_size=1)
    out = module.forward_step(_batch(module.tokenizer, ["a", "b", "c"]))
    assert out["score"].tolist() == [-1.0, -1.0, -1.0]
    m = _metrics(module)
    assert m["reward/errors"] == (3.0, "sum") and m["reward/failed_samples"] == (3.0, "sum")
    assert "no score" in caplog.text
    module.shutdown()


def test_timeout_is_counted_and_does_not_hang(env):
    module = _module(env, "slow", mode="thread", timeout_s=0.1, error_score=-2.0,
                     num_workers=3, call_batch_size=1)
    t0 = time.perf_counter()
    out = module.forward_step(_batch(module.tokenizer, ["a", "b", "c"]))
    assert time.perf_counter() - t0 < 0.9  # not the 1 s the function sleeps
    assert out["score"].tolist() == [-2.0, -2.0, -2.0]
    assert _metrics(module)["reward/timeouts"] == (3.0, "sum")
    module.shutdown()


def test_shutdown_closes_the_pool(env):
    module = _module(env, "score")
    assert module.pool is not None
    module.shutdown()
    module.shutdown()  # twice is fine
    assert module.pool is None
    with pytest.raises(ConfigError, match=r"models\.reward: forward_step before setup"):
        module.forward_step(_batch(module.tokenizer, ["a", "b", "c"]))


def test_bad_reward_spec_names_the_file(env):
    base, model, _ = env
    with pytest.raises(RewardFunctionError, match="missing.py"):
        FunctionReward("reward", RewardConfig(function="missing.py:score"), base_dir=base,
                       tokenizer_path=model)


def test_bad_constructor_arguments(env):
    base, model, config = env
    with pytest.raises(ConfigError, match=r"models\.reward: FunctionReward takes a RewardConfig"):
        FunctionReward("reward", {"function": "rewards.py:score"}, base, model)
    with pytest.raises(ConfigError, match=r"models\.reward: FunctionReward needs tokenizer_path"):
        FunctionReward("reward", RewardConfig(function="rewards.py:score"), base)
    module = FunctionReward("reward", RewardConfig(function="rewards.py:score"), base,
                            tokenizer_path=base)
    with pytest.raises(ConfigError, match=rf"models\.reward: no tokenizer in {base}"):
        module.bind(config).ensure_setup()


def test_missing_response_keys(env):
    module = _module(env, "score")
    with pytest.raises(ConfigError, match=r"models\.reward: forward_step needs batch keys "
                                          r"response, response_mask"):
        module.forward_step({"prompt_text": ["a"]})
    module.shutdown()
