"""``TrainConfig``: a ``flowrl train`` config, read from YAML (or a dict) plus ``key=value``
overrides, with the algorithm's preset and the generated ``models:`` sections::

    algorithm: {name: grpo, kl: {coef: 0.0}}      # + any AlgorithmSettings field
    model: {path: runs/tiny_llama, init: tiny_llama}
    data: {path: data/arith.jsonl}                 # flowrl.data.DataConfig
    reward: {function: rewards.py:score}           # flowrl.rewards.RewardConfig
    runtime_args: {num_episode: 20, num_inference_per_prompt: 8, ...}
    models:                                        # optional: a role's typed settings
      policy: {generation: {max_new_tokens: 8}}
      actor: {optim: {lr: 1.0e-4}}

Paths in ``data:`` and ``reward:`` are relative to the config file's directory (as when
they are read alone); ``model:`` paths and ``output_dir`` to the working directory (as every
``models.<name>.model_path``).
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, \
    model_validator

from flowrl.algorithms.settings import AlgorithmSettings
from flowrl.config import FlowRLConfig, _format_validation_error, _read_yaml
from flowrl.config.sections import validate_section
from flowrl.config.types import Float
from flowrl.data.config import DataConfig
from flowrl.errors import ConfigError
from flowrl.recipes.overrides import apply_overrides
from flowrl.recipes.presets import (ALGORITHMS, PRESETS, Preset, apply_preset,
                                    deep_merge, preset)
from flowrl.recipes.roles import model_sections, roles
from flowrl.rewards.config import RewardConfig

#: Families that score samples (so need a reward function or a reward model).
_SCORED = ("grpo", "remax", "ppo", "online_dpo")


class TinyInit(BaseModel):
    """``model.init``: write a tiny random-init Llama with a character tokenizer to
    ``model.path`` when it has no ``config.json`` yet (examples and tests; nothing is
    downloaded). ``init: tiny_llama`` is short for ``init: {kind: tiny_llama}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["tiny_llama"] = "tiny_llama"
    chars: str | None = Field(None, min_length=1, description="the tokenizer's characters "
                                                             "(default: flowrl's letters)")
    seed: int = Field(0, ge=0, description="seed of the random weights")
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)


class ModelSection(BaseModel):
    """``model:``: the policy's weights and where the other roles' come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1, description="local Hugging Face directory of the policy "
                                                "(actor, reference and critic default to it)")
    init: TinyInit | None = Field(None, description="write a tiny model to path first "
                                                    "(see TinyInit)")
    reference: str | None = Field(None, description="the reference's weights (default: path)")
    critic: str | None = Field(None, description="the critic's weights (PPO; default: path "
                                                 "with a fresh value head)")
    reward_model: str | None = Field(None, description="a sequence-classifier reward model "
                                                       "directory, instead of reward:")
    dtype: Literal["fp32", "bf16", "fp16"] | None = Field(
        None, description="every role's dtype (default: the checkpoint's)")

    @field_validator("init", mode="before")
    @classmethod
    def _short_form(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v


class AgentSection(BaseModel):
    """``agent:``: the policy plays multi-turn episodes (:class:`~flowrl.models.builtin.
    agent_policy.AgentPolicy`) with an environment or tools from your Python file. The
    budgets become ``models.policy.args`` (:class:`~flowrl.agents.AgentArgs`), where the
    planner reads them; set them here only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: str | None = Field(None, description="'envs.py:make_env': make_env(sample) "
                                    "-> flowrl.agents.Environment; it gives the rewards")
    tools: list[str] | None = Field(None, min_length=1, description="['tools.py:calculator']: "
                                    "Tool objects or functions; reward: scores the answer")
    parser: str = Field("json", description="tool-call format (flowrl.agents.PARSERS)")
    parser_options: dict[str, Any] = Field(default_factory=dict,
                                           description="the format's options (marker: tool, "
                                                       "argument, marker)")
    max_turns: int = Field(4, ge=1, description="policy turns per episode")
    max_tokens: int = Field(64, ge=1, description="response token budget (policy + "
                                                  "environment tokens)")
    timeout_s: float = Field(10.0, gt=0, description="deadline of one environment step")
    tool_timeout_s: float = Field(5.0, gt=0, description="deadline of one tool call")
    call_reward: float = Field(0.0, description="tools: per-turn reward of an episode's first "
                                                "successful tool call (shaping)")
    num_workers: int = Field(8, ge=1, description="environment steps running at once")
    planned_env_step_s: float = Field(0.0, ge=0, description="one step's time, for planning")

    @model_validator(mode="after")
    def _one_source(self) -> "AgentSection":
        if (self.environment is None) == (self.tools is None):
            raise ValueError("give exactly one of agent.environment ('envs.py:make_env') or "
                             "agent.tools (['tools.py:calculator'])")
        from flowrl.agents.parsers import PARSERS
        if self.parser not in PARSERS:
            raise ValueError(f"agent.parser={self.parser!r}: known formats are "
                             f"{', '.join(sorted(PARSERS))}")
        return self

    def policy_args(self) -> dict[str, Any]:
        """The ``models.policy.args`` this section sets."""
        return {"max_turns": self.max_turns, "max_response_tokens": self.max_tokens,
                "env_timeout_s": self.timeout_s, "num_workers": self.num_workers,
                "planned_env_step_s": self.planned_env_step_s}


