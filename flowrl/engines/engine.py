"""``Engine``: a rollout flow, a train flow and parameter-sync pairs, run episode by episode.

The engine is the single controller: it traces the flows, checks them against the config,
lowers/compiles them into a :class:`~flowrl.compiler.ir.Schedule` and hands that to an
executor, which only executes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

from flowrl import context
from flowrl.algorithms.settings import DynamicSamplingSettings
from flowrl.config import FlowRLConfig
from flowrl.compiler.lower import lower
from flowrl.dsl.flow import Flow
from flowrl.engines.callbacks import TrainingControl, as_callback, run_hook
from flowrl.engines.engine_checks import (check_dp, check_methods, check_trainers,
                                          check_unused_sections, sync_pairs)
from flowrl.engines.evaluator import Evaluator  # noqa: F401 (also imported from here)
from flowrl.errors import ConfigError, FlowRLError, FlowTypeError
from flowrl.ir import FlowGraph, Schedule, parse_cluster
from flowrl.models.base import BaseModule, flow_methods
from flowrl.runtime.checkpoint import CheckpointManager
from flowrl.runtime.data import PromptStream, check_dataset, check_prompts
from flowrl.runtime.dynamic_sampling import as_settings, check_settings
from flowrl.runtime.episodes import EpisodeRunner
from flowrl.runtime.protocol import Executor, write_op_profile
from flowrl.runtime.factory import make_executor
from flowrl.runtime.metrics import MetricsLogger
from flowrl.runtime.rundir import describe_run_dirs, resolve_run_dirs


class EngineFailedError(FlowRLError):
    """A ``learn()`` failed; the engine continues only through ``learn(resume=True)``."""


#: Called with each engine as its ``learn()`` starts, before anything is set up or run.
#: An extension point for tools that observe training: ``flowrl explain`` captures the
#: engines a script builds here (and stops the script). Add one with :func:`observe_learn`.
_LEARN_OBSERVERS: list[Callable[["Engine"], None]] = []


@contextlib.contextmanager
def observe_learn(observer: Callable[["Engine"], None]) -> Iterator[None]:
    """Within the ``with`` block, call ``observer(engine)`` whenever an engine's ``learn()``
    starts. The observer may raise (a ``BaseException`` subclass stops the caller's script
    without passing through its ``except Exception`` handlers); it must not train."""
    _LEARN_OBSERVERS.append(observer)
    try:
        yield
    finally:
        _LEARN_OBSERVERS.remove(observer)


def _first_dataset_module(graph: FlowGraph, modules: dict[str, BaseModule],
                          fallback: FlowGraph | None = None) -> BaseModule:
    """The first model reading the flow's input that implements ``build_dataset``; else the
    same in ``fallback`` (the train flow: offline DPO's policy builds the preference data)."""
    for g in (graph, fallback):
        for call in (g.entry_calls() if g is not None else []):
            m = modules[call.model]
            if type(m).build_dataset is not BaseModule.build_dataset:
                return m
    first = graph.entry_calls()[0].model if graph.entry_calls() else graph.calls()[0].model
    raise FlowRLError(
        f"flow '{graph.name}': its first model '{first}' must implement "
        f"build_dataset(prompts, is_eval) to turn prompts into a Dataset")


def module_capabilities(module: BaseModule) -> dict[str, bool]:
    """What ``module`` declares to the planner (``compile_schedule(capabilities=)``): the
    parallel dimensions its class runs (``tp``, ``pp``) and ``continuous_batching``, whether
    its generator batches continuously (:attr:`BaseModule.generation_batching`)."""
    caps = dict(getattr(type(module), "parallelism", {}))
    batching = getattr(module, "generation_batching", "static")
    caps["continuous_batching"] = batching == "continuous"
    return caps


class Engine:
    """Rollout flow + train flow + ``sync={trainer: inference_model}``.

    >>> engine = Engine(rollout, train, sync={ppo_policy: policy, ppo_value: value})
    >>> engine.set_dataset(prompts); engine.learn()

    ``sync`` may be empty (offline DPO trains the only copy of the policy). ``config``
    defaults to the last ``flowrl.init()``. The engine owns its modules: the ones its flows
    call (each flow finds them itself; the sync modules are handed to the trace too), each
    bound to its section of ``config`` here. Two modules with one ``model_name`` are a
    :class:`ConfigError`. ``dynamic_sampling`` (``AlgorithmSettings.dynamic_sampling``, or
    :meth:`set_dynamic_sampling`): DAPO's drop-and-refill of groups whose ``score`` does not
    vary (:mod:`flowrl.runtime.dynamic_sampling`); default off.
    """

    def __init__(self, rollout: Flow, train: Flow,
                 sync: dict[BaseModule, BaseModule] | None = None, name: str = "engine",
                 config: FlowRLConfig | None = None,
                 dynamic_sampling: DynamicSamplingSettings | None = None) -> None:
        for role, f in (("rollout", rollout), ("train", train)):
            if not isinstance(f, Flow):
                raise FlowTypeError(f"{role} must be a @flow function, got {type(f).__name__}")
        self.name = name
        self.config = config if config is not None else context.get_args()
        self.flows: dict[str, Flow] = {"rollout": rollout, "train": train}
        self.graphs: dict[str, FlowGraph] = {}
        self.modules: dict[str, BaseModule] = {}
        known = [m for pair in (sync or {}).items() for m in pair if isinstance(m, BaseModule)] \
            if isinstance(sync, dict) else []
        for role, f in self.flows.items():
            self._add_flow(role, f, known)
        check_trainers(self.graphs["train"], self.config)
        self.sync_pairs = sync_pairs(sync or {}, self.graphs["train"], self.modules)
        self.prompts: list | None = None
        self.evaluator: Evaluator | None = None
        self.executor: Executor | None = None
        # 1-based episode a learn() stopped in (any exception or Ctrl-C); None: healthy
        self._failed_at: int | None = None
        self.runner: EpisodeRunner | None = None
        self.schedule: Schedule | None = None
        self._eval_dataset: Any = None
        self.callbacks: list[Any] = []  # see flowrl/engines/callbacks.py
        #: set ``control.should_training_stop`` (from a callback) to end learn() early
        self.control = TrainingControl()
        self.dynamic_sampling = DynamicSamplingSettings()
        self.set_dynamic_sampling(dynamic_sampling)

    # ---- construction checks ---------------------------------------------------------------
    def _add_flow(self, role: str, f: Flow, known: list[BaseModule] = ()) -> None:
        """Trace ``f``, then take over (and bind) the modules it calls."""
        graph, called = f.capture(known)
        for name, module in called.items():
            other = self.modules.get(name)
            if other is not None and other is not module:
                raise ConfigError(
                    f"model_name '{name}' is already used by a {type(other).__name__}; every "
                    f"module needs a unique model_name (its config section is keyed by it)")
        for name, module in called.items():
            module.bind(self.config)  # a missing section is an error now, not mid-run
            self.modules[name] = module
        self.graphs[role] = graph
        check_methods(graph, self.modules)

    # ---- the user's API ----------------------------------------------------------------------
    def set_dataset(self, prompts: list) -> "Engine":
        """Prompts handed to the first model's ``build_dataset(prompts, is_eval=False)``."""
        self.prompts = check_prompts(prompts, "set_dataset")
        return self

    def set_dynamic_sampling(self, settings: DynamicSamplingSettings | dict | None
                             ) -> "Engine":
        """DAPO's dynamic sampling for later episodes (``None``: off); checked against the
        runtime args now (a ConfigError names the fields)."""
        if self.executor is not None:
            raise ConfigError("set_dynamic_sampling must be called before learn() (the episode "
                              "loop reads it when it is built)")
        checked = as_settings(settings)
        check_settings(checked, self.config.runtime_args)
        self.dynamic_sampling = checked
        return self

    def set_evaluator(self, evaluator: Evaluator) -> "Engine":
        """Run ``evaluator`` every ``runtime_args.eval_episode_interval`` episodes."""
        if self.executor is not None:
            raise ConfigError("set_evaluator must be called before learn() (the eval flow is "
                              "compiled with the others)")
        self.evaluator = evaluator
        self.schedule = None  # recompile with the eval flow
        self._add_flow("eval", evaluator.flow)
        return self

    def compile(self, cluster: Any = None, strategy: str | None = None) -> Schedule:
        """The schedule the runtime will execute.

        Without a cluster (argument or ``cluster:`` in the config) this is the calls in
        topological order plus the syncs; with one, the full compiler runs (placement,
        memory, offload, timeline) and the runtime executes its offload/onload ops too.
        """
        cluster = cluster if cluster is not None else self.config.cluster
        if cluster is None:
            self.schedule = lower(self.graphs, self.sync_pairs,
                                  {n: self.config.model(n) for n in self.modules},
                                  runtime_args=self.config.runtime_args,
                                  methods={n: flow_methods(type(m))
                                           for n, m in self.modules.items()})
        else:
            from flowrl.compiler import compile_schedule

            # the cluster is estimated for the runtime that will run it (per-call costs)
            spec = parse_cluster(cluster).model_copy(update={"runtime": self.config.runtime})
            self.schedule = compile_schedule(
                self.graphs, {n: self.config.model(n) for n in self.modules}, self.sync_pairs,
                cluster=spec, strategy=strategy or "colocate",
                methods={n: flow_methods(type(m)) for n, m in self.modules.items()},
                seed=self.config.runtime_args.seed, runtime_args=self.config.runtime_args,
                capabilities={n: module_capabilities(m) for n, m in self.modules.items()})
            for c in self.graphs["train"].calls():  # the compiled mesh may pick another dp
                mesh = (self.schedule.placement or {}).get(c.model) if c.is_train else None
                dp = mesh.get("dp") if isinstance(mesh, dict) else getattr(mesh, "dp", None)
                if dp:
                    check_dp(c.model, dp, "the compiled data-parallel size",
                             self.config.runtime_args)
        return self.schedule

    def setup(self, resume: bool = False) -> None:
        """Build the executor and call every module's ``setup()`` (once)."""
        if self.executor is not None:
            return
        check_unused_sections(self.config, self.modules)
        if self.prompts is None:
            raise ConfigError("call engine.set_dataset(prompts) before learn()")
        a = self.config.runtime_args
        resolve_run_dirs(a, resume)  # refuse another run's directory, check writability
        schedule = self.schedule or self.compile()
        executor = make_executor(schedule, self.modules, self.config)
        try:
            executor.setup()
            executor.check_sync_pairs(self.sync_pairs)
        except BaseException:
            executor.shutdown()
            raise
        self.executor = executor
        owner = _first_dataset_module(self.graphs["rollout"], self.modules, self.graphs["train"])
        dataset = self.executor.build_dataset(owner.name, self.prompts, False)
        check_dataset(dataset, f"{owner.name}")
        # A prompt batch holds generation_batch_size / n prompts; the loop repeats each n times.
        stream = PromptStream(dataset, a.generation_batch_size // a.num_inference_per_prompt,
                              a.seed, shuffle=a.shuffle)
        run_config = self.config.model_dump(mode="json") if a.wandb is not None else None
        logger = MetricsLogger(a.output_dir, tensorboard=a.tensorboard, wandb=a.wandb,
                               run_config=run_config, resume=resume)
        logger.console.print(logger.describe_outputs(describe_run_dirs(a, logger.tb_dir)),
                             highlight=False, soft_wrap=True)
        evaluate = self._evaluate if self.evaluator is not None else None
        root = a.checkpoint_root
        checkpoints = CheckpointManager(root, a.keep_last_checkpoints, logger.console) \
            if root else None
        self.runner = EpisodeRunner(self.executor, self.config, stream, logger, evaluate,
                                    modules=self.modules, checkpoints=checkpoints,
                                    dynamic_sampling=self.dynamic_sampling)

    def add_callback(self, callback: Any) -> "Engine":
        """Call ``callback`` in every later ``learn()``: a
        :class:`~flowrl.engines.callbacks.Callback` (or any object with some of its hooks), or
        a function ``fn(engine, episode, metrics)`` run after each episode."""
        self.callbacks.append(as_callback(callback))
        return self

    def learn(self, num_episode: int | None = None, resume: bool | None = None,
              callbacks: list[Any] | None = None) -> list[dict[str, Any]]:
        """Train; returns one metrics row per episode (also in ``output_dir/metrics.jsonl``).

        ``callbacks`` (besides those of :meth:`add_callback`) run in this ``learn()`` only; a
        callback may end it early with ``engine.control.should_training_stop = True``.

        ``resume`` (default ``runtime_args.resume``): first load the newest good checkpoint
        and continue from its episode (only when this engine has not trained yet). After a
        failed ``learn()`` (any exception or Ctrl-C) only ``learn(resume=True)`` continues:
        it restarts the executor and modules and reloads the newest good checkpoint. The
        observers of :func:`observe_learn` see the engine first.
        """
        for observer in tuple(_LEARN_OBSERVERS):
            observer(self)
        active = self.callbacks + [as_callback(c) for c in callbacks or []]
        resume = self.config.runtime_args.resume if resume is None else resume
        failed_at = self._failed_at
        if failed_at is not None:
            if not resume:
                raise EngineFailedError(
                    f"engine '{self.name}': the previous learn() failed at episode {failed_at} "
                    f"and the modules hold a half-applied episode; call learn(resume=True) to "
                    f"continue from the newest checkpoint")
            self._restart()
        self.setup(resume)
        try:
            if resume and self.runner.episode == 0 and not self.runner.logger.history:
                self._resume(failed_at)
            self._hook_callbacks(active)
            run_hook(active, "on_train_begin", self, self.runner.episode + 1)
            rows = self.runner.run(num_episode)
            run_hook(active, "on_train_end", self, self.runner.episode, rows)
            return rows
        except BaseException:  # Ctrl-C too: the episode (or the resume) is half applied
            if self._failed_at is None:
                self._failed_at = self.runner.episode + 1
            raise
        finally:
            self.runner.logger.close()
            self._write_profiles()

    def _hook_callbacks(self, active: list[Any]) -> None:
        """Point the episode loop's hooks at ``active`` (and clear a previous stop)."""
        self.control.should_training_stop = False
        runner = self.runner

        def train_step(step: int, metrics: dict[str, float]) -> None:
            run_hook(active, "on_train_step", self, runner.episode + 1, step, metrics)

        def episode_end(episode: int, row: dict[str, Any]) -> bool:
            run_hook(active, "on_episode_end", self, episode, episode, dict(row))
            return self.control.should_training_stop

        runner.on_train_step = train_step if active else None
        runner.on_episode_end = episode_end if active else None

    def _resume(self, failed_at: int | None) -> None:
        if self.runner.resume() is None and failed_at is not None:
            self._failed_at = failed_at
            raise EngineFailedError(
                f"engine '{self.name}': the previous learn() failed at episode {failed_at} "
                f"and there is no checkpoint to resume from (runtime_args."
                f"save_episode_interval={self.config.runtime_args.save_episode_interval}); "
                f"its weights and metrics are half-trained, so it will not pretend to start "
                f"fresh: build a new engine (flowrl.init + modules) to start over")

    def _restart(self) -> None:
        """Drop the failed executor and every module's state; the checkpoint restores it."""
        self.shutdown()
        for m in self.modules.values():
            m.reset()
        context.seed_everything(self.config.runtime_args.seed)  # as a fresh process would
        self.runner, self._eval_dataset, self._failed_at = None, None, None

    def _write_profiles(self) -> None:
        out_dir = self.config.runtime_args.output_dir  # this run's own directory
        if out_dir:
            write_op_profile(self.executor.records, Path(out_dir) / "op_profile.jsonl")
            if self.executor.schedule.placement:  # compiled: where the times were measured
                from flowrl.compiler.profile import write_schedule

                write_schedule(self.executor.schedule, out_dir)
            self.executor.write_trace(Path(out_dir) / "runtime_trace.json")

    def shutdown(self) -> None:
        """Release the executor's processes (Ray actors and placement groups)."""
        if self.executor is not None:
            self.executor.shutdown()  # Ray: each worker's modules shut down with their process
        else:
            for m in self.modules.values():
                m.shutdown()
        self.executor = None

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.runner.logger.history if self.runner else []

    # ---- evaluation ------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Run the evaluator now (setting the engine up if needed); returns its metrics."""
        if self.evaluator is None:
            raise ConfigError("no evaluator: call engine.set_evaluator(Evaluator(flow)) first")
        self.setup()
        return self.runner.run_eval(self.runner.episode)

    def _evaluate(self, episode: int) -> dict[str, float]:
        ev = self.evaluator
        if ev.prompts is None:
            raise ConfigError("the evaluator has no prompts: call evaluator.set_dataset(prompts)")
        if self._eval_dataset is None:  # built once, on first use
            owner = _first_dataset_module(self.graphs["eval"], self.modules)
            self._eval_dataset = self.executor.build_dataset(owner.name, ev.prompts, True)
            check_dataset(self._eval_dataset, owner.name)
        a = self.config.runtime_args
        size = ev.batch_size or a.eval_batch_size or a.generation_batch_size
        stream = PromptStream(self._eval_dataset, size, seed=0, shuffle=False, drop_last=False)
        batches = [stream.next() for _ in range(-(-len(self._eval_dataset) // size))]
        return ev.evaluate(batches, lambda b, i: self.executor.run("eval", b, i))
