"""The multi-turn rollout: generation and environment steps alternate until every episode is
done or out of its turn / token budget.

Samples are split into ``interleave`` groups that take turns: while one group's environments
step in the :class:`~flowrl.agents.pool.CallPool`, the policy generates the next turn of the
other group, so environment time overlaps generation and a slow environment delays only its
own group (and never past ``env_timeout_s``). Group membership and order are fixed, so the
sampling order (and thus a seeded run) does not depend on how long environments take.

:class:`AgentRollout` is the rollout *module*: one call in a rollout ``@flow`` returns the
whole batch of trajectories in the layout of :mod:`flowrl.agents.trajectory`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import torch
from pydantic import Field

from flowrl.agents.env import Environment, StepResult
from flowrl.agents.pool import CallPool, Outcome
from flowrl.agents.errors import TrajectoryError
from flowrl.agents.trajectory import Trajectory, to_batch
from flowrl.models.args import ModuleArgs
from flowrl.models.base import outputs
from flowrl.models.torch_module import TorchModule

#: counters an environment may set in ``info`` (ToolEnvironment does); summed per episode
INFO_COUNTERS = ("tool_calls", "tool_errors", "tool_timeouts", "parse_errors", "final_answer")


class AgentArgs(ModuleArgs):
    """``models.<name>.args`` of an agent rollout module."""

    max_turns: int = Field(4, ge=1, description="policy turns per episode (turn budget)")
    max_response_tokens: int = Field(64, ge=1, description="token budget of the response: "
                                     "policy and environment tokens together")
    max_prompt_len: int = Field(16, ge=1, description="prompt + reset observation, in tokens")
    num_workers: int = Field(8, ge=1, description="environment calls running at once")
    env_timeout_s: float = Field(10.0, gt=0, description="deadline of one reset/step call")
    interleave: int = Field(2, ge=1, description="sample groups alternating generation and "
                            "environment steps")
    planned_env_step_s: float = Field(0.0, ge=0, description="the compiler's estimate of one "
                                      "environment step, seconds (planning only)")


@dataclass
class TurnIO:
    """How the loop talks to the policy (all ids, no re-tokenisation of sampled text)."""

    sample_turn: Callable[[list[list[int]], list[int], tuple[str, ...]], list[list[int]]]
    encode: Callable[[str], list[int]]   # observation text -> ids (no BOS), once
    decode: Callable[[list[int]], str]   # a turn's ids -> the action text (acting only)


class AgentDataset(torch.utils.data.Dataset):
    """Records ``{"prompt": text, **columns}``: prompt ids (by ``encode``) left-padded to
    ``width``; the other columns ride along as lists (the environment's ``sample``)."""

    def __init__(self, records: list[dict], encode: Callable[[str], list[int]], pad_id: int,
                 width: int, model: str) -> None:
        self.records, self.pad_id, self.width = records, pad_id, width
        self.ids = [list(encode(r["prompt"])) for r in records]
        too_long = [r["prompt"] for r, i in zip(records, self.ids) if len(i) > width]
        if too_long:
            raise TrajectoryError(f"models.{model}.args.max_prompt_len={width}: prompts are "
                                  f"longer: {too_long[:3]}")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[list[int], dict]:
        return self.ids[i], self.records[i]

    def collate_fn(self, rows: list[tuple[list[int], dict]]) -> dict:
        ids = torch.full((len(rows), self.width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), self.width), dtype=torch.long)
        for i, (row, _) in enumerate(rows):
            if row:
                ids[i, self.width - len(row):] = torch.tensor(row)
                mask[i, self.width - len(row):] = 1
        columns = [k for k in rows[0][1] if k != "prompt"]
        return {"prompt": ids, "prompt_mask": mask,
                **{k: [r[k] for _, r in rows] for k in columns}}


def _reset(env: Environment, sample: dict) -> str:
    return str(env.reset(sample))


def run_episodes(trajs: list[Trajectory], envs: list[Environment], samples: list[dict],
                 io: TurnIO, args: AgentArgs, max_new_tokens: int) -> Counter:
    """Run every episode to the end, filling ``trajs``; returns the episode's counters."""
    pool = CallPool(args.num_workers, args.env_timeout_s)
    counts: Counter = Counter()
    for t, out in zip(trajs, pool.run("environment reset", _reset, list(zip(envs, samples)))):
        if out.kind == "ok":
            t.prompt_ids += io.encode(out.value)
        else:  # an environment that cannot start ends its episode at once
            counts["env_errors" if out.kind == "error" else "env_timeouts"] += 1
            t.done = True
    stops = tuple(dict.fromkeys(s for e in envs for s in e.stop_strings))
    groups = [list(range(g, len(trajs), args.interleave)) for g in range(args.interleave)]
    pending: dict[int, Any] = {}
    while any(not t.done for t in trajs):
        for group in groups:
            for i in [i for i in group if i in pending]:
                _apply(trajs[i], pool.wait(pending.pop(i)), io, args, counts,
                       type(envs[i]).__name__)
            ready = [i for i in group if not trajs[i].done]
            for i in ready:  # out of token budget before the turn: nothing more to sample
                if len(trajs[i].ids) >= args.max_response_tokens:
                    trajs[i].done = trajs[i].truncated = True
            ready = [i for i in ready if not trajs[i].done]
            if not ready:
                continue
            budgets = [min(max_new_tokens, args.max_response_tokens - len(trajs[i].ids))
                       for i in ready]
            new_ids = io.sample_turn([trajs[i].context for i in ready], budgets, stops)
            for i, ids in zip(ready, new_ids):
                trajs[i].add_policy(list(ids))
                pending[i] = pool.submit("environment step", envs[i].step, io.decode(ids))
    return counts