#: Families that can roll out with an agent (the rollout module is just another policy).
AGENT_FAMILIES = ("grpo", "ppo")


class AlgorithmSection(AlgorithmSettings):
    """``algorithm:``: the name (its preset fills the rest) and :class:`AlgorithmSettings`,
    plus the DPO knobs."""

    name: str = Field(description=f"one of {', '.join(ALGORITHMS)}")
    beta: Float = Field(0.1, gt=0, description="DPO / online DPO: the KL strength beta")
    dpo_loss: Literal["sigmoid", "ipo"] = Field("sigmoid", description="DPO loss form")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        preset(v)  # raises with a "did you mean"; pydantic reports it under algorithm.name
        return v

    def settings(self) -> AlgorithmSettings:
        """The library's settings alone (what the modules take)."""
        return AlgorithmSettings.model_validate(
            self.model_dump(include=set(AlgorithmSettings.model_fields)))


class TrainConfig(FlowRLConfig):
    """A whole ``flowrl train`` config: FlowRLConfig's sections plus the recipe's."""

    # ``model:`` in the file; ``weights`` in Python (FlowRLConfig.model() is a method).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    algorithm: AlgorithmSection
    weights: ModelSection = Field(alias="model")
    data: DataConfig
    # None first: the "did you mean" of an unknown key looks at the union's last member.
    reward: Union[None, RewardConfig] = None
    agent: Union[None, AgentSection] = None

    @property
    def preset(self) -> Preset:
        return PRESETS[self.algorithm.name]

    @property
    def base_dir(self) -> Path:
        """The config file's directory (data and reward paths are relative to it)."""
        src = self.source
        return Path(src).resolve().parent if src and src != "<dict>" else Path.cwd()

    @model_validator(mode="after")
    def _fits_algorithm(self) -> "TrainConfig":
        p, name = self.preset, self.algorithm.name
        if self.data.kind != p.data_kind:
            raise ValueError(f"data.kind={self.data.kind!r}, but {name} reads "
                             f"{p.data_kind!r} records (drop data.kind, or pick another "
                             f"algorithm.name)")
        scored = p.family in _SCORED
        if self.agent is not None:
            self._fits_agent()
        elif scored and (self.reward is None) == (self.weights.reward_model is None):
            raise ValueError(f"{name} scores its samples: give exactly one of reward: "
                             f"{{function: file.py:fn}} or model.reward_model")
        if not scored and (self.reward is not None or self.weights.reward_model):
            raise ValueError(f"{name} trains on the data alone: remove reward: / "
                             f"model.reward_model")
        n = self.runtime_args.num_inference_per_prompt
        if p.groups and n < 2:
            raise ValueError(f"runtime_args.num_inference_per_prompt={n}: {name} compares "
                             f"the samples of one prompt and needs at least 2")
        a = self.runtime_args
        if p.family == "online_dpo" and a.train_micro_batch_size % n:
            raise ValueError(f"runtime_args.train_micro_batch_size={a.train_micro_batch_size}: "
                             f"{name} pairs the {n} candidates of a prompt inside one "
                             f"micro-batch; make it a multiple of num_inference_per_prompt")
        if p.family == "dpo" and self.weights.reference:
            raise ValueError("model.reference: offline dpo's reference is the actor's initial "
                             "weights (model.path); remove model.reference")
        opts = self.algorithm.policy_loss.options
        if self.algorithm.policy_loss.name == "dr_grpo" and "max_length" not in opts:
            raise ValueError("algorithm.policy_loss.options.max_length: the dr_grpo loss "
                             "divides by the generation budget; set models.policy.generation."
                             "max_new_tokens (or this option)")
        return self

    def _fits_agent(self) -> None:
        """An agent's episodes are scored by its environment, or by reward: with tools."""
        name = self.algorithm.name
        if self.preset.family not in AGENT_FAMILIES:
            raise ValueError(f"agent: {name} cannot roll out with an agent (algorithms of "
                             f"the {', '.join(AGENT_FAMILIES)} families can)")
        if self.weights.reward_model:
            raise ValueError("model.reward_model: an agent's episodes are scored by its "
                             "environment (agent.environment) or by reward: (agent.tools)")
        if self.agent.tools and self.reward is None:
            raise ValueError("agent.tools: give reward: {function: file.py:fn} to score the "
                             "final answer")
        if self.agent.environment and self.agent.call_reward:
            raise ValueError("agent.call_reward: shapes the tools' environment; an "
                             "agent.environment gives its own rewards")
        if self.agent.environment and self.reward is not None:
            raise ValueError("reward: agent.environment gives the rewards; remove reward:")

    def flow_config(self) -> FlowRLConfig:
        """The engine's config: the runtime sections alone (what Ray workers reload)."""
        cfg = FlowRLConfig.model_validate(self.model_dump(include=set(FlowRLConfig.model_fields)))
        cfg.source = self.source
        return cfg

    def roles(self) -> tuple[str, ...]:
        """The model roles this config runs (the keys of ``models``)."""
        return roles(self.preset.family, self.algorithm.kl.coef, self.agent is not None)


