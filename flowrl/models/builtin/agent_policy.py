"""``AgentPolicy``: the built-in multi-turn rollout module of ``flowrl train`` (an ``agent:``
section): :class:`~flowrl.agents.hf.HFAgent` on ``model.path`` with the user's environment
or tools, named by ``file.py:name`` specs.

* ``environment="envs.py:make_env"``: ``make_env(sample) -> Environment`` per episode (the
  environment gives every reward);
* ``tools=["tools.py:calculator", ...]``: each a :class:`~flowrl.agents.Tool` or a plain
  function (its JSON schema is read from the signature); episodes run in a
  :class:`ScoredToolEnvironment` whose final answer is scored by the ``reward:`` function
  ``fn(prompts, completions, **columns)``.

It replaces :class:`~flowrl.models.builtin.policy.Policy` as the ``policy`` role of the same
engine files; the actor syncs into it by HF parameter names as usual.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from flowrl.agents.env import Environment, StepResult, ToolEnvironment
from flowrl.agents.hf import HFAgent
from flowrl.agents.parsers import make_parser
from flowrl.agents.tools import Tool
from flowrl.errors import ConfigError
from flowrl.rewards import RewardConfig
from flowrl.rewards.calling import RewardCallError, run_reward

#: Python annotation -> JSON-schema type of a tool function's argument
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean",
               "str": "string", "int": "integer", "float": "number", "bool": "boolean"}


def load_object(spec: str, base_dir: str | Path | None, field: str) -> Any:
    """The object named by ``spec`` (``file.py:name``, relative to ``base_dir``, or
    ``package.module:name``); errors are :class:`ConfigError` naming ``field`` and the file."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(f"{field}: {spec!r} is not 'file.py:name' or 'package.module:name'")
    where, attr = spec.split(":")
    if where.endswith(".py") or "/" in where:
        path = (Path(base_dir or ".") / Path(where).expanduser()).resolve()
        if not path.is_file():
            raise ConfigError(f"{field}: {spec!r}: file {path} does not exist")
        name = f"flowrl_agent_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
        module = sys.modules.get(name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # before exec: pickle finds functions by module name
            try:
                module_spec.loader.exec_module(module)
            except Exception as err:
                del sys.modules[name]
                raise ConfigError(f"{field}: importing {path} failed: "
                                  f"{type(err).__name__}: {err}") from err
    else:
        path = where
        try:
            module = importlib.import_module(where)
        except Exception as err:
            raise ConfigError(f"{field}: cannot import module '{where}': "
                              f"{type(err).__name__}: {err}") from err
    if not hasattr(module, attr):
        names = sorted(n for n in vars(module) if not n.startswith("_"))
        raise ConfigError(f"{field}: {path} has no '{attr}' (it has: {', '.join(names)})")
    return getattr(module, attr)


def tool_from(obj: Any, field: str) -> Tool:
    """``obj`` as a :class:`Tool`: as it is, or a function whose signature gives the schema
    (``str``/``int``/``float``/``bool`` arguments; those without defaults are required)."""
    if isinstance(obj, Tool):
        return obj
    if not callable(obj):
        raise ConfigError(f"{field}: {obj!r} is neither a flowrl.agents.Tool nor a function")
    props, required = {}, []
    for p in inspect.signature(obj).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kind = _JSON_TYPES.get(p.annotation)
        props[p.name] = {"type": kind} if kind else {}
        if p.default is p.empty:
            required.append(p.name)
    schema = {"type": "object", "properties": props, "required": required}
    return Tool(obj.__name__, obj, schema, description=inspect.getdoc(obj) or "")


class ScoredToolEnvironment(ToolEnvironment):
    """Tool use whose final answer is scored by a reward function (``reward:``), called with
    the episode's prompt text and dataset columns. An argument left empty in a call is taken
    from the dataset column of the same name (a tiny policy may call ``calculator`` on "the
    problem on the screen"). A failing reward call scores ``error_score``. ``call_reward``
    is a per-turn reward for the episode's first successful tool call (reward shaping: a
    policy from random init rarely finds the tool without it)."""

    def __init__(self, tools: list[Tool], parser: Any, tool_timeout_s: float,
                 score: Callable[..., Any], score_name: str, error_score: float,
                 call_reward: float = 0.0) -> None:
        super().__init__(tools, parser, tool_timeout_s)
        self.score, self.score_name, self.error_score = score, score_name, error_score
        self.call_reward, self.rewarded_call = call_reward, False

    def step(self, action: str) -> StepResult:
        res = super().step(action)
        info = res.info
        if info.get("tool_calls") and not (info.get("tool_errors") or info.get("tool_timeouts")
                                           or self.rewarded_call):
            self.rewarded_call = True
            res.reward += self.call_reward
        return res

    def prepare_arguments(self, tool: str, arguments: dict) -> dict:
        filled = {k: self.sample[k] for k, v in arguments.items()
                  if v in ("", None) and k in self.sample}
        return {**arguments, **filled}

    def final_reward(self, answer: str) -> float:
        columns = {k: [v] for k, v in self.sample.items() if k != "prompt_text"}
        try:
            return run_reward(self.score, self.score_name, [self.sample.get("prompt_text", "")],
                              [answer], columns)[0]
        except RewardCallError:
            return self.error_score


class AgentPolicy(HFAgent):
    """The ``policy`` of an agent recipe: see the module docstring. ``models.policy.args``
    are :class:`~flowrl.agents.hf.HFAgentArgs` (the ``agent:`` section writes its budgets
    there)."""

    def __init__(self, name: str, *, environment: str | None = None,
                 tools: Sequence[str] = (), parser: str = "json",
                 parser_options: dict[str, Any] | None = None, tool_timeout_s: float = 5.0,
                 call_reward: float = 0.0, reward: RewardConfig | None = None,
                 base_dir: str | Path | None = None) -> None:
        super().__init__(name)
        if (environment is None) == (not tools):
            raise ConfigError(f"models.{name}: give exactly one of agent.environment or "
                              f"agent.tools")
        if tools and reward is None:
            raise ConfigError("agent.tools: the final answer needs a reward: {function: "
                              "file.py:fn} to score it")
        self.environment, self.tools = environment, tuple(tools)
        self.parser_name, self.parser_options = parser, dict(parser_options or {})
        self.tool_timeout_s, self.call_reward = tool_timeout_s, call_reward
        self.reward, self.base_dir = reward, base_dir
        self._make_env: Callable[[dict], Environment] | None = None
        self._tools: list[Tool] = []
        self._score: Callable[..., Any] | None = None

    def setup(self) -> None:
        super().setup()
        if self.environment is not None:
            self._make_env = load_object(self.environment, self.base_dir, "agent.environment")
            if not callable(self._make_env):
                raise ConfigError(f"agent.environment: {self.environment!r} is not callable; "
                                  f"give a function sample -> Environment (or the class)")
            return
        self._tools = [tool_from(load_object(s, self.base_dir, f"agent.tools[{i}]"),
                                 f"agent.tools[{i}]") for i, s in enumerate(self.tools)]
        make_parser(self.parser_name, **self.parser_options)  # a bad format fails at setup
        self._score = load_object(self.reward.function, self.base_dir, "reward.function")

    def build_dataset(self, records, is_eval: bool = False):
        # the prompt text rides along for the reward function (the ids are the prompt)
        return super().build_dataset([{**r, "prompt_text": r["prompt"]} for r in records],
                                     is_eval)

    def make_environment(self, sample: dict[str, Any]) -> Environment:
        if self._make_env is not None:
            env = self._make_env(sample)
            if not isinstance(env, Environment):
                raise ConfigError(f"agent.environment: {self.environment} returned a "
                                  f"{type(env).__name__}, not a flowrl.agents.Environment")
            return env
        return ScoredToolEnvironment(self._tools, make_parser(self.parser_name,
                                                              **self.parser_options),
                                     self.tool_timeout_s, self._score, self.reward.function,
                                     self.reward.error_score, self.call_reward)
