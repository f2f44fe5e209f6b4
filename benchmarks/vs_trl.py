"""GRPO in flowrl vs TRL's ``GRPOTrainer``, side by side on the same tiny Llama.

    python benchmarks/vs_trl.py            # 30 steps each, ~5 minutes on 2 CPU cores
    python benchmarks/vs_trl.py --quick    # 8 steps each, ~1.5 minutes
    pip install 'flowrl[bench]'            # TRL, the optional benchmark dependency

Both sides train the tiny Llama of ``examples/grpo_hf.yaml`` (written once into the run dir)
on its arithmetic prompts with the same reward function (``examples/rewards.py:score``, one
Python function called by both) and the hyper-parameters of :class:`Settings`; the mapping of
each setting to flowrl's keys and TRL's arguments is printed first. flowrl runs a
``flowrl train`` config through ``flowrl.recipes.build``, twice: the synchronous loop and
``runtime_args.max_staleness=1``.

Each runner is a child process (fresh torch state, the same thread count); they take turns
in blocks of ``--block`` steps, passed a baton from their per-step callbacks, so machine
noise hits all of them alike and no two ever run at once. A step's time runs from the end of
the previous step (or the baton's arrival) to the end of this one: generation, reward,
advantages, the optimizer step and the framework's own bookkeeping. Reported per runner:
seconds per step (median, mean; warm-up steps excluded), CPU seconds per step (the
process's, all threads: less sensitive to other jobs on a shared machine), generated tokens
per second, and the reward over the first and last ``--last-k`` steps.

The settings, both sides' configs and the runner processes live in ``vs_trl_runners.py``;
this file starts the runners, hands out turns and reports.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flowrl.errors import FlowRLError

# the runners live beside this file (loaded by path, not as a package); appended, so no
# benchmark script shadows an installed module
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))
from vs_trl_runners import BenchmarkError, Settings, _child, mapping, write_model  # noqa: E402
# re-exported: tests use them through this module
from vs_trl_runners import (REWARD, Baton, flowrl_config, same_data_and_reward,  # noqa: E402,F401
                            trl_config)

RUNNERS = ("flowrl", "trl", "flowrl_stale1")


def _receive(conn: Any, name: str, run_dir: Path) -> tuple[str, Any]:
    try:
        return conn.recv()
    except EOFError:
        raise BenchmarkError(f"runner '{name}' died; see {run_dir / (name + '.log')}") from None


def _start(name: str, s: Settings, run_dir: Path, threads: int) -> tuple[Any, Any]:
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(name, asdict(s), str(run_dir), theirs, threads),
                       name=f"vs_trl-{name}")
    proc.start()
    theirs.close()  # the parent's copy: a dead child then reads as EOF
    return proc, mine


def run_interleaved(s: Settings, run_dir: Path, runners: tuple[str, ...], block: int,
                    threads: int) -> dict[str, list[dict]]:
    """Every runner's step records; the runners take turns ``block`` steps at a time, the
    order rotating each round, after all have finished their setup. A runner's teardown
    after its last step is waited for before the next turn (it would slow that turn)."""
    started = {name: _start(name, s, run_dir, threads) for name in runners}
    conns = {name: conn for name, (_, conn) in started.items()}
    try:
        threads_seen = {name: _receive(conns[name], name, run_dir)[1] for name in runners}
        wrong = {k: v for k, v in threads_seen.items() if v != threads}
        if wrong:  # "ready" (setup is never timed) says how many threads torch runs
            raise BenchmarkError(f"runners {wrong} run other torch thread counts than {threads}")
        records: dict[str, list[dict]] = {name: [] for name in runners}
        rounds = 0
        while any(len(r) < s.steps for r in records.values()):
            order = runners[rounds % len(runners):] + runners[:rounds % len(runners)]
            for name in order:
                n = min(block, s.steps - len(records[name]))
                if n <= 0:
                    continue
                conns[name].send(n)
                records[name] += [_receive(conns[name], name, run_dir)[1] for _ in range(n)]
                if len(records[name]) == s.steps:
                    _receive(conns[name], name, run_dir)  # "done": torn down
                    started[name][0].join(timeout=120)
            rounds += 1
        return records
    finally:
        for proc, _ in started.values():
            if proc.is_alive():
                proc.kill()  # only our own children, and only after a failure


def summarize(records: list[dict], warmup: int, last_k: int) -> dict[str, float]:
    """Seconds per step (median, mean), CPU seconds per step, generated tokens/s after the
    first ``warmup`` steps; mean reward over the first and the last ``last_k`` steps."""
    timed = records[warmup:] or records
    wall = [r["wall_s"] for r in timed]
    rewards = [r["reward"] for r in records]
    return {"steps": len(records), "timed_steps": len(timed),
            "s_per_step_median": statistics.median(wall), "s_per_step_mean": statistics.fmean(wall),
            "cpu_s_per_step_median": statistics.median(r["cpu_s"] for r in timed),
            "tokens_per_s": sum(r["tokens"] for r in timed) / sum(wall),
            "reward_first": statistics.fmean(rewards[:last_k]),
            "reward_last": statistics.fmean(rewards[-last_k:])}


def ratios(summary: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    """``name`` / TRL for every figure (below 1 is faster for times, above 1 for tokens/s)."""
    keys = ("s_per_step_median", "s_per_step_mean", "cpu_s_per_step_median", "tokens_per_s",
            "reward_last")
    return {k: summary[name][k] / summary["trl"][k] for k in keys}


def print_report(s: Settings, summary: dict[str, dict[str, float]], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=130)
    table = Table(title=f"GRPO, {s.steps} steps each (tiny Llama, {s.completions_per_step} "
                        f"completions/step); {run_dir}")
    cols = ("s_per_step_median", "s_per_step_mean", "cpu_s_per_step_median", "tokens_per_s",
            "reward_first", "reward_last")
    table.add_column("runner")
    for c in cols:
        table.add_column(c.replace("_per_", "/").replace("_", " "), justify="right")
    for name, row in summary.items():
        table.add_row(name, *(f"{row[c]:.3f}" for c in cols))
    for name in summary:
        if name != "trl" and "trl" in summary:
            r = ratios(summary, name)
            table.add_row(f"{name}/trl", *(f"{r[c]:.2f}x" if c in r else "" for c in cols))
    console.print(table)


def print_mapping(s: Settings) -> None:
    """The matched settings, one per line: flowrl's keys, then TRL's arguments."""
    print("matched settings (flowrl | TRL):")
    for setting, ours, theirs in mapping(s):
        print(f"  {setting:<26} {ours}\n  {'':<26} | {theirs}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 steps each (a smoke run)")
    ap.add_argument("--steps", type=int, default=None, help="steps per runner (default 30)")
    ap.add_argument("--block", type=int, default=2, help="steps per turn")
    ap.add_argument("--warmup", type=int, default=2, help="first steps not timed")
    ap.add_argument("--last-k", type=int, default=5, help="steps the end reward averages")
    ap.add_argument("--runners", default=",".join(RUNNERS), help=f"subset of {RUNNERS}")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per runner (a "
                    "tiny model gains nothing from more; on a shared box they spin-wait)")
    ap.add_argument("--out", type=Path, default=None, help="run dir (default: a temp dir)")
    a = ap.parse_args(argv)
    runners = tuple(r for r in a.runners.split(",") if r)
    unknown = [r for r in runners if r not in RUNNERS]
    if unknown:
        raise BenchmarkError(f"--runners: unknown {unknown}; choose from {RUNNERS}")
    if "trl" in runners:
        try:
            import trl  # noqa: F401
        except ImportError:
            raise BenchmarkError("--runners trl: TRL is not installed "
                                 "(pip install 'flowrl[bench]')") from None
    s = Settings(steps=a.steps or (8 if a.quick else 30))
    if s.steps <= a.warmup or a.block < 1:
        raise BenchmarkError(f"--steps {s.steps} must exceed --warmup {a.warmup} and --block "
                             f"{a.block} be at least 1")
    last_k = min(a.last_k, max(1, s.steps // 3))  # the first and last k steps do not overlap
    run_dir = (a.out or Path(tempfile.mkdtemp(prefix="flowrl_vs_trl_"))).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_model(run_dir)
    print_mapping(s)
    t0 = time.perf_counter()
    records = run_interleaved(s, run_dir, runners, a.block, a.threads)
    summary = {name: summarize(r, a.warmup, last_k) for name, r in records.items()}
    result = {"settings": asdict(s), "block": a.block, "warmup": a.warmup, "last_k": last_k,
              "threads": a.threads, "summary": summary,
              "records": records, "wall_s": time.perf_counter() - t0}
    (run_dir / "results.json").write_text(json.dumps(result, indent=1))
    print_report(s, summary, run_dir)
    return result


if __name__ == "__main__":
    try:
        main()
    except FlowRLError as e:
        sys.exit(f"error: {e}")
