"""Run directories: one run's metrics, TensorBoard events, op profile and checkpoints never
mix with another's.

A new (non-resume) run refuses an ``output_dir`` (or ``checkpoint_dir``) that already holds
``metrics.jsonl`` or checkpoints, unless ``runtime_args.new_run_dir`` is on: then every run
writes into ``output_dir/run-<N>`` (``checkpoint_dir/run-<N>`` too when that is set), with
``N`` one more than the highest existing ``run-<N>`` (``run-1`` first), and a resumed run
continues the highest one. Directories are created and checked for writability at start.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from flowrl.config import RuntimeArgs
from flowrl.errors import FlowRLError

_RUN = re.compile(r"^run-(\d+)$")


class RunDirError(FlowRLError):
    """An output or checkpoint directory is unusable (another run's files, not writable)."""


def _runs(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    return sorted(int(m.group(1)) for p in base.iterdir()
                  if p.is_dir() and (m := _RUN.match(p.name)))


def holds_a_run(output_dir: str | None, checkpoint_root: str | None) -> list[str]:
    """What in these directories belongs to an earlier run (empty: none)."""
    found = []
    if output_dir and (Path(output_dir) / "metrics.jsonl").is_file():
        found.append(str(Path(output_dir) / "metrics.jsonl"))
    if checkpoint_root and Path(checkpoint_root).is_dir():
        found += [str(p) for p in sorted(Path(checkpoint_root).glob("episode_*")) if p.is_dir()]
    return found


def check_writable(path: str, field: str) -> None:
    """Create ``path`` and prove a file can be written there, now rather than at the first save."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".flowrl-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunDirError(f"runtime_args.{field}: directory {path} is not writable "
                          f"({type(e).__name__}: {e})") from e


def resolve_run_dirs(args: RuntimeArgs, resume: bool) -> None:
    """Point ``args.output_dir`` / ``args.checkpoint_dir`` at this run's directories (in
    place: the config stays the one source of truth) and check them."""
    if args.new_run_dir and args.output_dir and not _RUN.match(Path(args.output_dir).name):
        runs = _runs(Path(args.output_dir))
        n = (runs[-1] if runs else 1) if resume else (runs[-1] + 1 if runs else 1)
        args.output_dir = str(Path(args.output_dir) / f"run-{n}")
        if args.checkpoint_dir:
            args.checkpoint_dir = str(Path(args.checkpoint_dir) / f"run-{n}")
    if not resume:
        found = holds_a_run(args.output_dir, args.checkpoint_root)
        if found:
            where = args.output_dir or args.checkpoint_root
            raise RunDirError(
                f"runtime_args.output_dir: {where} already holds another run ("
                f"{', '.join(found[:3])}{', ...' if len(found) > 3 else ''}); a new run would "
                f"mix with it. Continue that run with learn(resume=True) / runtime_args.resume: "
                f"true, set runtime_args.new_run_dir: true to write into a fresh "
                f"{where}/run-<N>, or choose another output_dir")
    if args.output_dir:
        check_writable(args.output_dir, "output_dir")
    if args.save_episode_interval and args.checkpoint_root:
        check_writable(args.checkpoint_root,
                       "checkpoint_dir" if args.checkpoint_dir else "output_dir (checkpoints/)")


def describe_run_dirs(args: RuntimeArgs, tensorboard_dir: Path | None) -> str:
    """One line: where this run's metrics, TensorBoard events and checkpoints go."""
    metrics = f"{args.output_dir}/metrics.jsonl" if args.output_dir else \
        "not written (no output_dir)"
    tb = str(tensorboard_dir) if tensorboard_dir else "off"
    ckpt = args.checkpoint_root if args.save_episode_interval and args.checkpoint_root else \
        f"off (save_episode_interval={args.save_episode_interval})"
    return f"metrics: {metrics} | TensorBoard: {tb} | checkpoints: {ckpt}"
