"""The ``flowrl`` command line.

    flowrl explain SCRIPT.py [--cluster C] [--strategy S] [--format text|json|trace]
                             [--output PATH] [--plot PNG] [SCRIPT ARGS, e.g. -c FILE]
    flowrl explain CONFIG.yaml [same options]
    flowrl explain TARGET --profile RUN_DIR     (measured op costs instead of the cost model)
    flowrl bench placement [--quick] [--out DIR]   (benchmarks/placement.py)
    flowrl train CONFIG.yaml [key=value ...]    (an algorithm by name: flowrl.recipes)

``explain`` on a script runs it until its first ``engine.learn()``: an observer of
``learn()`` (:func:`flowrl.engines.engine.observe_learn`) captures that engine and stops the
script before anything is set up or trained, and the engine is compiled (no weights are
needed by the compiler). On a ``flowrl train`` config (one with an ``algorithm:`` section)
it plans the recipe's engine (built-in modules, never set up: no weights are read) and takes
``key=value`` overrides as ``train`` does. On another YAML config it plans the built-in PPO
flows (``RLHFEngine``) for the six models of its ``models:`` section with placeholder modules
that are never set up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any

from flowrl.errors import FlowRLError

#: RLHFEngine's arguments, in order; a config's six ``models:`` sections map onto them by
#: these names, or else by their order in the file.
PPO_ROLES = ("policy", "reference", "reward", "value", "ppo_policy", "ppo_value")
TRAINERS = ("ppo_policy", "ppo_value")


def ppo_engine_from_config(config: str | Path | dict) -> Any:
    """An ``RLHFEngine`` over placeholder modules named after the config's six models.

    The placeholders implement ``forward_step`` (and ``train_step`` and ``proximal_logprobs``
    for the two trainers) only so the flows can be traced; calling them raises.
    """
    import flowrl
    from flowrl.models.base import BaseModule

    class PlanModule(BaseModule):
        """Stands in for a model in a plan; it is never set up or run."""

        def forward_step(self, data, iteration=0):
            raise FlowRLError(f"'{self.name}' is a planning placeholder and cannot run")

    class PlanTrainer(PlanModule):
        def train_step(self, data, iteration):
            raise FlowRLError(f"'{self.name}' is a planning placeholder and cannot run")

        def proximal_logprobs(self, data, iteration=0):  # planned for correction: decoupled
            raise FlowRLError(f"'{self.name}' is a planning placeholder and cannot run")

    cfg = flowrl.init(config)
    names = list(cfg.models)
    if set(PPO_ROLES) <= set(names):
        names = list(PPO_ROLES)
    elif len(names) != len(PPO_ROLES):
        raise FlowRLError(
            f"{cfg.source or 'config'}: planning the PPO flow needs six sections under "
            f"'models:' ({', '.join(PPO_ROLES)}), found {len(names)}: {', '.join(names)}")
    modules = [(PlanTrainer if role in TRAINERS else PlanModule)(name)
               for role, name in zip(PPO_ROLES, names)]
    return flowrl.RLHFEngine(*modules)


class _LearnCalled(BaseException):
    """Raised by explain's observer at a script's first ``learn()``: stops the script
    (a ``BaseException``, so the script's ``except Exception`` handlers let it through)."""

    def __init__(self, engine: Any) -> None:
        super().__init__("flowrl explain: engine captured at learn()")
        self.engine = engine


def _stop_at_learn(engine: Any) -> None:
    raise _LearnCalled(engine)


def _learn_site(path: str, tb: Any) -> str:
    """``file:line`` of the script's frame that called ``learn()`` (from the traceback)."""
    site = path
    for frame, line in traceback.walk_tb(tb):
        if os.path.abspath(frame.f_code.co_filename) == os.path.abspath(path):
            site = f"{path}:{line}"
    return site


def _explain_script(path: str, extra: list[str]) -> Any:
    """Run the script up to its first ``engine.learn()``; returns that engine."""
    from flowrl.engines.engine import observe_learn

    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [path, *extra]
    sys.path.insert(0, str(Path(path).resolve().parent))
    try:
        # The script's own prints go to stderr so stdout holds only the report (e.g. JSON).
        with observe_learn(_stop_at_learn), contextlib.redirect_stdout(sys.stderr):
            runpy.run_path(path, run_name="__main__")
    except _LearnCalled as stop:
        site = _learn_site(path, stop.__traceback__)
        print(f"note: explain stopped {path} at engine.learn() ({site}); the code that would "
              f"run after learn() returned was skipped", file=sys.stderr)
        return stop.engine
    except SystemExit as e:
        if e.code not in (None, 0):
            raise FlowRLError(f"{path} exited with status {e.code} before calling learn()")
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
    raise FlowRLError(f"{path} never called engine.learn(), so there is nothing to explain")


def _config_engine(path: str, cluster: str | None, extra: list[str]) -> tuple[Any, Any]:
    """The engine planned from a YAML config, and the cluster to plan it on: a train
    config's recipe (no cluster needed: calls in order), else the PPO placeholder flows."""
    from flowrl import recipes

    if recipes.is_train_config(path):
        engine = recipes.plan(path, extra)
        return engine, cluster or engine.config.cluster
    if extra:
        raise FlowRLError(f"unexpected arguments for a config: {' '.join(extra)}")
    engine = ppo_engine_from_config(path)
    cluster = cluster or engine.config.cluster
    if cluster is None:
        raise FlowRLError(f"{path} has no 'cluster:'; pass --cluster (e.g. 8xH100-80GB)")
    return engine, cluster


def _load_profile(run_dir: str, cluster: Any, strategy: str | None) -> tuple[Any, Any, Any]:
    """The profile of ``run_dir``; cluster and strategy default to the run's own (from its
    ``schedule.json``) when not given."""
    from flowrl.compiler.placement import strategy_names
    from flowrl.compiler.profile import load_profile

    profile = load_profile(run_dir)
    ran = profile.schedule
    if ran is not None and ran.cluster is not None:
        if cluster is None:
            cluster = ran.cluster
        if strategy is None and ran.strategy in strategy_names():
            strategy = ran.strategy
    return cluster, strategy, profile


def _apply_profile(engine: Any, schedule: Any, profile: Any) -> Any:
    """Recompile ``schedule`` with the profile's measured op costs (the engine's config
    supplies the model sections and runtime_args)."""
    from flowrl.compiler.profile import profile_guided

    cfg = engine.config
    models = {m: cfg.model(m) for g in schedule.graphs.values() for m in g.models()}
    return profile_guided(schedule, models, profile, runtime_args=cfg.runtime_args,
                          seed=cfg.runtime_args.seed)


def _numbered(path: str, i: int, n: int) -> str:
    if n == 1:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}_{i + 1}{ext}"


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user can get wrong (a bad config, YAML, a missing file): reported as
    ``error: <message>`` with exit status 1, never with a traceback (a missing target or
    stray arguments, usage errors, exit with 2 as argparse's do)."""
    import yaml

    return (FlowRLError, yaml.YAMLError, OSError)


def _plan(args: argparse.Namespace, extra: list[str]) -> tuple[list[Any], list[Any]]:
    """Compile the target: (schedules, profile results)."""
    target = args.target
    cluster, strategy, profile = args.cluster, args.strategy, None
    if args.profile:
        cluster, strategy, profile = _load_profile(args.profile, cluster, strategy)
    if target.endswith((".yaml", ".yml")):
        engine, cluster = _config_engine(target, cluster, extra)
    else:
        engine = _explain_script(target, extra)
    schedule = engine.compile(cluster, strategy)
    if profile is None:
        return [schedule], []
    result = _apply_profile(engine, schedule, profile)
    return [result.guided], [result]


def _print_profiles(profiles: list[Any], fmt: str) -> None:
    from flowrl.report.profile import profile_report

    # The comparison goes to stdout in text mode; with --format trace, to stderr.
    out = sys.stdout if fmt == "text" else sys.stderr
    n = len(profiles)
    for i, r in enumerate(profiles):
        if n > 1:
            print(f"=== profile of schedule {i + 1} of {n} ===", file=out)
        print(profile_report(r), file=out)
    if fmt == "text":
        print("=== profile-guided schedule ===")


def _write_json(args: argparse.Namespace, schedules: list[Any], profiles: list[Any]) -> None:
    doc = {"schema": "flowrl.explain/1", "source": args.target,
           "schedules": [s.to_json() for s in schedules]}
    if profiles:
        from flowrl.report.profile import profile_report_json

        doc["profiles"] = [profile_report_json(r) for r in profiles]
    text = json.dumps(doc, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(f"wrote {args.output}")
    else:
        print(text)


def _render(args: argparse.Namespace, schedules: list[Any], profiles: list[Any]) -> int:
    from flowrl.report.plot import plot_memory
    from flowrl.report.text import explain_text
    from flowrl.report.trace import write_chrome_trace

    n = len(schedules)
    if profiles and args.format != "json":
        _print_profiles(profiles, args.format)
    if args.format == "json":
        _write_json(args, schedules, profiles)
    elif args.format == "trace":
        out = args.output or "flowrl_trace.json"
        for i, s in enumerate(schedules):
            if not s.placement:
                print("error: no cluster, so no timeline: pass --cluster", file=sys.stderr)
                return 2
            print(f"wrote {write_chrome_trace(s, _numbered(out, i, n))} (open in "
                  f"ui.perfetto.dev or chrome://tracing)")
    else:
        for i, s in enumerate(schedules):
            if n > 1:
                print(f"=== schedule {i + 1} of {n} ===")
            print(explain_text(s), end="")
            if not s.placement:
                print("(no cluster given: calls in topological order only; pass --cluster)")
    if args.plot:
        for i, s in enumerate(schedules):
            if s.placement:
                print(f"wrote {plot_memory(s, _numbered(args.plot, i, n))}", file=sys.stderr)
    return 0


def _explain(args: argparse.Namespace, extra: list[str]) -> int:
    if not os.path.isfile(args.target):
        print(f"error: no such file: {args.target}", file=sys.stderr)
        return 2
    try:
        schedules, profiles = _plan(args, extra)
        return _render(args, schedules, profiles)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception:  # a bug in flowrl or in the user's script: keep the traceback
        traceback.print_exc()
        return 1


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    """``flowrl train CONFIG [key=value ...]``: 0 when training finished, 1 on a user error
    (the message, no traceback), 2 on a usage error."""
    from flowrl import recipes

    if not os.path.isfile(args.config):
        print(f"error: no such file: {args.config}", file=sys.stderr)
        return 2
    flags = [a for a in extra if a.startswith("-")]
    if flags:
        print(f"error: unknown option(s) {' '.join(flags)}; flowrl train takes CONFIG.yaml "
              f"and key=value overrides", file=sys.stderr)
        return 2
    try:
        if not recipes.is_train_config(args.config):
            raise FlowRLError(f"{args.config} has no 'algorithm:' section, so it is not a "
                              f"flowrl train config (e.g. algorithm: {{name: grpo}}; known: "
                              f"{', '.join(recipes.ALGORITHMS)})")
        engine = recipes.train(args.config, [*args.overrides, *extra])
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(recipes.summary(engine))
    return 0


#: ``flowrl bench NAME`` runs ``benchmarks/NAME.py``'s ``main(argv)``.
BENCHMARKS = ("placement",)


def _bench(what: str, argv: list[str]) -> int:
    """Load ``benchmarks/<what>.py`` from the source tree next to the package and run it."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{what}.py"
    if not path.is_file():
        print(f"error: flowrl bench {what} needs the source tree (benchmarks/{what}.py next to "
              f"the flowrl package; install with 'pip install -e .')", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(f"flowrl_bench_{what}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    try:
        return int(module.main(argv) or 0)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    from flowrl.compiler.placement import strategy_names

    p = argparse.ArgumentParser(prog="flowrl", description="flowrl command line")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("explain", help="compile a script or config and show the schedule",
                       description="Compile without training and print the schedule. "
                                   "Unknown arguments (e.g. -c FILE) are passed to the script.")
    e.add_argument("target", help="a Python script that calls engine.learn(), or a YAML config")
    e.add_argument("--cluster", help="e.g. 8xH100-80GB, 2x8xA100-40GB, local, local:4 "
                                     "(default: the config's cluster:)")
    e.add_argument("--strategy", choices=strategy_names(),
                   help="placement strategy (default colocate)")
    e.add_argument("--format", choices=("text", "json", "trace"), default="text")
    e.add_argument("--output", "-o", help="file for json/trace output (trace default: "
                                          "flowrl_trace.json)")
    e.add_argument("--plot", metavar="PNG", help="also plot per-device memory to this PNG")
    e.add_argument("--profile", metavar="RUN_DIR",
                   help="recompile with the op times a run measured (RUN_DIR/op_profile.jsonl, "
                        "written by learn() when output_dir is set) instead of the analytic "
                        "cost model, and show predicted vs measured per op; cluster and "
                        "strategy default to the run's (RUN_DIR/schedule.json)")
    t = sub.add_parser("train", help="train an algorithm by name from a YAML config",
                       description="Train with a flowrl train config (algorithm:, model:, "
                                   "data:, reward:); key=value overrides use dotted keys, e.g. "
                                   "algorithm.kl.coef=0.01 runtime_args.num_episode=3.")
    t.add_argument("config", help="a YAML config with an algorithm: section")
    t.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted-key overrides, values read as YAML")
    b = sub.add_parser("bench", help="benchmarks: 'placement' compares placement strategies",
                       description="Run a benchmark from the source tree's benchmarks/ "
                                   "directory; other arguments go to it (see "
                                   "'flowrl bench placement --help').", add_help=False)
    b.add_argument("what", nargs="?", default="placement", choices=BENCHMARKS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``flowrl`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" in argv:  # everything after -- goes to the script untouched
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1:]
    else:
        passthrough = []
    args, extra = _parser().parse_known_args(argv)
    if args.command == "bench":
        return _bench(args.what, extra + passthrough)
    if args.command == "train":
        return _train(args, extra + passthrough)
    return _explain(args, extra + passthrough)


if __name__ == "__main__":
    sys.exit(main())
