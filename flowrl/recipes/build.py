"""From a :class:`TrainConfig` to a ready engine: the built-in module of each role, the
algorithm family's ``@flow`` engine, and the data.

>>> engine, data = build("examples/grpo_hf.yaml", ["runtime_args.num_episode=3"])
>>> engine.learn()

:func:`plan` builds the same engine without weights or data (``flowrl explain``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from flowrl import context
from flowrl.data import DataSplits, load_dataset_spec
from flowrl.engines.engine import Engine, Evaluator
from flowrl.dsl.flow import flow
from flowrl.models.base import BaseModule
from flowrl.recipes import dpo, grpo, ppo, remax, sft
from flowrl.recipes.config import TrainConfig, load_train_config
from flowrl.recipes.feed import DataFeed

#: The engine function of each family (see the family's file; each is a template to copy).
ENGINES: dict[str, Callable[..., Engine]] = {
    "grpo": grpo.engine, "remax": remax.engine, "ppo": ppo.engine, "dpo": dpo.offline_engine,
    "online_dpo": dpo.online_engine, "sft": sft.engine}


def make_module(role: str, cfg: TrainConfig) -> BaseModule:
    """The built-in module of ``role`` (named after it); nothing is loaded until setup."""
    from flowrl.models.builtin.advantage import Advantage
    from flowrl.models.builtin.critic import Critic
    from flowrl.models.builtin.policy import Policy
    from flowrl.models.builtin.reference import Reference

    family, algo = cfg.preset.family, cfg.algorithm
    if role == "policy" and cfg.agent is not None:
        return _agent_policy(cfg)
    simple = {"policy": Policy, "reference": Reference, "critic": Critic}
    if role in simple:
        return simple[role](role)
    if role == "reward":
        return _reward(cfg)
    if role == "advantage":
        return Advantage(role, algo.settings())
    if role == "feed":
        return DataFeed(role)
    if role == "critic_trainer":
        from flowrl.models.builtin.critic_trainer import CriticTrainer
        return CriticTrainer(role)
    return _trainer(family, cfg)


def _trainer(family: str, cfg: TrainConfig) -> BaseModule:
    """The ``actor``: the family's trainer of the policy."""
    if family == "sft":
        from flowrl.models.builtin.sft import SFTTrainer
        return SFTTrainer("actor")
    if family in ("dpo", "online_dpo"):
        from flowrl.models.builtin.preference import DPOTrainer
        return DPOTrainer("actor", beta=cfg.algorithm.beta, loss_type=cfg.algorithm.dpo_loss)
    from flowrl.models.builtin.actor import Actor
    return Actor("actor", cfg.algorithm.settings())


def _agent_policy(cfg: TrainConfig) -> BaseModule:
    """``agent:``: the policy plays episodes with the user's environment or tools."""
    from flowrl.models.builtin.agent_policy import AgentPolicy

    a = cfg.agent
    return AgentPolicy("policy", environment=a.environment, tools=a.tools or (),
                       parser=a.parser, parser_options=a.parser_options,
                       tool_timeout_s=a.tool_timeout_s, call_reward=a.call_reward,
                       reward=cfg.reward,
                       base_dir=str(cfg.base_dir))


def _reward(cfg: TrainConfig) -> BaseModule:
    """The reward function (weightless; decodes with the policy's tokenizer) or model."""
    if cfg.reward is None:
        from flowrl.models.builtin.reward_model import RewardModel
        return RewardModel("reward")
    from flowrl.models.builtin.function_reward import FunctionReward
    return FunctionReward("reward", cfg.reward, base_dir=str(cfg.base_dir),
                          tokenizer_path=cfg.weights.path)


def write_initial_weights(cfg: TrainConfig) -> bool:
    """``model.init``: write the tiny model to ``model.path`` if it has no config.json yet;
    returns whether it wrote one."""
    init, path = cfg.weights.init, Path(cfg.weights.path)
    if init is None or (path / "config.json").is_file():
        return False
    from flowrl.models.hf import save_tiny_llama

    extra = {"chars": init.chars} if init.chars else {}
    save_tiny_llama(path, seed=init.seed, hidden_size=init.hidden_size,
                    num_layers=init.num_layers, **extra)
    return True


def _engine(cfg: TrainConfig) -> Engine:
    flow_cfg = cfg.flow_config()
    context.init(flow_cfg)  # seeds the RNGs; the compiler reads the runtime args from it
    modules = {role: make_module(role, cfg) for role in cfg.roles()}
    if cfg.agent is not None:  # the agent's environment scores: the flow has no reward call
        modules["reward"] = None
    engine = ENGINES[cfg.preset.family](**modules, config=flow_cfg)
    return engine.set_dynamic_sampling(cfg.algorithm.dynamic_sampling)


