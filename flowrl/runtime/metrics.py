"""Per-episode metrics: aggregation, a console line, and a JSONL file."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console


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
    """Writes one JSON object per episode to ``metrics.jsonl`` and prints a short summary."""

    #: metrics shown on the console line when present (all go to the file)
    HEADLINE = ("reward", "score", "kl", "loss", "accuracy", "margin", "generated_tokens_per_s")

    def __init__(self, output_dir: str | None, console: Console | None = None,
                 tensorboard: bool = False) -> None:
        self.console = console or Console()
        self.path: Path | None = None
        self.tb = None
        if output_dir:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            self.path = Path(output_dir) / "metrics.jsonl"
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(output_dir) / "tb"))
        self.history: list[dict[str, Any]] = []

    def log(self, episode: int, metrics: dict[str, float]) -> None:
        row = {"episode": episode, **{k: _clean(v) for k, v in sorted(metrics.items())}}
        self.history.append(row)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, episode)
            self.tb.flush()
        shown = [f"{k}={v:.3g}" for k, v in row.items()
                 if v is not None and k.split("/")[-1] in self.HEADLINE]
        self.console.print(f"[bold]episode {episode}[/bold] " + " ".join(shown), highlight=False,
                           soft_wrap=True)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _clean(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v
