"""Typed algorithm settings: names and options checked when the config is read."""

from __future__ import annotations

import pytest

from flowrl.algorithms import AlgorithmSettings
from flowrl.errors import ConfigError


def test_defaults_and_a_full_section():
    d = AlgorithmSettings()
    assert (d.advantage.estimator, d.policy_loss.name, d.kl.coef) == ("grpo", "ppo", 0.0)
    assert not d.kl.needs_reference and not d.overlong.enabled and not d.dynamic_sampling.enabled
    s = AlgorithmSettings.from_dict({
        "advantage": {"estimator": "grpo", "options": {"std": "unbiased", "eps": 1e-4}},
        "policy_loss": {"name": "dapo", "options": {"clip_high": 0.3}},
        "kl": {"coef": 0.04, "estimator": "k3", "placement": "loss"},
        "dynamic_sampling": {"enabled": True, "max_batches": 4},
        "overlong": {"max_length": 512, "buffer": 128},
    })
    assert s.kl.needs_reference and s.overlong.enabled
    assert s.advantage.options == {"std": "unbiased", "eps": 1e-4}


@pytest.mark.parametrize("data,message", [
    ({"advantage": {"estimator": "grpoo"}},
     "algorithm.advantage: unknown advantage estimator 'grpoo' (did you mean 'grpo'?)"),
    ({"advantage": {"options": {"stdd": "unbiased"}}},
     "algorithm.advantage: advantage estimator 'grpo' has no option 'stdd'"),
    ({"advantage": {"options": {"group_size": 4}}},
     "algorithm.advantage: options.group_size is set by runtime_args.num_inference_per_prompt"),
    ({"advantage": {"estimator": "gae", "options": {"values": 1}}},
     "options.values is an input computed by a model, not an option"),
    ({"policy_loss": {"name": "gspo", "options": {"clip_eps": 0.1}}},
     "algorithm.policy_loss: policy loss 'gspo' has no option 'clip_eps'"),
    ({"kl": {"estimator": "k5"}}, "algorithm.kl.estimator: unknown KL estimator 'k5'"),
    ({"kl": {"coef": -1}}, "algorithm.kl.coef: Input should be greater than or equal to 0"),
    ({"kl": {"placement": "advantage"}}, "algorithm.kl.placement: Input should be 'reward' or 'loss'"),
    ({"kl": {"coeff": 0.1}}, "algorithm.kl.coeff: Extra inputs are not permitted"),
    ({"overlong": {"max_length": 10, "buffer": 20}},
     "algorithm.overlong: buffer must be in (0, max_length=10], got 20"),
    ({"dynamic_sampling": {"max_batches": True}},
     "algorithm.dynamic_sampling.max_batches: expected a number, got the boolean true"),
])
def test_bad_settings_name_the_field(data, message):
    with pytest.raises(ConfigError) as e:
        AlgorithmSettings.from_dict(data)
    assert message in str(e.value)
