"""The multi-turn loop with a scripted policy (no model): token bookkeeping, masks, rewards,
turn and token budgets, environment failures and timeouts, and concurrency."""

from __future__ import annotations

import random
import time

import pytest

from flowrl.agents import (AgentArgs, Environment, StepResult, Trajectory, TrajectoryError,
                           TurnIO, full_sequence, run_episodes, to_batch)
from flowrl.agents.rollout import episode_metrics


def encode(text: str) -> list[int]:
    return [ord(c) for c in text]


def decode(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


class ScriptEnv(Environment):
    """reset -> "go"; "stop" ends with reward 1; "err" raises; "hang" sleeps; else "ok"
    with reward 0.5 (a per-turn reward)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def reset(self, sample):
        if sample.get("broken"):
            raise OSError("no such game")
        return "go"

    def step(self, action):
        time.sleep(self.delay)
        if action == "err":
            raise RuntimeError("bad move")
        if action == "hang":
            time.sleep(30)
        if action == "stop":
            return StepResult("", 1.0, True)
        return "ok", 0.5, False, {}


class Script:
    """Plays fixed turns per sample (keyed by the prompt's first id); records what it samples."""

    def __init__(self, turns: dict[int, list[str]]) -> None:
        self.turns, self.calls = {k: list(v) for k, v in turns.items()}, []

    def __call__(self, contexts, budgets, stops):
        out = []
        for ctx, budget in zip(contexts, budgets):
            key = ctx[0]
            text = self.turns[key].pop(0) if len(self.turns[key]) > 1 else self.turns[key][0]
            out.append(encode(text)[:budget])
        self.calls.append([tuple(c) for c in contexts])
        return out


def play(turns: dict[str, list[str]], samples=None, delay=0.0, **args):
    keys = list(turns)
    script = Script({ord(k): v for k, v in turns.items()})
    trajs = [Trajectory(encode(k)) for k in keys]
    envs = [ScriptEnv(delay() if callable(delay) else delay) for _ in keys]
    a = AgentArgs(**{"max_turns": 3, "max_response_tokens": 32, "max_prompt_len": 8, **args})
    counts = run_episodes(trajs, envs, samples or [{} for _ in keys],
                          TurnIO(script, encode, decode), a, max_new_tokens=8)
    return trajs, counts, script, a


def test_ids_masks_and_rewards_follow_the_turns_exactly():
    trajs, counts, _, a = play({"a": ["ab", "stop"]})
    t = trajs[0]
    assert t.prompt_ids == encode("a") + encode("go")  # the reset observation joins the prompt
    assert t.ids == encode("ab") + encode("ok") + encode("stop")
    assert t.policy_ids() == encode("ab") + encode("stop")
    assert (t.turns, t.turn_rewards, t.final_reward, t.truncated) == (2, [0.5, 0.0], 1.0, False)
    b = to_batch(trajs, pad_id=0, prompt_width=a.max_prompt_len, response_width=10)
    assert b["prompt"][0].tolist() == [0] * 5 + encode("ago")
    assert b["prompt_mask"][0].tolist() == [0] * 5 + [1] * 3
    assert b["response"][0].tolist() == encode("abokstop") + [0, 0]
    assert b["response_mask"][0].tolist() == [1, 1, 0, 0, 1, 1, 1, 1, 0, 0]
    assert b["response_attention_mask"][0].tolist() == [1] * 8 + [0, 0]
    assert b["token_rewards"][0].tolist() == [0, 0.5, 0, 0, 0, 0, 0, 1.0, 0, 0]
    assert b["score"].tolist() == [1.5] and b["turns"].tolist() == [2]
    tokens, mask, p = full_sequence(b)  # scoring attends to the observation tokens too
    assert p == 8 and mask[0].tolist() == [0] * 5 + [1] * 11 + [0, 0]
    assert counts["env_errors"] == counts["env_timeouts"] == 0


def test_turn_budget_and_token_budget_end_episodes_as_truncated():
    trajs, _, _, _ = play({"b": ["ab"]}, max_turns=3)
    assert trajs[0].turns == 3 and trajs[0].truncated and trajs[0].done
    assert trajs[0].ids == encode("abokabokab")  # no observation after the last turn
    trajs, _, _, _ = play({"c": ["abc"]}, max_response_tokens=7)
    assert trajs[0].ids == encode("abcokab") and trajs[0].truncated  # last turn cut to fit
    with pytest.raises(TrajectoryError, match="a response of 7 tokens exceeds "
                                              "max_response_tokens=5"):
        to_batch(trajs, 0, 8, 5)


def test_environment_errors_and_timeouts_are_observations_and_counted():
    start = time.monotonic()
    trajs, counts, _, _ = play({"e": ["err", "stop"], "h": ["hang"], "r": ["stop"]},
                               samples=[{}, {}, {"broken": True}], env_timeout_s=0.3,
                               max_response_tokens=128)
    assert time.monotonic() - start < 5
    err, hang, broken = trajs
    assert decode(err.ids) == "err" + "error: environment step failed: RuntimeError: bad move" \
        + "stop"
    assert err.final_reward == 1.0  # the policy saw the error and went on
    assert decode(hang.ids) == "hang" + "error: environment step took longer than 0.3s"
    assert hang.truncated and hang.policy_ids() == encode("hang")
    assert broken.done and broken.ids == [] and broken.turns == 0
    assert (counts["env_errors"], counts["env_timeouts"]) == (2, 1)
    m = episode_metrics(trajs, counts)
    assert m["agent/env_errors"] == (2.0, "sum") and m["agent/env_timeouts"] == (1.0, "sum")
    assert m["agent/turns"] == (1.0, "mean")


def test_environments_step_concurrently_while_the_other_group_generates():
    turns = {chr(ord("a") + i): ["x", "stop"] for i in range(8)}
    start = time.monotonic()
    trajs, counts, _, _ = play(turns, delay=0.25, num_workers=8, interleave=2)
    took = time.monotonic() - start
    assert all(t.final_reward == 1.0 for t in trajs)
    assert took < 1.5, took  # serial stepping would take 8 samples x 2 steps x 0.25s = 4s
    assert counts["env_s"] >= 8 * 2 * 0.25 * 0.9


def test_sampling_order_does_not_depend_on_environment_timing():
    turns = {chr(ord("a") + i): ["x", "y", "stop"] for i in range(6)}
    rng = random.Random(0)
    _, _, fast, _ = play(turns, delay=0.0, interleave=3)
    _, _, slow, _ = play(turns, delay=lambda: rng.uniform(0, 0.05), interleave=3)
    assert fast.calls == slow.calls and len(fast.calls) == 9  # 3 groups x 3 turns



class _BadStep(ScriptEnv):
    def step(self, action):
        return "just text"


def test_a_malformed_step_result_is_an_environment_error_naming_the_environment():
    script = Script({ord("a"): ["x"]})
    trajs = [Trajectory(encode("a"))]
    counts = run_episodes(trajs, [_BadStep()], [{}], TurnIO(script, encode, decode),
                          AgentArgs(max_turns=2, max_response_tokens=200), max_new_tokens=4)
    assert counts["env_errors"] == 2
    assert decode(trajs[0].ids).startswith(
        "xerror: environment _BadStep: step() must return a StepResult or (observation, "
        "reward, done, info), got str")


def test_a_reset_observation_past_the_prompt_width_names_the_setting():
    trajs, _, _, _ = play({"a": ["stop"]})
    with pytest.raises(TrajectoryError, match=r"a prompt of 3 tokens \(with the reset "
                                              r"observation\) is longer than max_prompt_len=2"):
        to_batch(trajs, 0, 2, 8)
