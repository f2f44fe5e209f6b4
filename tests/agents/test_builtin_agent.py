"""The built-in modules on multi-turn batches: Reference and Actor score a trajectory
attending to the observations between turns (their log-probs equal the per-turn log-probs
recorded while sampling), and the built-in Advantage runs GAE across the observations."""

from __future__ import annotations

import textwrap

import pytest
import torch

pytest.importorskip("transformers")

import flowrl  # noqa: E402
from flowrl.agents import multi_turn_gae  # noqa: E402
from flowrl.algorithms import AlgorithmSettings, compute_advantages  # noqa: E402
from flowrl.errors import ConfigError  # noqa: E402
from flowrl.models.builtin.actor import Actor  # noqa: E402
from flowrl.models.builtin.advantage import Advantage  # noqa: E402
from flowrl.models.builtin.agent_policy import AgentPolicy  # noqa: E402
from flowrl.models.builtin.inference import full_sequence  # noqa: E402
from flowrl.models.builtin.reference import Reference  # noqa: E402
from flowrl.models.hf import response_logprobs, save_tiny_llama  # noqa: E402

ENVS = textwrap.dedent('''
    from flowrl.agents import Environment, StepResult

    class Echo(Environment):
        """Every turn gets the observation " ok." and 0.1 until the turn budget ends it."""
        def reset(self, sample):
            return " go."
        def step(self, action):
            return StepResult(" ok.", 0.1)

    def make_env(sample):
        return Echo()
''')


class RecordingPolicy(AgentPolicy):
    recorded: list = []

    def sample_turn(self, contexts, max_new_tokens, stop_strings):
        out = super().sample_turn(contexts, max_new_tokens, stop_strings)
        type(self).recorded += [(list(c), list(o)) for c, o in zip(contexts, out)]
        return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A multi-turn batch from the built-in AgentPolicy, and the modules that score it."""
    root = tmp_path_factory.mktemp("builtin_agent")
    llama = str(save_tiny_llama(root / "m", hidden_size=32, num_layers=1, num_heads=2,
                                num_kv_heads=1, intermediate_size=64))
    (root / "envs.py").write_text(ENVS)
    gen = {"max_new_tokens": 3, "temperature": 1.0}
    cfg = flowrl.init({"models": {
        "policy": {"model_path": llama, "generation": gen,
                   "args": {"max_turns": 3, "max_response_tokens": 24, "max_prompt_len": 8}},
        "reference": {"model_path": llama, "generation": gen},
        "actor": {"model_path": llama, "generation": gen, "optim": {"lr": 1e-3}}},
        "runtime_args": {"num_inference_per_prompt": 2, "sample_per_episode": 4,
                         "generation_batch_size": 4, "train_global_batch_size": 4,
                         "train_micro_batch_size": 4}})
    policy = RecordingPolicy("policy", environment="envs.py:make_env", base_dir=root).bind(cfg)
    policy.ensure_setup()
    data = policy.build_dataset([{"prompt": p} for p in ("hi", "a b", "why?", "no")])
    torch.manual_seed(0)
    RecordingPolicy.recorded = []
    batch = policy.forward_step(data.collate_fn([data[i] for i in range(len(data))]))
    reference = Reference("reference").bind(cfg)
    reference.ensure_setup()
    actor = Actor("actor", AlgorithmSettings()).bind(cfg)
    actor.ensure_setup()
    return policy, reference, actor, batch


def recorded_logprobs(policy, batch) -> torch.Tensor:
    """The log-probs each turn's ids had in the context they were sampled from, in place."""
    want = torch.zeros_like(batch["logprobs"])
    for i in range(batch["response"].shape[0]):
        prompt = batch["prompt"][i][batch["prompt_mask"][i].bool()].tolist()
        n = int(batch["response_attention_mask"][i].sum())
        resp, pol = batch["response"][i, :n].tolist(), batch["response_mask"][i, :n].tolist()
        pos = 0
        for ctx, ids in RecordingPolicy.recorded:
            if ctx[:len(prompt)] != prompt or ctx != prompt + resp[:len(ctx) - len(prompt)]:
                continue
            pos = len(ctx) - len(prompt)
            assert resp[pos:pos + len(ids)] == ids and all(pol[pos:pos + len(ids)])
            seq = torch.tensor([ctx + ids])
            with torch.no_grad():
                want[i, pos:pos + len(ids)] = response_logprobs(
                    policy.model, seq, torch.ones_like(seq), len(ctx), 1.0)[0]
    return want


def test_batch_is_multi_turn(setup):
    _, _, _, batch = setup
    mask, attn = batch["response_mask"].bool(), batch["response_attention_mask"].bool()
    env = attn & ~mask
    assert env.any() and (mask & (env.long().cumsum(1) > 0)).any()  # policy after observations
    assert batch["turns"].tolist() == [3] * 4
    torch.testing.assert_close(batch["score"], torch.full((4,), 0.3))