def _user_models(raw: dict[str, Any], generated: dict[str, dict], name: str,
                 source: str) -> dict[str, dict]:
    """The generated sections with the user's ``models.<role>`` keys written over them."""
    user = raw.get("models") or {}
    if not isinstance(user, dict):
        raise ConfigError(f"{source}: models: must map roles to sections, got "
                          f"{type(user).__name__}")
    out = copy.deepcopy(generated)
    for role, section in user.items():
        if role not in generated:
            hint = difflib.get_close_matches(str(role), list(generated), n=1)
            raise ConfigError(
                f"models.{role}: {name} runs no model named {role!r}"
                + (f"; did you mean '{hint[0]}'?" if hint else "")
                + f" (its models: {', '.join(generated)})")
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"models.{role}: expected a mapping, got {type(section).__name__}")
        out[role] = deep_merge(out[role], section or {})
    return out


def _agent_args(raw: dict[str, Any], agent: AgentSection) -> None:
    """The agent's budgets are set in ``agent:`` only (one source of truth)."""
    policy = (raw.get("models") or {}).get("policy") or {}
    args = policy.get("args") if isinstance(policy, dict) else None
    keys = {"max_turns": "max_turns", "max_response_tokens": "max_tokens",
            "env_timeout_s": "timeout_s", "num_workers": "num_workers",
            "planned_env_step_s": "planned_env_step_s"}
    both = [k for k in keys if isinstance(args, dict) and k in args]
    if both:
        raise ConfigError(f"models.policy.args.{both[0]}: with an agent: section, set "
                          f"agent.{keys[both[0]]} instead")


