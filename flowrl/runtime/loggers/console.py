"""The console's view of an episode: every metric, grouped by prefix, one block per episode."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.text import Text

#: order of the well-known groups (others follow alphabetically, ``time`` and ``sync`` last)
_FIRST = ("reward", "eval")
_LAST = ("staleness", "sync", "time")


def _fmt(value: float | None) -> str:
    if value is None:
        return "nan"  # NaN/inf are written as null to the file; the console says so plainly
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"


def _group_order(name: str) -> tuple[int, str]:
    if name in _FIRST:
        return (0, str(_FIRST.index(name)))
    if name in _LAST:
        return (2, str(_LAST.index(name)))
    return (1, name)


def format_episode(row: dict[str, Any]) -> str:
    """``episode N  samples=..`` then one line per prefix (``reward``, ``<model>``, ``eval``,
    ``time`` ...) holding every metric of that prefix as ``name=value``."""
    groups: dict[str, list[str]] = defaultdict(list)
    plain = []
    for key in sorted(k for k in row if k != "episode"):
        prefix, _, rest = key.partition("/")
        if rest:
            groups[prefix].append(f"{rest}={_fmt(row[key])}")
        else:
            plain.append(f"{key}={_fmt(row[key])}")
    lines = [" ".join([f"episode {row['episode']}", *plain])]
    width = max((len(g) for g in groups), default=0)
    for g in sorted(groups, key=_group_order):
        lines.append(f"  {g:<{width}}  " + " ".join(groups[g]))
    return "\n".join(lines)


class ConsoleSink:
    """Prints :func:`format_episode` blocks (the episode line in bold)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def log(self, row: dict[str, Any]) -> None:
        head, _, rest = format_episode(row).partition("\n")
        text = Text(head, style="bold")  # Text, not markup: a metric name may hold brackets
        if rest:
            text.append("\n" + rest)
        self.console.print(text, highlight=False, soft_wrap=True)

    def restore(self, history: list[dict[str, Any]]) -> None:
        pass  # the console keeps what it printed

    def close(self) -> None:
        pass
