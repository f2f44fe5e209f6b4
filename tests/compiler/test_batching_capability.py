"""Issue 14 leftover: a generator's batching is declared by its module, not written by hand.

``BaseModule.generation_batching`` is "static" (HF ``generate``); ``VLLMModule`` declares
"continuous"; the built-in ``Policy`` reports "continuous" when its ``args.generator`` is or
resolves to vLLM. The engine passes it with the parallel dimensions
(``capabilities[name]["continuous_batching"]``); ``models.<name>.generation.batching`` wins
when written; without either, decode stays static (every existing estimate unchanged).
"""

from __future__ import annotations

import pytest

import flowrl
from flowrl.compiler import compile_schedule
from flowrl.compiler.resources import model_resources
from flowrl.config import ModelConfig, load_config
from flowrl.engines.engine import module_capabilities
from flowrl.errors import ConfigError
from flowrl.models.base import BaseModule
from flowrl.models.builtin import generators
from flowrl.models.builtin.policy import Policy

from compiler_helpers import ARGS, METHODS, SYNC, ppo_graphs, ppo_models, shape, tiny_config
from fixtures.tiny_ppo import (PolicyInference, PolicyReference, PolicyTrainer, RewardInference,
                               ValueInference, ValueTrainer, make_prompts)

TAIL = {"max_new_tokens": 1024, "expected_new_tokens": 256, "p99_new_tokens": 1024}


def models(**policy_generation):
    """PPO 7B whose policy has a long tail (mean 256, p99 at the 1024 cap)."""
    out = ppo_models(7, max_seq_len=2048)
    out["policy"] = ModelConfig(**shape(7), max_seq_len=2048,
                                generation={**TAIL, **policy_generation})
    return out


def batching(caps=None, **policy_generation) -> dict[str, str]:
    res = model_resources(models(**policy_generation), ppo_graphs(), SYNC, caps)
    return {n: r.batching for n, r in res.items()}


CONTINUOUS = {"policy": {"tp": True, "pp": False, "continuous_batching": True}}


def test_module_classes_declare_their_batching():
    from flowrl.models.vllm_module import VLLMModule

    assert BaseModule.generation_batching == "static"
    assert VLLMModule.generation_batching == "continuous"
    assert PolicyTrainer.generation_batching == "static"  # inherited
    caps = module_capabilities(PolicyInference("policy"))
    assert caps == {"tp": False, "pp": False, "continuous_batching": False}


def test_declared_continuous_applies_when_the_config_is_silent():
    assert set(batching().values()) == {"static"}  # no capabilities: the old default
    assert set(batching({}).values()) == {"static"}  # nothing declared
    declared = batching(CONTINUOUS)
    assert declared["policy"] == "continuous"
    assert {b for n, b in declared.items() if n != "policy"} == {"static"}


def test_the_configs_batching_wins_over_the_declaration():
    assert batching(CONTINUOUS, batching="static")["policy"] == "static"
    assert batching({}, batching="continuous")["policy"] == "continuous"
    assert ModelConfig().generation.batching is None  # unset: the module decides


def test_declared_batching_changes_the_estimate_like_the_config_does():
    def iteration(caps, **gen):
        s = compile_schedule(ppo_graphs(), models(**gen), SYNC, "8xH100-80GB", "colocate",
                             METHODS, 0, runtime_args=ARGS, capabilities=caps)
        return s.estimates.iteration_time

    static, declared = iteration(None), iteration(CONTINUOUS)
    assert declared < static  # the tail no longer holds the whole batch
    assert declared == pytest.approx(iteration(None, batching="continuous"))
    assert iteration(CONTINUOUS, batching="static") == pytest.approx(static)


def _policy(generator: str) -> Policy:
    config = load_config({"models": {"policy": {"args": {"generator": generator}}}})
    return Policy("policy").bind(config)


def test_policy_reports_continuous_when_its_generator_is_vllm(monkeypatch):
    assert _policy("hf").generation_batching == "static"
    # declared from the config before setup, whether or not vLLM is installed here
    assert _policy("vllm").generation_batching == "continuous"
    monkeypatch.setattr(generators, "available", lambda extra: extra == "vllm")
    assert _policy("auto").generation_batching == "continuous"
    monkeypatch.setattr(generators, "available", lambda extra: False)
    assert _policy("auto").generation_batching == "static"
    assert module_capabilities(_policy("vllm"))["continuous_batching"] is True


def test_unknown_batching_is_a_config_error():
    with pytest.raises(ConfigError, match=r"models\.policy\.generation\.batching: Input "
                                          r"should be 'static' or 'continuous'"):
        load_config({"models": {"policy": {"generation": {"batching": "paged"}}}})


class VLLMLikePolicy(PolicyInference):
    """The tiny fixture's policy, declaring continuous batching as a vLLM module does."""

    generation_batching = "continuous"


def _engine_estimate(policy_cls, **policy_generation) -> float:
    cfg = tiny_config()
    section = cfg["models"]["policy"]
    section.pop("max_new_tokens")  # set in generation, with the tail
    section["max_seq_len"] = 128
    section["generation"] = {"max_new_tokens": 64, "expected_new_tokens": 8,
                                             "p99_new_tokens": 64, **policy_generation}
    flowrl.init(cfg)
    engine = flowrl.RLHFEngine(policy_cls("policy"), PolicyReference("reference"),
                               RewardInference("reward"), ValueInference("value"),
                               PolicyTrainer("ppo_policy"), ValueTrainer("ppo_value"))
    engine.set_dataset(make_prompts(64))
    return engine.compile(cluster="local:2").estimates.iteration_time


def test_engine_carries_the_declaration_to_the_planner():
    static = _engine_estimate(PolicyInference)
    declared = _engine_estimate(VLLMLikePolicy)
    assert declared < static
    assert declared == pytest.approx(_engine_estimate(PolicyInference, batching="continuous"))
    assert _engine_estimate(VLLMLikePolicy, batching="static") == pytest.approx(static)
