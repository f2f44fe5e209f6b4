"""TrainConfig: presets per algorithm name, the user's keys winning, the generated models
sections by role, and the config errors (each naming its field)."""

from __future__ import annotations

import copy

import pytest

from flowrl.config import FlowRLConfig
from flowrl.errors import ConfigError
from flowrl.recipes import ALGORITHMS
from flowrl.recipes.config import TrainConfig, load_train_config

RL = {
    "model": {"path": "no/such/model"},
    "data": {"path": "data.jsonl"},
    "reward": {"function": "rewards.py:score"},
    "runtime_args": {"num_inference_per_prompt": 4, "generation_batch_size": 16},
    "models": {"policy": {"generation": {"max_new_tokens": 8}}},
}


def config(name: str, **sections) -> dict:
    data = copy.deepcopy(RL)
    if name in ("dpo", "sft"):  # trained on the data alone: no reward, no policy to sample
        del data["reward"], data["models"]
    data["algorithm"] = {"name": name}
    for key, value in sections.items():
        data[key] = value
    return data


@pytest.mark.parametrize("name, loss, estimator, kl", [
    ("grpo", "grpo", "grpo", (0.04, "k3", "loss")),        # DeepSeekMath
    ("dapo", "dapo", "grpo", (0.0, "k3", "loss")),
    ("dr_grpo", "dr_grpo", "dr_grpo", (0.0, "k3", "loss")),
    ("gspo", "gspo", "grpo", (0.0, "k3", "loss")),
    ("rloo", "ppo", "rloo", (0.05, "k1", "reward")),
    ("reinforce_pp", "ppo", "reinforce_pp", (0.01, "k1", "reward")),
    ("remax", "ppo", "remax", (0.01, "k1", "reward")),
    ("ppo", "ppo", "gae", (0.02, "k1", "reward")),
])
def test_presets_set_the_papers_settings(name, loss, estimator, kl):
    a = load_train_config(config(name)).algorithm
    assert (a.policy_loss.name, a.advantage.estimator) == (loss, estimator)
    assert (a.kl.coef, a.kl.estimator, a.kl.placement) == kl


def test_preset_details():
    dapo = load_train_config(config("dapo")).algorithm
    assert dapo.policy_loss.options == {"clip_low": 0.2, "clip_high": 0.28}
    assert dapo.dynamic_sampling.enabled  # the episode loop refills (test_dynamic_sampling)
    # the overlong window is the generation budget, its buffer a fifth of it (20480 / 4096)
    assert (dapo.overlong.max_length, dapo.overlong.buffer) == (8, 1)
    dr = load_train_config(config("dr_grpo")).algorithm
    assert dr.policy_loss.options == {"max_length": 8}  # the constant normaliser
    gspo = load_train_config(config("gspo")).algorithm
    assert gspo.policy_loss.options == {"clip_low": 3e-4, "clip_high": 4e-4}
    assert load_train_config(config("dpo")).algorithm.beta == 0.1


def test_user_keys_win_over_the_preset():
    cfg = load_train_config(config("grpo", algorithm={
        "name": "grpo", "kl": {"coef": 0.1}, "policy_loss": {"options": {"clip_high": 0.3}}}))
    assert cfg.algorithm.kl.coef == 0.1 and cfg.algorithm.kl.estimator == "k3"
    assert cfg.algorithm.policy_loss.options == {"clip_low": 0.2, "clip_high": 0.3}
    # another loss: the preset's options (for its own loss) are not forced onto it
    other = load_train_config(config("gspo", algorithm={
        "name": "gspo", "policy_loss": {"name": "ppo"}}))
    assert other.algorithm.policy_loss.name == "ppo" and other.algorithm.policy_loss.options == {}


