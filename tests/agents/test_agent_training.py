"""The agent rollout inside a GRPO flow: the trainer trains on exactly the sampled ids, with
the loss mask on policy tokens only; tool failures are counted; resume is exact."""

from __future__ import annotations

import json

import pytest
import torch

from agent_setup import (LookupAgent, RecordingTrainer, agent_config, build_agent, lookup,
                         problems)
from flowrl.agents import full_sequence
from tiny_engines import comparable, module_tensors, one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _policy_runs(row_ids: list[int], row_policy: list[int]) -> list[tuple[int, list[int]]]:
    """(start, ids) of each maximal run of policy tokens."""
    runs, j = [], 0
    while j < len(row_ids):
        if row_policy[j]:
            k = j
            while k < len(row_ids) and row_policy[k]:
                k += 1
            runs.append((j, row_ids[j:k]))
            j = k
        else:
            j += 1
    return runs


def _explain_row(prompt: list[int], resp: list[int], policy: list[int], turns) -> int:
    """Walk a trainer row: every policy run must be turns sampled from exactly the context
    before it (prompt + everything so far); returns the number of turns matched."""
    matched, pos = 0, 0
    for start, run in _policy_runs(resp, policy):
        pos = start
        while run:
            ctx = tuple(prompt + resp[:pos])
            options = [s for s in turns.get(ctx, []) if s and list(s) == run[:len(s)]]
            assert options, f"tokens {run} at {pos} were never sampled from this context"
            s = max(options, key=len)
            turns[ctx].remove(s)
            run, pos, matched = run[len(s):], pos + len(s), matched + 1
    return matched


def test_trainer_tokens_equal_sampled_tokens_across_turns():
    engine = build_agent(agent_config(num_episode=2))
    engine.learn()
    turns: dict[tuple, list[tuple]] = {}
    for ctx, ids in LookupAgent.recorded:
        turns.setdefault(ctx, []).append(ids)
    rows = multi_turn = matched = 0
    for mb in RecordingTrainer.seen:
        for i in range(mb["response"].shape[0]):
            prompt = mb["prompt"][i][mb["prompt_mask"][i].bool()].tolist()
            n = int(mb["response_attention_mask"][i].sum())
            assert mb["response_attention_mask"][i, :n].all()  # real tokens, then padding
            resp, pol = mb["response"][i, :n].tolist(), mb["response_mask"][i, :n].tolist()
            matched += _explain_row(prompt, resp, pol, turns)
            multi_turn += len(_policy_runs(resp, pol)) > 1
            rows += 1
    assert rows == 2 * 16  # every sampled episode reached the trainer
    assert multi_turn >= 4, "too few multi-turn episodes to test anything"
    # every sampled turn was trained on, once (empty turns have no tokens to match)
    assert matched == sum(1 for _, ids in LookupAgent.recorded if ids)


def test_mask_is_one_on_policy_tokens_only_and_logprobs_attend_to_observations():
    engine = build_agent(agent_config())
    agent, reference = engine.modules["policy"], engine.modules["reference"]
    agent.ensure_setup()
    reference.ensure_setup()
    records = problems() * 8
    data = agent.build_dataset(records)
    torch.manual_seed(0)
    batch = agent.forward_step(data.collate_fn([data[i] for i in range(len(data))]))
    mask, attn = batch["response_mask"].bool(), batch["response_attention_mask"].bool()
    env = attn & ~mask
    assert env.any() and mask.any() and not (mask & ~attn).any()
    # the environment tokens after each tool call are exactly the encoded tool result
    for i, rec in enumerate(records):
        n = int(attn[i].sum())
        resp, pol = batch["response"][i, :n].tolist(), mask[i, :n].tolist()
        runs = _policy_runs(resp, pol)
        for (start, run), nxt in zip(runs, [r[0] for r in runs[1:]] + [n]):
            if start + len(run) == nxt:
                continue  # the final answer: nothing follows
            turn = agent.decode(run)
            assert turn.endswith("!")
            arg = turn[:-1] or rec["key"]
            expected = ("error: tool 'lookup': ValueError: lookup exploded" if arg == "boom"
                        else lookup(arg))
            assert resp[start + len(run):nxt] == agent.encode(expected)[:nxt - start - len(run)]
    assert (batch["logprobs"][~mask] == 0).all() and (batch["logprobs"][mask] < 0).all()
    # the reference has the policy's initial weights: same log-probs when it attends to the
    # observations, different ones when it (wrongly) attends to policy tokens only
    ref = reference.forward_step(batch)["ref_logprobs"]
    assert (ref[~mask] == 0).all()
    torch.testing.assert_close(ref, batch["logprobs"], atol=1e-5, rtol=0)
    tokens, _, p = full_sequence(batch)
    naive = torch.cat([batch["prompt_mask"], batch["response_mask"]], 1)
    wrong = reference.model.response_logprobs(tokens, naive, p) * batch["response_mask"]
    after_env = mask & (env.long().cumsum(1) > 0)
    assert not torch.allclose(wrong[after_env], batch["logprobs"][after_env], atol=1e-3)
    # per-turn rewards sit on turn ends; the score is their sum with the final reward
    torch.testing.assert_close(batch["token_rewards"].sum(1), batch["score"])