def plan(config: str | Path | dict | TrainConfig, overrides: list[str] | tuple = ()) -> Engine:
    """The engine of ``config`` for planning: no weights are read or written, no data."""
    return _engine(load_train_config(config, overrides))


def build(config: str | Path | dict | TrainConfig, overrides: list[str] | tuple = ()
          ) -> tuple[Engine, DataSplits]:
    """The engine of ``config`` with its data set (and an evaluator on the eval split when
    ``runtime_args.eval_episode_interval`` > 0), ready to ``learn()``."""
    cfg = load_train_config(config, overrides)
    if write_initial_weights(cfg):  # re-read: the model sections take shape from config.json
        cfg = load_train_config(config, overrides)
    engine = _engine(cfg)
    data = load_dataset_spec(cfg.data, base_dir=cfg.base_dir, tokenizer=_chat_tokenizer(cfg))
    engine.set_dataset(data.train)
    if data.eval and cfg.runtime_args.eval_episode_interval and "reward" in engine.modules:
        engine.set_evaluator(_evaluator(engine).set_dataset(data.eval))
    return engine, data


def _chat_tokenizer(cfg: TrainConfig) -> Any:
    """The policy's tokenizer, to render chat prompts with its template (None: no template
    wanted, or no tokenizer in the model directory)."""
    if cfg.data.chat_template == "never" or \
            not (Path(cfg.weights.path) / "tokenizer_config.json").is_file():
        return None
    from flowrl.models.hf import load_tokenizer

    return load_tokenizer(cfg.weights.path)


def _evaluator(engine: Engine) -> Evaluator:
    """Sample and score the eval prompts (``eval/score`` and the reward's metrics)."""
    policy, reward = engine.modules["policy"], engine.modules["reward"]

    @flow(name="eval")
    def evaluate(batch):
        out = policy.forward_step(batch)
        return out, reward.forward_step(out)

    return Evaluator(evaluate)


def train(config: str | Path | dict | TrainConfig, overrides: list[str] | tuple = (),
          callbacks: list[Any] | tuple = ()) -> Engine:
    """Build and train (``flowrl.train``). Returns the engine: ``engine.history`` holds one
    metrics row per episode, ``engine.config.runtime_args.output_dir`` this run's directory,
    and with an ``output_dir`` the trained policy is saved there as a Hugging Face directory
    (:func:`save_trained_model`). ``callbacks`` are the engine's per-step callbacks
    (:mod:`flowrl.engines.callbacks`; ``engine.control.should_training_stop`` ends the run
    after the episode). The engine's processes (Ray workers, reward pools) are released at
    the end; use :func:`build` and ``learn()`` to keep the trained modules."""
    engine, _ = build(config, overrides)
    try:
        engine.learn(callbacks=list(callbacks))
        saved = save_trained_model(engine)
        if saved is not None:
            print(f"saved the trained policy to {saved}")
    finally:
        engine.shutdown()
    return engine


def save_trained_model(engine: Engine) -> Path | None:
    """``<output_dir>/model``: the actor's weights and tokenizer, loadable with
    ``from_pretrained`` (and as ``model.path`` of the next run). ``None`` without an
    output_dir, or when the actor does not live in this process (the Ray runtime: save with
    ``runtime_args.save_episode_interval`` checkpoints there)."""
    out = engine.config.runtime_args.output_dir
    actor = engine.modules.get("actor")
    if not out or engine.config.runtime != "local" or not hasattr(actor, "save_pretrained"):
        return None
    path = Path(out) / "model"
    actor.save_pretrained(path)
    return path


#: The metric a run is summed up by, the first present: the score the advantage saw (every
#: RL family), the reward function's mean, else the trainer's loss (DPO, SFT).
HEADLINES = ("advantage/score/mean", "reward/reward/mean", "reward/score/mean", "actor/loss")


def summary(engine: Engine) -> str:
    """One line: the headline metric at the first and last episode, and where outputs are."""
    rows = engine.history
    if not rows:
        return "no episode ran"
    key = next((k for k in HEADLINES if k in rows[0] and k in rows[-1]), None)
    where = engine.config.runtime_args.output_dir
    line = f"{engine.name}: {len(rows)} episode(s)"
    if key is not None:
        line += f"; {key}: first {rows[0][key]:.4g} -> last {rows[-1][key]:.4g}"
    return line + (f"; metrics in {where}/metrics.jsonl" if where else "")