@pytest.mark.parametrize("name, kl, roles", [
    ("grpo", 0.04, ("policy", "reference", "reward", "advantage", "actor")),
    ("grpo", 0.0, ("policy", "reward", "advantage", "actor")),
    ("ppo", 0.02, ("policy", "reference", "critic", "reward", "advantage", "actor",
                   "critic_trainer")),
    ("ppo", 0.0, ("policy", "critic", "reward", "advantage", "actor", "critic_trainer")),
    ("remax", 0.0, ("policy", "reward", "advantage", "actor")),
    ("dpo", 0.0, ("feed", "actor")),          # the trainer holds a frozen reference
    ("dpo", 0.1, ("feed", "actor")),
    ("online_dpo", 0.0, ("policy", "reward", "reference", "actor")),  # DPO needs it
    ("sft", 0.0, ("feed", "actor")),
])
def test_roles_and_the_reference_only_with_a_kl_term(name, kl, roles):
    data = config(name)
    data["algorithm"]["kl"] = {"coef": kl}
    cfg = load_train_config(data)
    assert cfg.roles() == roles and tuple(cfg.models) == roles


def test_model_sections_are_generated_from_model_and_user_keys_override():
    data = config("ppo", model={"path": "m/policy", "critic": "m/critic", "dtype": "fp32"})
    data["models"]["actor"] = {"optim": {"lr": 0.5}, "dtype": "bf16"}
    cfg = load_train_config(data)
    m = cfg.models
    assert m["policy"].model_path == m["actor"].model_path == m["reference"].model_path == \
        "m/policy"
    assert m["critic"].model_path == m["critic_trainer"].model_path == "m/critic"
    assert m["reward"].model_path is None and m["advantage"].model_path is None  # weightless
    assert m["actor"].optim.lr == 0.5 and m["actor"].dtype == "bf16" and m["policy"].dtype == "fp32"
    # the weightless roles share the policy's device (and Ray worker)
    assert {r: c.colocation_group for r, c in m.items() if c.colocation_group} == {
        "policy": "policy", "reward": "policy", "advantage": "policy"}
    flow = cfg.flow_config()  # what the engine and Ray workers get: no recipe sections
    assert type(flow) is FlowRLConfig and set(flow.models) == set(m)
    assert isinstance(cfg, TrainConfig) and isinstance(cfg, FlowRLConfig)


def test_every_algorithm_name_loads():
    for name in ALGORITHMS:
        data = config(name)
        assert load_train_config(data).algorithm.name == name


@pytest.mark.parametrize("change, message", [
    (lambda d: d["algorithm"].update(name="grpoo"),
     "algorithm.name: unknown algorithm 'grpoo'; did you mean 'grpo'?"),
    (lambda d: d.pop("algorithm"), "algorithm.name is required"),
    (lambda d: d.pop("reward"), "grpo scores its samples: give exactly one of reward:"),
    (lambda d: d["model"].update(reward_model="rm"), "give exactly one of reward:"),
    (lambda d: d["runtime_args"].update(num_inference_per_prompt=1, generation_batch_size=4),
     "runtime_args.num_inference_per_prompt=1: grpo compares the samples of one prompt"),
    (lambda d: d["data"].update(kind="sft"), "data.kind='sft', but grpo reads 'rl' records"),
    (lambda d: d["models"].update(critic={}), "models.critic: grpo runs no model named "
                                              "'critic'"),
    (lambda d: d["algorithm"].update(kl={"coef": -1}),
     "algorithm.kl.coef: Input should be greater than or equal to 0"),
    (lambda d: d["algorithm"].update(advantage={"estimator": "gea"}),
     "unknown advantage estimator 'gea'"),
    (lambda d: d["model"].update(init="tiny_lama"), "model.init.kind"),
    (lambda d: d.update(rewards={}), "rewards: unknown field; did you mean 'reward'?"),
])
def test_config_errors_name_the_field(change, message):
    data = config("grpo")
    change(data)
    with pytest.raises(ConfigError) as e:
        load_train_config(data)
    assert message in str(e.value)


def test_dpo_and_sft_refuse_a_reward_and_dr_grpo_needs_a_budget(tmp_path):
    data = config("sft")
    data["reward"] = {"function": "r.py:f"}
    with pytest.raises(ConfigError, match="sft trains on the data alone: remove reward:"):
        load_train_config(data)
    data = config("dr_grpo")
    del data["models"]
    with pytest.raises(ConfigError, match="algorithm.policy_loss.options.max_length: the "
                                          "dr_grpo loss divides by the generation budget"):
        load_train_config(data)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "train.yaml"
    bad.write_text("algorithm: {name: grpo\n")
    with pytest.raises(ConfigError, match=r"train.yaml:\d+:\d+: YAML syntax error"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_train_config(tmp_path / "missing.yaml")
