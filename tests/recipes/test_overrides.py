"""``key=value`` overrides: parsing, writing into the raw config, and their errors."""

from __future__ import annotations

import pytest

from flowrl.errors import ConfigError
from flowrl.recipes.config import load_train_config
from flowrl.recipes.overrides import apply_overrides, parse_override

BASE = {
    "algorithm": {"name": "grpo"},
    "model": {"path": "no/such/model"},
    "data": {"path": "data.jsonl"},
    "reward": {"function": "rewards.py:score"},
    "runtime_args": {"num_inference_per_prompt": 4, "generation_batch_size": 16},
    "models": {"policy": {"generation": {"max_new_tokens": 8}}},
}


@pytest.mark.parametrize("text, path, value", [
    ("algorithm.kl.coef=0.01", ["algorithm", "kl", "coef"], 0.01),
    ("runtime_args.num_episode=3", ["runtime_args", "num_episode"], 3),
    ("models.actor.optim.lr=1e-5", ["models", "actor", "optim", "lr"], 1e-5),  # YAML 1.1: str
    ("runtime_args.shuffle=false", ["runtime_args", "shuffle"], False),
    ("runtime_args.output_dir=null", ["runtime_args", "output_dir"], None),
    ("models.actor.optim.betas=[0.9, 0.95]", ["models", "actor", "optim", "betas"], [0.9, 0.95]),
    ("algorithm.name=dapo", ["algorithm", "name"], "dapo"),
    ("reward.function=a.py:f=g", ["reward", "function"], "a.py:f=g"),  # split at the first =
])
def test_parse_override_reads_yaml_scalars(text, path, value):
    assert parse_override(text) == (path, value)


@pytest.mark.parametrize("text, needle", [
    ("foo", "expected KEY=VALUE"),
    ("=1", "'' is not a dotted key"),
    ("a..b=1", "'a..b' is not a dotted key"),
    ("a.b=[1, 2", "not valid YAML"),
])
def test_malformed_override_names_it(text, needle):
    with pytest.raises(ConfigError) as e:
        parse_override(text)
    assert repr(text) in str(e.value) and needle in str(e.value)


def test_apply_overrides_creates_sections_and_refuses_scalars_as_sections():
    data = {"algorithm": {"name": "grpo"}}
    apply_overrides(data, ["algorithm.kl.coef=0.5", "runtime_args.seed=3"])
    assert data == {"algorithm": {"name": "grpo", "kl": {"coef": 0.5}},
                    "runtime_args": {"seed": 3}}
    with pytest.raises(ConfigError, match=r"override 'algorithm.name.x=1': algorithm.name is a "
                                          r"str \('grpo'\), not a section"):
        apply_overrides(data, ["algorithm.name.x=1"])


def test_overrides_win_over_the_file_and_the_preset():
    cfg = load_train_config(BASE, ["algorithm.kl.coef=0.01", "runtime_args.num_episode=3",
                                   "models.actor.optim.lr=1e-5"])
    assert cfg.algorithm.kl.coef == 0.01 and cfg.algorithm.kl.estimator == "k3"  # preset kept
    assert cfg.runtime_args.num_episode == 3
    assert cfg.models["actor"].optim.lr == 1e-5


@pytest.mark.parametrize("override, message", [
    ("algorithm.kl.coeff=0.01", "algorithm.kl.coeff: unknown field; did you mean 'coef'?"),
    ("runtime_args.num_episodes=3",
     "runtime_args.num_episodes: unknown field; did you mean 'num_episode'?"),
    ("models.actor.optim.learning_rate=1", "models.actor.optim.learning_rate: unknown field"),
    ("models.actr.optim.lr=1", "models.actr: grpo runs no model named 'actr'; did you mean "
                               "'actor'?"),
    ("algorithm.name=grpoo", "algorithm.name: unknown algorithm 'grpoo'; did you mean 'grpo'?"),
    ("data.pth=x.jsonl", "data.pth: unknown field; did you mean 'path'?"),
    ("model.pth=x", "model.pth: unknown field; did you mean 'path'?"),
    ("runtime_args.num_episode=true", "runtime_args.num_episode: expected a number, got the "
                                      "boolean true"),
])
def test_bad_override_is_validated_like_the_file(override, message):
    with pytest.raises(ConfigError) as e:
        load_train_config(BASE, [override])
    assert message in str(e.value)
