"""The ``flowrl`` command line.

    flowrl explain SCRIPT.py [--cluster C] [--strategy S] [--format text|json|trace]
                             [--output PATH] [--plot PNG] [SCRIPT ARGS, e.g. -c FILE]
    flowrl explain CONFIG.yaml [same options]
    flowrl bench placement          (reserved; not implemented yet)

``explain`` on a script runs it with ``learn()`` switched to compile-only (nothing trains,
no weights are needed by the compiler) and prints the recorded schedules. On a YAML config it
plans the built-in PPO flows (``RLHFEngine``) for the six models of its ``models:`` section
with placeholder modules that are never set up.
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

    The placeholders implement ``forward_step`` (and ``train_step`` for the two trainers)
    only so the flows can be traced; calling them raises.
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


def _explain_script(path: str, extra: list[str], cluster: str | None,
                    strategy: str | None) -> list[Any]:
    from flowrl.context import ExplainRequest, set_explain

    request = ExplainRequest(cluster, strategy)
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [path, *extra]
    sys.path.insert(0, str(Path(path).resolve().parent))
    set_explain(request)
    try:
        # The script's own prints go to stderr so stdout holds only the report (e.g. JSON).
        with contextlib.redirect_stdout(sys.stderr):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0) and not request.schedules:
            raise FlowRLError(f"{path} exited with status {e.code} before calling learn()")
    except Exception as e:
        # learn() returned [] under explain; code after it may trip over that. Keep what
        # was compiled and say what happened.
        if not request.schedules:
            raise
        print(f"note: {path} raised {type(e).__name__}: {e} after learn() returned "
              f"(under explain learn() only compiles)", file=sys.stderr)
    finally:
        set_explain(None)
        sys.argv, sys.path[:] = old_argv, old_path
    if not request.schedules:
        raise FlowRLError(f"{path} never called engine.learn(), so there is nothing to explain")
    return request.schedules


def _explain_config(path: str, cluster: str | None, strategy: str | None) -> list[Any]:
    engine = ppo_engine_from_config(path)
    cluster = cluster or engine.config.cluster
    if cluster is None:
        raise FlowRLError(f"{path} has no 'cluster:'; pass --cluster (e.g. 8xH100-80GB)")
    return [engine.compile(cluster, strategy)]


def _numbered(path: str, i: int, n: int) -> str:
    if n == 1:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}_{i + 1}{ext}"


def _explain(args: argparse.Namespace, extra: list[str]) -> int:
    target = args.target
    if not os.path.isfile(target):
        print(f"error: no such file: {target}", file=sys.stderr)
        return 2
    try:
        if target.endswith((".yaml", ".yml")):
            if extra:
                print(f"error: unexpected arguments for a config: {' '.join(extra)}",
                      file=sys.stderr)
                return 2
            schedules = _explain_config(target, args.cluster, args.strategy)
        else:
            schedules = _explain_script(target, extra, args.cluster, args.strategy)
    except FlowRLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    n = len(schedules)
    if args.format == "json":
        doc = {"schema": "flowrl.explain/1", "source": target,
               "schedules": [s.to_json() for s in schedules]}
        text = json.dumps(doc, indent=2)
        if args.output:
            Path(args.output).write_text(text + "\n")
            print(f"wrote {args.output}")
        else:
            print(text)
    elif args.format == "trace":
        out = args.output or "flowrl_trace.json"
        for i, s in enumerate(schedules):
            if not s.placement:
                print("error: no cluster, so no timeline: pass --cluster", file=sys.stderr)
                return 1
            print(f"wrote {s.to_chrome_trace(_numbered(out, i, n))} (open in ui.perfetto.dev "
                  f"or chrome://tracing)")
    else:
        for i, s in enumerate(schedules):
            if n > 1:
                print(f"=== schedule {i + 1} of {n} ===")
            print(s.explain(), end="")
            if not s.placement:
                print("(no cluster given: calls in topological order only; pass --cluster)")
    if args.plot:
        for i, s in enumerate(schedules):
            if s.placement:
                print(f"wrote {s.plot_memory(_numbered(args.plot, i, n))}", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowrl", description="flowrl command line")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("explain", help="compile a script or config and show the schedule",
                       description="Compile without training and print the schedule. "
                                   "Unknown arguments (e.g. -c FILE) are passed to the script.")
    e.add_argument("target", help="a Python script that calls engine.learn(), or a YAML config")
    e.add_argument("--cluster", help="e.g. 8xH100-80GB, 2x8xA100-40GB, local, local:4 "
                                     "(default: the config's cluster:)")
    e.add_argument("--strategy", choices=("colocate", "disaggregate", "manual", "search"),
                   help="placement strategy (default colocate)")
    e.add_argument("--format", choices=("text", "json", "trace"), default="text")
    e.add_argument("--output", "-o", help="file for json/trace output (trace default: "
                                          "flowrl_trace.json)")
    e.add_argument("--plot", metavar="PNG", help="also plot per-device memory to this PNG")
    b = sub.add_parser("bench", help="benchmarks (reserved)")
    b.add_argument("what", nargs="?", default="placement")
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
        print(f"flowrl bench {args.what}: not implemented yet (reserved for a later issue). "
              f"For compile time see benchmarks/compile_time.py.", file=sys.stderr)
        return 2
    return _explain(args, extra + passthrough)


if __name__ == "__main__":
    sys.exit(main())
