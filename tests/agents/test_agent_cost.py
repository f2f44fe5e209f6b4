"""The compiler plans an agent rollout as turns x decode plus environment time."""

from __future__ import annotations

from flowrl import context
from flowrl.compiler.agent_cost import agent_lengths
from flowrl.compiler.costmodel import call_time
from flowrl.compiler.resources import model_resources
from flowrl.config import ModelConfig
from flowrl.ir import ClusterSpec
from flowrl.ir.ops import Mesh

from agent_setup import agent_config, build_agent


def test_agent_lengths_multiply_decode_by_turns_within_the_budget():
    cfg = ModelConfig(args={"max_turns": 4, "max_response_tokens": 10, "max_prompt_len": 6,
                            "planned_env_step_s": 0.5})
    assert agent_lengths(cfg, seq=8, new=2, cpu=0.0) == (16, 8, 2.0)
    assert agent_lengths(cfg, seq=8, new=4, cpu=0.1) == (16, 10, 2.1)  # capped by the budget
    plain = ModelConfig(args={"max_prompt_len": 6})
    assert agent_lengths(plain, seq=8, new=2, cpu=0.0) == (8, 2, 0.0)


def test_model_resources_plan_the_agent_policy_by_its_turns():
    cfg = agent_config()
    cfg["models"]["policy"]["args"]["planned_env_step_s"] = 0.25
    engine = build_agent(cfg)
    schedule = engine.compile()
    res = model_resources(context.get_args().models, schedule.graphs, [("trainer", "policy")])
    policy = res["policy"]
    assert policy.max_new_tokens == 6  # 3 turns x 2 new tokens (budget 9)
    # prompt + response budget (6 + 9) outgrows the section's max_seq_len of 12
    assert policy.max_seq_len == 6 + 9 and policy.prompt_len == 9
    assert policy.cpu_seconds_per_sample == 3 * 0.25
    assert res["reference"].max_new_tokens != 6  # only the agent module is multi-turn


def _policy_plan(**policy_args):
    cfg = agent_config()
    cfg["models"]["policy"]["args"].update(policy_args)
    engine = build_agent(cfg)
    graphs = engine.compile().graphs
    args = context.get_args()
    res = model_resources(args.models, graphs, [("trainer", "policy")])["policy"]
    return call_time("generate", res, Mesh((0,)), args.runtime_args, ClusterSpec.local(1))


def test_planned_call_time_grows_with_turns_and_environment_time():
    one, three = _policy_plan(max_turns=1), _policy_plan(max_turns=3)
    assert three > one  # three turns of decoding
    slow = _policy_plan(max_turns=3, planned_env_step_s=0.5)
    # generation_batch_size 8 samples x 3 steps x 0.5 s of environment time
    assert abs(slow - three - 8 * 3 * 0.5) < 1e-9
