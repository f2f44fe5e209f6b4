"""The checks an :class:`~flowrl.engines.engine.Engine` runs on its flows, modules and config
before anything executes; each raises a :class:`ConfigError` naming the model or field."""

from __future__ import annotations

from typing import Any

from flowrl.config import FlowRLConfig, RuntimeArgs
from flowrl.errors import ConfigError
from flowrl.ir import FlowGraph
from flowrl.models.base import BaseModule, flow_methods


def check_methods(graph: FlowGraph, modules: dict[str, BaseModule]) -> None:
    """Every called method is one the module's class implements (``flow_methods``)."""
    for c in graph.calls():
        m = modules[c.model]
        if c.method in flow_methods(type(m)):
            continue
        if c.is_train:
            raise ConfigError(
                f"model '{c.model}' ({type(m).__name__}) is used as a trainer (train_step "
                f"at {c.source}) but its class does not implement train_step")
        raise ConfigError(
            f"model '{c.model}' ({type(m).__name__}) is called with {c.method} at "
            f"{c.source} but its class does not implement {c.method}")


def check_trainers(train: FlowGraph, config: FlowRLConfig) -> None:
    """Every trainer's data-parallel size divides the micro-batches of a global batch."""
    for c in train.calls():
        if c.is_train:
            check_dp(c.model, config.model(c.model).dp_size, "data_parallel_size",
                     config.runtime_args)


def check_dp(model: str, dp: int, source: str, a: RuntimeArgs) -> None:
    """Data-parallel replicas split a global batch's micro-batches evenly."""
    n_micro = a.train_global_batch_size // a.train_micro_batch_size
    if n_micro % dp:
        raise ConfigError(
            f"models.{model}: {source} {dp} does not divide the {n_micro} micro-batches "
            f"of a global batch (runtime_args.train_global_batch_size="
            f"{a.train_global_batch_size} / train_micro_batch_size="
            f"{a.train_micro_batch_size})")


def check_unused_sections(config: FlowRLConfig, modules: dict[str, BaseModule]) -> None:
    """A model section no flow uses is an unknown key (checked at setup: the evaluator's
    flow may add models after construction)."""
    unused = sorted(set(config.models) - set(modules))
    if unused:
        where = f" in {config.source}" if config.source else ""
        raise ConfigError(
            f"models.{unused[0]}: no flow of this engine uses model(s) "
            f"{', '.join(unused)}{where}; remove the section(s) or fix the model_name")


def sync_pairs(sync: Any, train: FlowGraph, modules: dict[str, BaseModule]
               ) -> list[tuple[str, str]]:
    """``sync={trainer: inference_module}`` as ``(trainer, target)`` model names, checked."""
    if not isinstance(sync, dict):
        raise ConfigError(f"sync must be a dict {{trainer_module: inference_module}}, got "
                          f"{type(sync).__name__}")
    trainers = {c.model for c in train.calls() if c.is_train}
    pairs = []
    for src, dst in sync.items():
        for role, m in (("source", src), ("target", dst)):
            if not isinstance(m, BaseModule):
                raise ConfigError(
                    f"sync {role} {m!r} is a {type(m).__name__}: pass the modules "
                    f"themselves, e.g. sync={{ppo_policy: policy}}, not their model names")
        if src.name not in trainers:
            raise ConfigError(
                f"sync source '{src.name}' does not call train_step in the train flow; "
                f"sync maps trainer -> inference model")
        if dst.name not in modules:
            raise ConfigError(f"sync target '{dst.name}' is not used by any flow")
        pairs.append((src.name, dst.name))
    return pairs