def _apply(t: Trajectory, out: Outcome, io: TurnIO, args: AgentArgs, counts: Counter,
           env: str) -> None:
    """Fold one step's outcome into its trajectory."""
    counts["env_s"] += out.seconds
    if out.kind == "timeout":  # the environment is still busy: it cannot take another step
        counts["env_timeouts"] += 1
        t.add_observation(io.encode(f"error: {out.value}"), args.max_response_tokens)
        t.done = t.truncated = True
        return
    if out.kind == "error":  # the policy sees the error and may go on
        counts["env_errors"] += 1
        res = StepResult(f"error: environment step failed: {out.value}")
    else:
        try:
            res = StepResult.of(out.value, env)
        except Exception as err:  # noqa: BLE001 - a malformed result is an env error
            counts["env_errors"] += 1
            res = StepResult(f"error: {err}")
    for key in INFO_COUNTERS:
        counts[key] += int(res.info.get(key, 0))
        t.counts[key] += int(res.info.get(key, 0))
    if res.done:
        t.final_reward = float(res.reward)
        t.done = True
        return
    t.turn_rewards[-1] += float(res.reward)
    if t.turns >= args.max_turns:
        t.done = t.truncated = True
        return
    if not t.add_observation(io.encode(res.observation), args.max_response_tokens):
        t.done = t.truncated = True


def episode_metrics(trajs: list[Trajectory], counts: Counter) -> dict[str, tuple[float, str]]:
    """``agent/*`` metrics of one rollout call: (value, reduce) as :meth:`BaseModule.log`."""
    n = max(1, len(trajs))
    out = {f"agent/{k}": (float(counts[k]), "sum") for k in
           ("tool_calls", "tool_errors", "tool_timeouts", "parse_errors", "env_errors",
            "env_timeouts")}
    out["agent/env_s"] = (counts["env_s"], "sum")
    out["agent/turns"] = (sum(t.turns for t in trajs) / n, "mean")
    out["agent/truncated"] = (sum(t.truncated for t in trajs) / n, "mean")
    # fraction of episodes that called a tool at least once
    out["agent/tool_call_rate"] = (sum(t.counts["tool_calls"] > 0 for t in trajs) / n, "mean")
    out["agent/score"] = (sum(t.score for t in trajs) / n, "mean")
    out["agent/final_reward"] = (sum(t.final_reward for t in trajs) / n, "mean")
    out["agent/response_tokens"] = (sum(len(t.ids) for t in trajs) / n, "mean")
    return out


class AgentRollout(TorchModule):
    """A policy that plays multi-turn episodes. Subclasses provide the model side:
    :meth:`sample_turn`, :meth:`encode`, :meth:`decode`, :meth:`behaviour_logprobs`,
    ``pad_id``; and the task: :meth:`make_environment`. ``models.<name>.args``:
    :class:`AgentArgs` (subclass it to add fields); per-turn new tokens come from
    ``models.<name>.generation.max_new_tokens``.

    ``forward_step`` reads ``prompt``/``prompt_mask`` and the row's other columns (handed
    to ``make_environment`` and ``reset`` as the sample) and returns the rollout batch
    (columns do not pass through: the environment has used them).
    """

    Args = AgentArgs
    pad_id: int = 0

    @abstractmethod
    def make_environment(self, sample: dict[str, Any]) -> Environment:
        """A fresh environment for one episode."""

    @abstractmethod
    def sample_turn(self, contexts: list[list[int]], max_new_tokens: list[int],
                    stop_strings: tuple[str, ...]) -> list[list[int]]:
        """Sample one turn per context (batched): the ids as sampled, ending at EOS, a stop
        string, or ``max_new_tokens``."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Observation text -> ids (no BOS)."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """A turn's ids -> action text."""

    @abstractmethod
    def behaviour_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Log-probs ``[B, N]`` of ``response`` under the sampling policy (attending to every
        token, see :func:`flowrl.agents.trajectory.full_sequence`)."""

    @outputs("prompt", "prompt_mask", "response", "response_mask", "response_attention_mask",
             "logprobs", "score", "token_rewards", "turns")
    def forward_step(self, data: dict, iteration: int = 0) -> dict:
        a = self.typed_args
        columns = {k: v for k, v in data.items() if k not in ("prompt", "prompt_mask")
                   and not isinstance(v, torch.Tensor)}
        b = data["prompt"].shape[0]
        samples = [{k: v[i] for k, v in columns.items()} for i in range(b)]
        trajs = [Trajectory([int(t) for t, m in zip(row, mask) if m])
                 for row, mask in zip(data["prompt"].tolist(), data["prompt_mask"].tolist())]
        envs = [self.make_environment(s) for s in samples]
        io = TurnIO(self.sample_turn, self.encode, self.decode)
        counts = run_episodes(trajs, envs, samples, io, a,
                              self.model_config.generation.max_new_tokens or 16)
        try:
            out = to_batch(trajs, self.pad_id, a.max_prompt_len, a.max_response_tokens)
        except TrajectoryError as err:  # name the section the setting lives in
            raise TrajectoryError(f"models.{self.name}.args: {err}") from None
        with torch.no_grad():
            out["logprobs"] = self.behaviour_logprobs(out) * out["response_mask"]
        for name, (value, reduce) in episode_metrics(trajs, counts).items():
            self.log(name, value, reduce)
        return out
