"""``flowrl train`` with an ``agent:`` section: the policy role becomes the built-in
AgentPolicy in the same engine files, the compiler plans it by its turns, the config's
mistakes are named, and a short GRPO run on tools trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from flowrl import context  # noqa: E402
from flowrl.compiler.resources import model_resources  # noqa: E402
from flowrl.errors import ConfigError  # noqa: E402
from flowrl.models.builtin.agent_policy import AgentPolicy, tool_from  # noqa: E402
from flowrl.recipes import build, load_train_config, plan  # noqa: E402

TOOLS = '''
def calculator(expression: str) -> str:
    """Adds and subtracts integers."""
    return str(eval(expression, {}, {}))

def score(prompts, completions, answer, **columns):
    return [float(c.strip() == a) for c, a in zip(completions, answer)]
'''
ENVS = '''
from flowrl.agents import Environment, StepResult

class Guess(Environment):
    def reset(self, sample):
        self.answer = sample["answer"]
        return ""
    def step(self, action):
        return StepResult("", float(action.strip() == self.answer), True)

def make_env(sample):
    return Guess()
'''


def config(tmp_path: Path, model: str, name: str = "grpo", **agent) -> dict:
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "envs.py").write_text(ENVS)
    rows = [{"prompt": f"{a}-{b}=", "expression": f"{a}-{b}", "answer": str(a - b)}
            for a in range(5, 9) for b in range(1, 5)]
    (tmp_path / "calc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if "environment" not in agent:
        agent = {"tools": ["tools.py:calculator"], "parser": "marker",
                 "parser_options": {"tool": "calculator", "argument": "expression"}, **agent}
    cfg = {"algorithm": {"name": name, "kl": {"coef": 0.0}}, "model": {"path": model},
           "data": {"path": "calc.jsonl"}, "agent": {"max_turns": 3, "max_tokens": 8, **agent},
           "runtime_args": {"num_episode": 2, "sample_per_episode": 16,
                            "num_inference_per_prompt": 4, "generation_batch_size": 16,
                            "train_global_batch_size": 16, "train_micro_batch_size": 16,
                            "seed": 1},
           "models": {"policy": {"generation": {"max_new_tokens": 1},
                                 "args": {"max_prompt_len": 8}}},
           "source": str(tmp_path / "agent.yaml")}
    if "tools" in agent:
        cfg["reward"] = {"function": "tools.py:score"}
    return cfg


def test_agent_section_makes_the_policy_an_agent_in_the_same_flow(tmp_path, tiny_model):
    cfg = config(tmp_path, str(tiny_model), planned_env_step_s=0.5)
    engine = plan(cfg)
    policy = engine.modules["policy"]
    assert isinstance(policy, AgentPolicy) and "reward" not in engine.modules
    schedule = engine.compile()
    # the budgets are the policy's args: the compiler plans turns x decode + environment time
    args = context.get_args()
    assert args.models["policy"].args["max_turns"] == 3
    res = model_resources(args.models, schedule.graphs, [("actor", "policy")])["policy"]
    assert res.max_new_tokens == 3  # 3 turns x 1 token
    assert res.cpu_seconds_per_sample == 3 * 0.5


def test_ppo_with_an_environment_plans_without_a_reward(tmp_path):
    engine = plan(config(tmp_path, str(tmp_path / "m"), "ppo", environment="envs.py:make_env"))
    assert {"policy", "critic", "advantage", "actor", "critic_trainer"} == set(engine.modules)


@pytest.mark.parametrize("change,message", [
    (lambda c: c["agent"].update(environment="envs.py:make_env"),
     "exactly one of agent.environment"),
    (lambda c: c.pop("reward"), "agent.tools: give reward:"),
    (lambda c: c["agent"].update(parser="xml"), "agent.parser='xml'"),
    (lambda c: c["agent"].update(max_turn=2), "agent.max_turn"),
    (lambda c: c["models"]["policy"]["args"].update(max_turns=2),
     "models.policy.args.max_turns: with an agent: section, set agent.max_turns"),
    (lambda c: c["algorithm"].update(name="remax"), "agent: remax cannot roll out"),
    (lambda c: (c["algorithm"].update(name="sft"), c.pop("reward"), c.pop("models"),
                c["data"].update(kind="sft")), "agent: sft cannot roll out"),
])
def test_agent_config_errors_name_the_field(tmp_path, change, message):
    cfg = config(tmp_path, str(tmp_path / "m"))
    change(cfg)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_train_config(cfg)


def test_environment_with_a_reward_section_is_refused(tmp_path):
    cfg = config(tmp_path, str(tmp_path / "m"), environment="envs.py:make_env")
    cfg["reward"] = {"function": "tools.py:score"}
    with pytest.raises(ConfigError, match="agent.environment gives the rewards"):
        load_train_config(cfg)


def test_a_function_becomes_a_tool_with_a_schema_from_its_signature():
    def add(a: int, b: int = 0) -> int:
        """Adds."""
        return a + b

    tool = tool_from(add, "agent.tools[0]")
    assert tool.parameters == {"type": "object", "required": ["a"],
                               "properties": {"a": {"type": "integer"},
                                              "b": {"type": "integer"}}}
    assert tool({"a": 2, "b": 3}) == "5" and tool.description == "Adds."
    with pytest.raises(ConfigError, match=r"agent.tools\[0\]: 3 is neither"):
        tool_from(3, "agent.tools[0]")


@pytest.mark.parametrize("name,agent", [("grpo", {}), ("grpo", {"environment": "envs.py:make_env"}),
                                        ("ppo", {"environment": "envs.py:make_env"})])
def test_recipes_train_on_agent_episodes(tmp_path, tiny_model, name, agent):
    engine, _ = build(config(tmp_path, str(tiny_model), name, **agent))
    try:
        history = engine.learn()
    finally:
        engine.shutdown()
    assert len(history) == 2
    row = history[-1]
    assert 1 <= row["policy/agent/turns"] <= 3
    assert 0 <= row["advantage/score/mean"] <= 1
    assert row["policy/agent/env_errors"] == 0
    # The calculator is offered with the marker "!", which this tiny model's vocabulary lacks:
    # no call happens here, only the counting is checked (a tool that is really called, on
    # local and Ray: tests/recipes/test_agent_ray.py; the call paths: tests/agents).
    if not agent:
        first = history[0]
        assert first["policy/agent/tool_errors"] == 0
        assert {"policy/agent/tool_call_rate", "policy/agent/tool_calls"} <= set(first)


def test_call_reward_shapes_tools_only(tmp_path):
    cfg = config(tmp_path, str(tmp_path / "m"), environment="envs.py:make_env",
                 call_reward=0.1)
    with pytest.raises(ConfigError, match="agent.call_reward: shapes the tools' environment"):
        load_train_config(cfg)
    policy = plan(config(tmp_path, str(tmp_path / "m"), call_reward=0.1)).modules["policy"]
    assert policy.call_reward == 0.1


def test_explain_the_agent_hf_example(capsys):
    from flowrl import cli

    example = Path(__file__).resolve().parents[2] / "examples" / "agent_hf.yaml"
    assert cli.main(["explain", str(example)]) == 0
    out = capsys.readouterr().out
    assert "policy.forward_step" in out and "advantage.forward_step" in out
    assert "reward" not in out  # the calculator environment scores the final answer
