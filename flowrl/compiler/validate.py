"""Pass 1, ``validate``: reject flows and configs that cannot be planned, naming model and field."""

from __future__ import annotations

import difflib

import networkx as nx

from flowrl.compiler.placement import get_strategy
from flowrl.config import ModelConfig
from flowrl.errors import CompileError
from flowrl.ir import ClusterSpec, FlowGraph


def _hint(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(known))})"


def _check_graph(role: str, graph: FlowGraph, models: dict[str, ModelConfig],
                 methods: dict[str, frozenset[str]] | None) -> None:
    if not nx.is_directed_acyclic_graph(graph.graph):
        cycle = [u for u, _ in nx.find_cycle(graph.graph)]
        names = " -> ".join(cycle + [cycle[0]])
        raise CompileError(f"flow '{role}' has a cycle: {names} (models: "
                           f"{', '.join(sorted({graph.call(n).model for n in cycle}))})")
    for call in graph.calls():
        if call.model not in models:
            raise CompileError(
                f"flow '{role}' calls model '{call.model}' at {call.source or '?'} but there is "
                f"no section models.{call.model}" + _hint(call.model, list(models)))
        if methods is None or call.model not in methods:
            continue
        if call.method not in methods[call.model]:
            what = "trainer" if call.is_train else "model"
            raise CompileError(
                f"{what} '{call.model}' is called with {call.method} in flow '{role}' at "
                f"{call.source or '?'} but its class implements no {call.method} "
                f"(models.{call.model})")


def _check_devices(name: str, cfg: ModelConfig, cluster: ClusterSpec, strategy: str) -> None:
    n = cluster.num_devices
    mp = cfg.model_parallel_size
    if cfg.num_devices is not None and cfg.data_parallel_size is not None and \
            cfg.num_devices != mp * cfg.data_parallel_size:
        raise CompileError(
            f"models.{name}.data_parallel_size={cfg.data_parallel_size} disagrees with "
            f"models.{name}.num_devices={cfg.num_devices} (tensor*pipeline={mp})")
    if cfg.total_devices > n or mp > n:
        field = ("num_devices" if cfg.num_devices is not None else "data_parallel_size"
                 if cfg.data_parallel_size is not None and mp <= n else
                 "tensor_model_parallel_size" if cfg.tensor_model_parallel_size > 1 else
                 "pipeline_model_parallel_size")
        raise CompileError(
            f"models.{name}.{field}: model '{name}' asks for {max(cfg.total_devices, mp)} devices "
            f"(tp={cfg.tensor_model_parallel_size} x pp={cfg.pipeline_model_parallel_size} x "
            f"dp={cfg.dp_size}) but cluster '{cluster.name}' has {n}")
    if strategy in ("colocate", "search") and cfg.num_devices is None and \
            cfg.data_parallel_size is None and n % mp:
        raise CompileError(
            f"models.{name}.tensor_model_parallel_size: tensor*pipeline parallel size {mp} of "
            f"model '{name}' does not divide the cluster's {n} devices")
    if cfg.devices is not None:
        bad = [d for d in cfg.devices if not 0 <= d < n]
        if bad:
            raise CompileError(f"models.{name}.devices names device {bad[0]} but cluster "
                               f"'{cluster.name}' has devices 0..{n - 1}")
        if len(set(cfg.devices)) != len(cfg.devices):
            raise CompileError(f"models.{name}.devices lists a device twice: {cfg.devices}")
        if not cfg.devices or len(cfg.devices) % mp:
            raise CompileError(
                f"models.{name}.devices has {len(cfg.devices)} devices, not a multiple of "
                f"tensor*pipeline parallel size {mp}")
        n_listed = len(cfg.devices)
        if cfg.num_devices is not None and cfg.num_devices != n_listed or \
                cfg.data_parallel_size is not None and cfg.data_parallel_size * mp != n_listed:
            raise CompileError(
                f"models.{name}.devices has {len(cfg.devices)} devices but num_devices / "
                f"data_parallel_size ask for {cfg.total_devices}")
    elif strategy == "manual":
        raise CompileError(f"strategy 'manual' needs models.{name}.devices (a list of device ids)")


def _check_colocation(used: set[str], models: dict[str, ModelConfig],
                      colocation: list[list[str]] | None, strategy: str) -> None:
    for name, cfg in models.items():
        if cfg.colocation_group is not None and name not in used:
            raise CompileError(
                f"models.{name}.colocation_group: group '{cfg.colocation_group}' names model "
                f"'{name}', which no flow uses" + _hint(name, sorted(used)))
    for i, group in enumerate(colocation or []):
        for name in group:
            if name not in used:
                raise CompileError(f"colocation group {i} {list(group)} names unknown model "
                                   f"'{name}'" + _hint(name, sorted(used)))
    if strategy == "manual":
        groups: dict[str, list[str]] = {}
        for name in sorted(used):
            if models[name].colocation_group is not None:
                groups.setdefault(models[name].colocation_group, []).append(name)
        for g, members in groups.items():
            devs = {tuple(sorted(models[m].devices or ())) for m in members}
            if len(devs) > 1:
                raise CompileError(
                    f"models.{members[1]}.devices differ from models.{members[0]}.devices "
                    f"but both are in colocation group '{g}' (strategy manual)")


def validate(graphs: dict[str, FlowGraph], models: dict[str, ModelConfig],
             sync: list[tuple[str, str]], cluster: ClusterSpec, strategy: str,
             methods: dict[str, frozenset[str]] | None = None,
             colocation: list[list[str]] | None = None) -> None:
    """Raise :class:`CompileError` for anything the later passes cannot plan.

    Checks: a registered strategy; graphs acyclic; every called model has a config section;
    every called method is implemented (``methods``: per model, the methods a flow may call
    on it, :func:`flowrl.models.base.flow_methods` of its class, when known);
    trainers implement ``train_step`` and sync sources train; device requests fit the cluster
    and parallel sizes agree; manual device lists are valid; colocation groups name models
    that the flows use.
    """
    get_strategy(strategy)  # a registered placement strategy, or an error listing them
    if "rollout" not in graphs or "train" not in graphs:
        raise CompileError(f"need 'rollout' and 'train' flows, got {sorted(graphs)}")
    for role, graph in graphs.items():
        _check_graph(role, graph, models, methods)
    used = {c.model for g in graphs.values() for c in g.calls()}
    trained = {c.model for g in graphs.values() for c in g.calls() if c.is_train}
    for name in sorted(used):
        cfg = models[name]
        if cfg.trainable and name not in trained and methods is not None and \
                "train_step" not in methods.get(name, frozenset({"train_step"})):
            raise CompileError(f"models.{name}.trainable is true but '{name}' implements "
                               f"no train_step")
        if cfg.trainable is False and name in trained:
            raise CompileError(f"models.{name}.trainable is false but a flow calls "
                               f"{name}.train_step")
        _check_devices(name, cfg, cluster, strategy)
    for src, dst in sync:
        for name in (src, dst):
            if name not in used:
                raise CompileError(f"sync pair ({src} -> {dst}) names model '{name}', which no "
                                   f"flow uses" + _hint(name, sorted(used)))
        if src not in trained:
            raise CompileError(f"sync source '{src}' is a trainer with no train_step call in "
                               f"the train flow (models.{src}); sync maps trainer -> inference")
    _check_colocation(used, models, colocation, strategy)
