"""Per-episode metrics: aggregation, a console line, a JSONL file and TensorBoard scalars."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console

from flowrl.errors import MissingExtraError


def aggregate(entries: list[tuple[str, float, str]]) -> dict[str, float]:
    """Reduce (name, value, "mean"|"sum") entries to one value per name."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    reduce: dict[str, str] = {}
    for name, value, how in entries:
        sums[name] += value
        counts[name] += 1
        reduce[name] = how
    return {n: (sums[n] if reduce[n] == "sum" else sums[n] / counts[n]) for n in sums}


class MetricsLogger:
    """Writes one JSON object per episode to ``metrics.jsonl`` (and TensorBoard scalars under
    ``output_dir/tb``) and prints a short summary line.

    ``tensorboard``: ``True`` (an error when the package is missing), ``False``, or ``None``
    for "when ``output_dir`` is set and tensorboard is installed".
    """

    #: metrics shown on the console line when present (all go to the file)
    HEADLINE = ("reward", "score", "kl", "loss", "accuracy", "margin", "generated_tokens_per_s")

    def __init__(self, output_dir: str | None, console: Console | None = None,
                 tensorboard: bool | None = False) -> None:
        self.console = console or Console()
        self.path: Path | None = None
        self.tb_dir: Path | None = None
        self.tb = None
        self._purge_step: int | None = None
        if output_dir:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            self.path = Path(output_dir) / "metrics.jsonl"
            installed = importlib.util.find_spec("tensorboard") is not None
            if tensorboard and not installed:
                raise MissingExtraError(
                    "runtime_args.tensorboard is on but the 'tensorboard' package is not "
                    "installed: pip install 'flowrl[tensorboard]'")
            if tensorboard or (tensorboard is None and installed):
                self.tb_dir = Path(output_dir) / "tb"
        self.history: list[dict[str, Any]] = []

    def _writer(self):
        if self.tb is None and self.tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.tb_dir), purge_step=self._purge_step)
        return self.tb

    def log(self, episode: int, metrics: dict[str, float]) -> None:
        row = {"episode": episode, **{k: _clean(v) for k, v in sorted(metrics.items())}}
        self.history.append(row)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        tb = self._writer()
        if tb is not None:
            for k, v in row.items():
                if k != "episode" and v is not None:
                    tb.add_scalar(k, v, episode)
            tb.flush()
        shown = [f"{k}={v:.3g}" for k, v in row.items()
                 if v is not None and k.split("/")[-1] in self.HEADLINE]
        self.console.print(f"[bold]episode {episode}[/bold] " + " ".join(shown), highlight=False,
                           soft_wrap=True)

    def restore(self, history: list[dict[str, Any]]) -> None:
        """Continue from a checkpoint's history: ``metrics.jsonl`` is rewritten to exactly those
        rows (dropping any logged after the checkpoint) and TensorBoard purges later steps."""
        self.history = [dict(r) for r in history]
        if self.path is not None:
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history))
            os.replace(tmp, self.path)
        self.close()
        self._purge_step = (self.history[-1]["episode"] + 1) if self.history else None

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _clean(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v