def test_reference_and_actor_logprobs_equal_the_per_turn_logprobs_at_generation(setup):
    policy, reference, actor, batch = setup
    want = recorded_logprobs(policy, batch)
    assert (want[batch["response_mask"].bool()] < 0).all()  # every policy token matched
    ref = reference.forward_step(batch)["ref_logprobs"]
    torch.testing.assert_close(ref, want, atol=1e-5, rtol=1e-5)
    lp = actor.proximal_logprobs(batch)["proximal_logprobs"]
    torch.testing.assert_close(lp, want, atol=1e-5, rtol=1e-5)
    # attending by the loss mask (the old behaviour) hides the observations: different
    tokens, attn, p = full_sequence({k: v for k, v in batch.items()
                                     if k != "response_attention_mask"})
    with torch.no_grad():
        wrong = response_logprobs(reference.model, tokens, attn, p, 1.0) * batch["response_mask"]
    after_env = batch["response_mask"].bool() & \
        ((batch["response_attention_mask"] - batch["response_mask"]).cumsum(1) > 0)
    assert not torch.allclose(wrong[after_env], want[after_env], atol=1e-3)


def test_actor_trains_on_a_multi_turn_batch(setup):
    _, _, actor, batch = setup
    adv = torch.where(batch["response_mask"].bool(), 1.0, 0.0)
    stats = actor.train_step([{**batch, "advantages": adv}], 0)
    assert torch.isfinite(torch.tensor(stats["loss"]))


def test_advantage_runs_gae_across_observations(setup):
    _, _, _, batch = setup
    values = torch.rand(batch["response"].shape, generator=torch.Generator().manual_seed(0))
    data = {**batch, "values": values * batch["response_attention_mask"]}
    cfg = flowrl.init({"models": {"adv": {}}, "runtime_args": {"num_inference_per_prompt": 2}})
    algo = {"advantage": {"estimator": "gae", "options": {"gamma": 1.0, "lam": 1.0}}}
    out = Advantage("adv", AlgorithmSettings.from_dict(algo)).bind(cfg).forward_step(data)
    want = multi_turn_gae(batch["token_rewards"], data["values"], batch["response_mask"],
                          gamma=1.0, lam=1.0)
    torch.testing.assert_close(out["advantages"], want.advantages)
    torch.testing.assert_close(out["returns"], want.returns)
    # gamma = lam = 1: the return at each episode's first token is the whole episode's
    torch.testing.assert_close(out["returns"][:, 0], batch["score"])
    assert (out["advantages"][batch["response_mask"] == 0] == 0).all()


def test_gae_with_an_attention_mask_is_unchanged_on_single_turn_rows():
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    r, v = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    for name, kw in (("gae", {"values": v, "lam": 0.9, "whiten": True}), ("reinforce_pp", {})):
        plain = compute_advantages(name, r, mask, **kw)
        ours = compute_advantages(name, r, mask, attention_mask=torch.ones_like(mask), **kw)
        assert torch.equal(plain.advantages, ours.advantages)
        assert torch.equal(plain.returns, ours.returns)


def test_agent_policy_errors_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of agent.environment or agent.tools"):
        AgentPolicy("policy")
    with pytest.raises(ConfigError, match="agent.tools: the final answer needs a reward"):
        AgentPolicy("policy", tools=["tools.py:calculator"])
    from flowrl.models.builtin.agent_policy import load_object
    with pytest.raises(ConfigError, match=r"agent.environment: 'nope.py:f': file .*nope.py"):
        load_object("nope.py:f", tmp_path, "agent.environment")
    (tmp_path / "envs.py").write_text(ENVS)
    with pytest.raises(ConfigError, match=r"agent.environment: .*envs.py has no 'make_envv'"):
        load_object("envs.py:make_envv", tmp_path, "agent.environment")


def test_scored_tool_environment_fills_arguments_scores_answers_and_shapes_calls():
    from flowrl.agents import MarkerToolCallParser
    from flowrl.models.builtin.agent_policy import ScoredToolEnvironment, tool_from

    def calculator(expression: str) -> str:
        if not expression[0].isdigit():
            raise ValueError("bad")
        a, b = expression.split("-")
        return str(int(a) - int(b))

    def score(prompts, completions, answer):
        assert prompts == ["47-39="]
        return [float(completions[0].strip() == answer[0])]

    def broken(prompts, completions, **columns):
        raise RuntimeError("no")

    def env(fn):
        e = ScoredToolEnvironment([tool_from(calculator, "agent.tools[0]")],
                                  MarkerToolCallParser("calculator", "expression"), 2.0, fn,
                                  "tools.py:score", -1.0, call_reward=0.1)
        e.reset({"prompt_text": "47-39=", "expression": "47-39", "answer": "8"})
        return e

    e = env(score)
    bad = e.step("x!")  # the tool raises: an error observation, no shaping reward
    assert bad.reward == 0 and bad.info["tool_errors"] == 1 and not bad.done
    first = e.step("!")  # the empty argument is the row's expression column
    assert (first.observation, first.reward, first.done) == ("8", 0.1, False)
    assert e.step("!").reward == 0  # only the first successful call is rewarded
    assert (e.step("8").reward, e.step("7").reward) == (1.0, 0.0)
    assert env(broken).step("8").reward == -1.0  # a failing reward call: error_score