def _max_new_tokens(raw: dict[str, Any]) -> int | None:
    policy = (raw.get("models") or {}).get("policy") or {}
    gen = policy.get("generation") if isinstance(policy, dict) else None
    value = gen.get("max_new_tokens") if isinstance(gen, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _raw(config: str | Path | dict) -> tuple[dict[str, Any], str]:
    if isinstance(config, dict):
        return copy.deepcopy(config), "<dict>"
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data, str(path)


def is_train_config(config: str | Path | dict[str, Any]) -> bool:
    """Whether ``config`` (a YAML path or a dict) is a ``flowrl train`` config: one with an
    ``algorithm:`` section."""
    data = _raw(config)[0] if isinstance(config, (str, Path)) else config
    return isinstance(data, dict) and "algorithm" in data


def load_train_config(config: str | Path | dict | TrainConfig,
                      overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read, override, preset, generate the ``models:`` sections and validate.

    Raises:
        ConfigError: naming the file and field, or the override, that is wrong.
    """
    if isinstance(config, TrainConfig):
        if not overrides:
            return config
        # Sections of roles the overridden config may no longer run are regenerated.
        config = {**config.model_dump(exclude_unset=True, exclude={"models"}, by_alias=True),
                  "source": config.source}
    raw, source = _raw(config)
    source = raw.pop("source", None) or source
    apply_overrides(raw, overrides)
    algo = raw.get("algorithm")
    if not isinstance(algo, dict) or "name" not in algo:
        raise ConfigError(f"{source}: algorithm.name is required (one of "
                          f"{', '.join(ALGORITHMS)})")
    p = preset(algo["name"])
    raw["algorithm"] = apply_preset(algo, _max_new_tokens(raw))
    if isinstance(raw.get("data"), dict):
        raw["data"] = {"kind": p.data_kind, **raw["data"]}
    # Checked alone first: its errors then get a "did you mean" from its own fields.
    model = validate_section(ModelSection, raw.get("model"), "model").model_dump()
    kl = raw["algorithm"].get("kl")
    kl_coef = kl.get("coef") if isinstance(kl, dict) else None
    agent = None if raw.get("agent") is None else \
        validate_section(AgentSection, raw["agent"], "agent")
    generated = model_sections(p.family, kl_coef, model, agent is not None)
    if agent is not None and "policy" in generated:  # else the validation names the misfit
        _agent_args(raw, agent)
        generated["policy"]["args"] = agent.policy_args()
    raw["models"] = _user_models(raw, generated, algo["name"], source)
    try:
        cfg = TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, TrainConfig, source, raw)) from None
    cfg.source = source
    _behaviour_logprobs(cfg)
    return cfg


#: Families whose policy trainer is the built-in Actor (the only reader of ``logprobs``).
_ACTOR_FAMILIES = ("grpo", "ppo", "remax")


def _behaviour_logprobs(cfg: TrainConfig) -> None:
    """Skip the rollout's scoring forward (``models.policy.args.behaviour_logprobs: false``)
    when nothing needs it: each rollout is trained once, in one optimizer step, by the
    weights that generated it (so the Actor's own detached log-probs are the behaviour ones,
    as in TRL) and no KL-in-reward reads them. A value the user wrote stays."""
    policy = cfg.models.get("policy")
    a, kl = cfg.runtime_args, cfg.algorithm.kl
    if (policy is None or cfg.agent is not None or cfg.preset.family not in _ACTOR_FAMILIES
            or "behaviour_logprobs" in policy.args):
        return
    one_step = (a.num_training_epoch == 1 and a.max_staleness == 0
                and a.train_global_batch_size == a.sample_per_episode)
    if one_step and not (kl.placement == "reward" and kl.coef > 0):
        policy.args["behaviour_logprobs"] = False