def test_tool_errors_and_timeouts_are_counted_in_the_metrics():
    cfg = agent_config(num_episode=1)
    cfg["models"]["policy"]["args"]["tool_timeout_s"] = 0.2
    for name in ("policy", "reference", "trainer"):  # a policy that calls the tool often
        cfg["models"][name].setdefault("args", {})["actions"] = "!0"
    engine = build_agent(cfg)
    engine.set_dataset(problems(("boom", "slow", "12", "7")))
    (row,) = engine.learn()
    assert row["policy/agent/tool_calls"] > 0
    assert row["policy/agent/tool_errors"] > 0   # "boom" raises in the tool
    assert row["policy/agent/tool_timeouts"] > 0  # "slow" sleeps past 0.2s
    assert row["policy/agent/env_timeouts"] == 0  # the environment itself answered in time
    assert 1 <= row["policy/agent/turns"] <= 3


def _same(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in comparable(rows)]


def test_resume_after_an_episode_matches_an_uninterrupted_run(tmp_path):
    full = build_agent(agent_config(num_episode=3, output_dir=str(tmp_path / "full")))
    full_rows = full.learn()
    cfg = agent_config(num_episode=3, output_dir=str(tmp_path / "split"),
                       save_episode_interval=1)
    build_agent(cfg).learn(num_episode=1)  # "crashes" after the first episode
    cfg["runtime_args"]["resume"] = True
    resumed = build_agent(cfg)
    rows = resumed.learn()
    assert [r["episode"] for r in rows] == [2, 3]
    assert _same(resumed.history) == _same(full_rows)
    a, b = module_tensors(resumed), module_tensors(full)
    for name in ("policy", "trainer"):
        for k, v in a[name].items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, b[name][k]), f"{name}/{k}"
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode"] for line in lines] == [1, 2, 3]


@pytest.mark.parametrize("estimator", ["rloo", "dr_grpo"])
def test_other_group_estimators_train_on_agent_trajectories(estimator):
    cfg = agent_config(num_episode=1)
    cfg["models"]["advantage"] = {"args": {"estimator": estimator}}
    (row,) = build_agent(cfg).learn()
    (mb, *_) = RecordingTrainer.seen
    assert (mb["advantages"][mb["response_mask"] == 0] == 0).all()
    assert torch.isfinite(torch.tensor(row["trainer/loss"]))


def test_a_prompt_past_max_prompt_len_names_the_setting():
    from flowrl.agents import TrajectoryError

    cfg = agent_config(num_episode=1)
    cfg["models"]["policy"]["args"]["max_prompt_len"] = 3
    engine = build_agent(cfg)
    engine.set_dataset(problems(("12",)))  # "12=" is 4 tokens with BOS
    with pytest.raises(TrajectoryError, match=r"models.policy.args.max_prompt_len=3: prompts "
                                              r"are longer: \['12='\]"):
        engine.learn()


def test_ppo_trains_on_trajectories_with_returns_across_turns():
    from agent_setup import build_agent_ppo

    rows = build_agent_ppo(agent_config(num_episode=2, num_inference_per_prompt=1)).learn()
    assert all(torch.isfinite(torch.tensor(r["critic_trainer/loss"])) for r in rows)
    multi = 0
    for mb in RecordingTrainer.seen:
        mask = mb["response_mask"]
        for key in ("advantages", "returns", "values"):
            assert (mb[key][mask == 0] == 0).all(), key
        first = mask.argmax(1)  # each episode's first policy token
        rows_ = torch.arange(len(first))
        # gamma = lam = 1: the return at the first token is every reward of the episode,
        # later turns' included (the observations between turns do not cut it)
        torch.testing.assert_close(mb["returns"][rows_, first], mb["score"])
        multi += int(((mask.cumsum(1) > 0) & (mask == 0) & (mb["response_attention_mask"] == 1))
                     .any(1).sum())
    assert multi > 0
