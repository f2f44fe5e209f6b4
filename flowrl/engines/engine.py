"""``Engine``: a rollout flow, a train flow and parameter-sync pairs, run episode by episode.

The engine is the single controller: it traces the flows, checks them against the config,
lowers/compiles them into a :class:`~flowrl.compiler.ir.Schedule` and hands that to an
executor, which only executes.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from flowrl import context
from flowrl.compiler.ir import FlowGraph, Schedule
from flowrl.compiler.lower import lower
from flowrl.dsl.flow import Flow
from flowrl.errors import ConfigError, FlowRLError
from flowrl.models.base import BaseModule
from flowrl.runtime.data import PromptStream, check_dataset
from flowrl.runtime.episodes import EpisodeRunner
from flowrl.runtime.executor import LocalExecutor
from flowrl.runtime.metrics import MetricsLogger


class Evaluator:
    """Runs an eval flow over an eval prompt set; ``post_process`` turns outputs into metrics.

    Without ``post_process`` every per-sample scalar (a 1-D tensor with one value per sample)
    in the flow's output is averaged.
    """

    def __init__(self, eval_flow: Flow, post_process: Callable[[list[dict]], dict] | None = None):
        self.flow = eval_flow
        self.post_process = post_process
        self.prompts: list | None = None

    def set_dataset(self, prompts: list) -> "Evaluator":
        self.prompts = list(prompts)
        return self

    def set_post_process_func(self, fn: Callable[[list[dict]], dict]) -> "Evaluator":
        self.post_process = fn
        return self

    def default_metrics(self, outputs: list[dict]) -> dict[str, float]:
        sums: dict[str, list[torch.Tensor]] = {}
        for out in outputs:
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.dim() == 1 and v.is_floating_point():
                    sums.setdefault(k, []).append(v.float())
        return {k: torch.cat(v).mean().item() for k, v in sums.items()}


def module_methods(module: BaseModule) -> frozenset[str]:
    """Public methods a module's class really implements (BaseModule's defaults excluded)."""
    names = set()
    for n in dir(type(module)):
        if n.startswith("_") or not callable(getattr(type(module), n, None)):
            continue
        if getattr(type(module), n) is not getattr(BaseModule, n, None):
            names.add(n)
    return frozenset(names)


def _first_dataset_module(graph: FlowGraph, modules: dict[str, BaseModule]) -> BaseModule:
    for call in graph.entry_calls():
        m = modules[call.model]
        if type(m).build_dataset is not BaseModule.build_dataset:
            return m
    first = graph.entry_calls()[0].model if graph.entry_calls() else graph.calls()[0].model
    raise FlowRLError(
        f"flow '{graph.name}': its first model '{first}' must implement "
        f"build_dataset(prompts, is_eval) to turn prompts into a Dataset")


class Engine:
    """Rollout flow + train flow + ``sync={trainer: inference_model}``.

    >>> engine = Engine(rollout, train, sync={ppo_policy: policy, ppo_value: value})
    >>> engine.set_dataset(prompts); engine.learn()
    """

    def __init__(self, rollout: Flow, train: Flow,
                 sync: dict[BaseModule, BaseModule] | None = None, name: str = "engine") -> None:
        for role, f in (("rollout", rollout), ("train", train)):
            if not isinstance(f, Flow):
                raise TypeError(f"{role} must be a @flow function, got {type(f).__name__}")
        self.name = name
        self.config = context.get_args()
        self.flows: dict[str, Flow] = {"rollout": rollout, "train": train}
        self.graphs: dict[str, FlowGraph] = {r: f.trace() for r, f in self.flows.items()}
        self.modules = self._modules_of(self.graphs.values())
        self.sync_pairs = self._check_sync(sync or {})
        self.prompts: list | None = None
        self.evaluator: Evaluator | None = None
        self.executor: LocalExecutor | None = None
        self.runner: EpisodeRunner | None = None
        self.schedule: Schedule | None = None

    # ---- construction checks ---------------------------------------------------------------
    def _modules_of(self, graphs) -> dict[str, BaseModule]:
        registry = context.registered_modules()
        modules: dict[str, BaseModule] = {}
        for g in graphs:
            for name in g.models():
                modules[name] = registry[name]
                self.config.model(name)  # a missing section is an error now, not mid-run
        return modules

    def _check_sync(self, sync: dict[BaseModule, BaseModule]) -> list[tuple[str, str]]:
        trainers = {c.model for c in self.graphs["train"].calls() if c.is_train}
        pairs = []
        for src, dst in sync.items():
            if src.name not in trainers:
                raise ConfigError(
                    f"sync source '{src.name}' does not call train_step in the train flow; "
                    f"sync maps trainer -> inference model")
            if dst.name not in self.modules:
                raise ConfigError(f"sync target '{dst.name}' is not used by any flow")
            pairs.append((src.name, dst.name))
        return pairs

    # ---- the user's API ----------------------------------------------------------------------
    def set_dataset(self, prompts: list) -> "Engine":
        """Prompts handed to the first model's ``build_dataset(prompts, is_eval=False)``."""
        if not len(prompts):
            raise ConfigError("set_dataset got no prompts")
        self.prompts = list(prompts)
        return self

    def set_evaluator(self, evaluator: Evaluator) -> "Engine":
        """Run ``evaluator`` every ``runtime_args.eval_episode_interval`` episodes."""
        self.evaluator = evaluator
        self.graphs["eval"] = evaluator.flow.trace()
        self.modules.update(self._modules_of([self.graphs["eval"]]))
        return self

    def compile(self, cluster: Any = None, strategy: str | None = None) -> Schedule:
        """The schedule the runtime will execute.

        Without a cluster (argument or ``cluster:`` in the config) this is the calls in
        topological order plus the syncs; with one, the full compiler runs (placement,
        memory, offload, timeline) and the runtime executes its offload/onload ops too.
        """
        cluster = cluster if cluster is not None else self.config.cluster
        if cluster is None:
            self.schedule = lower(self.graphs, self.sync_pairs)
        else:
            from flowrl.compiler import compile_schedule

            self.schedule = compile_schedule(
                self.graphs, {n: self.config.model(n) for n in self.modules}, self.sync_pairs,
                cluster=cluster, strategy=strategy or "colocate",
                methods={n: module_methods(m) for n, m in self.modules.items()},
                seed=self.config.runtime_args.seed)
        return self.schedule

    def setup(self) -> None:
        """Build the executor and call every module's ``setup()`` (once)."""
        if self.executor is not None:
            return
        schedule = self.schedule or self.compile()
        self.executor = LocalExecutor(schedule, self.modules)
        self.executor.setup()
        if self.prompts is None:
            raise ConfigError("call engine.set_dataset(prompts) before learn()")
        owner = _first_dataset_module(self.graphs["rollout"], self.modules)
        dataset = owner.build_dataset(self.prompts, False)
        check_dataset(dataset, f"{owner.name}")
        a = self.config.runtime_args
        stream = PromptStream(dataset, a.generation_batch_size, a.seed, shuffle=a.shuffle)
        logger = MetricsLogger(a.output_dir)
        evaluate = self._evaluate if self.evaluator is not None else None
        self.runner = EpisodeRunner(self.executor, self.config, stream, logger, evaluate)

    def learn(self, num_episode: int | None = None) -> list[dict[str, Any]]:
        """Train; returns one metrics row per episode (also in ``output_dir/metrics.jsonl``).

        Under ``flowrl explain`` it only compiles, records the schedule and returns ``[]``.
        """
        request = context.explain_request()
        if request is not None:
            request.schedules.append(self.compile(request.cluster, request.strategy))
            return []
        self.setup()
        try:
            return self.runner.run(num_episode)
        finally:
            self.runner.logger.close()

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.runner.logger.history if self.runner else []

    # ---- evaluation ------------------------------------------------------------------------
    def _evaluate(self, episode: int) -> dict[str, float]:
        ev = self.evaluator
        if ev.prompts is None:
            raise ConfigError("the evaluator has no prompts: call evaluator.set_dataset(prompts)")
        owner = _first_dataset_module(self.graphs["eval"], self.modules)
        dataset = owner.build_dataset(ev.prompts, True)
        check_dataset(dataset, owner.name)
        stream = PromptStream(dataset, self.config.runtime_args.generation_batch_size,
                              seed=0, shuffle=False, drop_last=False)
        n = -(-len(dataset) // stream.batch_size)
        outputs = [self.executor.run("eval", stream.next(), i).output for i in range(n)]
        metrics = (ev.post_process or ev.default_metrics)(outputs)
        return {f"eval/{k}": float(v) for k, v in metrics.items()}
