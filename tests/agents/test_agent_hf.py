"""The agent rollout on a tiny Hugging Face Llama: the ids trained on are the ids sampled,
and each turn's behaviour log-probs are what the model gave while it sampled that turn."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import flowrl  # noqa: E402
from flowrl.agents import Environment, StepResult  # noqa: E402
from flowrl.agents.hf import HFAgent, cut_turn  # noqa: E402
from flowrl.models.hf import response_logprobs, save_tiny_llama  # noqa: E402


class EchoEnv(Environment):
    """Every turn gets the observation " ok." until the turn budget ends the episode."""

    stop_strings = ("!",)

    def reset(self, sample):
        return " go."

    def step(self, action):
        return StepResult(" ok.", 0.1)


class EchoAgent(HFAgent):
    recorded: list = []

    def make_environment(self, sample):
        return EchoEnv()

    def sample_turn(self, contexts, max_new_tokens, stop_strings):
        out = super().sample_turn(contexts, max_new_tokens, stop_strings)
        type(self).recorded += [(list(c), list(o)) for c, o in zip(contexts, out)]
        return out


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llama") / "m", hidden_size=32,
                           num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)


def test_cut_turn_stops_at_eos_stop_string_or_budget():
    dec = lambda ids: "".join("ab!c"[i] for i in ids)  # noqa: E731
    assert cut_turn([0, 1, 2, 3], 10, None, ("!",), dec) == [0, 1, 2]
    assert cut_turn([0, 3, 1], 10, 3, (), dec) == [0, 3]
    assert cut_turn([0, 1, 0, 1], 3, None, ("!",), dec) == [0, 1, 0]


def test_hf_agent_keeps_sampled_ids_and_their_logprobs_across_turns(llama):
    flowrl.init({"models": {"policy": {
        "model_path": str(llama), "generation": {"max_new_tokens": 3, "temperature": 1.0},
        "args": {"max_turns": 3, "max_response_tokens": 24, "max_prompt_len": 8}}}})
    agent = EchoAgent("policy")
    agent.bind(flowrl.context.get_args())
    agent.ensure_setup()
    data = agent.build_dataset([{"prompt": p} for p in ("hi", "a b", "why?", "no")])
    torch.manual_seed(0)
    EchoAgent.recorded = []
    batch = agent.forward_step(data.collate_fn([data[i] for i in range(len(data))]))
    obs = agent.encode(" ok.")
    for i in range(4):
        n = int(batch["response_attention_mask"][i].sum())
        resp, pol = batch["response"][i, :n].tolist(), batch["response_mask"][i, :n].tolist()
        prompt = batch["prompt"][i][batch["prompt_mask"][i].bool()].tolist()
        turns = [(c, o) for c, o in EchoAgent.recorded if c[:len(prompt)] == prompt]
        assert len(turns) == 3 and batch["turns"][i] == 3
        pos = 0
        for k, (ctx, ids) in enumerate(turns):  # policy ids, then the observation, in order
            assert ctx == prompt + resp[:pos]
            assert resp[pos:pos + len(ids)] == ids and pol[pos:pos + len(ids)] == [1] * len(ids)
            # the log-probs the model gave these ids in this turn's own context
            seq = torch.tensor([ctx + ids])
            own = response_logprobs(agent.model, seq, torch.ones_like(seq), len(ctx), 1.0)[0]
            torch.testing.assert_close(batch["logprobs"][i, pos:pos + len(ids)], own,
                                       atol=1e-5, rtol=1e-5)
            pos += len(ids)
            if k < 2:
                assert resp[pos:pos + len(obs)] == obs
                assert pol[pos:pos + len(obs)] == [0] * len(obs)
                pos += len(obs)
        assert pos == n
    torch.testing.assert_close(batch["score"], torch.full((4,), 0.3))  # 0.1 per turn
