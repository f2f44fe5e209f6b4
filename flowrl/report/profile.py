"""The ``--profile`` report: predicted (analytic) vs measured seconds per op, and the
iteration time analytic, profile-guided and measured (text via rich, or JSON)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowrl.compiler.costmodel import transfer_time
from flowrl.compiler.profile import TRANSFERS, ProfileResult
from flowrl.ir import Estimates, Schedule
from flowrl.report.text import fmt_time


def comparison_rows(result: ProfileResult) -> list[dict[str, Any]]:
    """One row per call/sync op (and per measured transfer) of the analytic schedule: its
    predicted (analytic) seconds, the measured median, and what the guided schedule used."""
    guided_ops = {(role, op.label()): op for role, ops in result.guided.ops.items()
                  for op in ops if op.kind in ("call", "sync")}
    rows, seen = [], set()
    for role, ops in result.analytic.ops.items():
        for op in ops:
            key = (role, op.label())
            if key in seen:
                continue
            stat = result.profile.ops.get(key)
            if op.kind in TRANSFERS:
                if stat is None or not stat.moves:
                    continue  # transfers that never moved anything: nothing to compare
                seen.add(key)
                n = max(1, len(op.devices))
                predicted = transfer_time(stat.median_bytes // n, result.analytic.cluster)
                measured = stat.seconds_per_byte * stat.median_bytes
                rows.append(dict(role=role, op=op.label(), kind=op.kind, predicted_s=predicted,
                                 measured_s=measured, count=stat.moves, used_s=measured,
                                 bytes=stat.median_bytes))
                continue
            seen.add(key)
            g = guided_ops.get(key)
            rows.append(dict(role=role, op=op.label(), kind=op.kind, predicted_s=op.duration,
                             measured_s=stat.median_s if stat else None,
                             count=stat.count if stat else 0,
                             used_s=g.duration if g is not None else None, bytes=op.bytes))
    return rows


def _iter_time(s: Schedule) -> float | None:
    return s.estimates.iteration_time if isinstance(s.estimates, Estimates) else None


def profile_report_json(result: ProfileResult) -> dict[str, Any]:
    p = result.profile
    return {"source": p.source, "rows": comparison_rows(result),
            "iteration": {"analytic_s": _iter_time(result.analytic),
                          "profile_guided_s": _iter_time(result.guided),
                          "measured_s": p.measured_iteration,
                          "measured_episodes": len(p.iteration_episodes)},
            "notes": list(result.notes)}


def profile_report(result: ProfileResult, width: int = 120) -> str:
    """Predicted vs measured per op, and the iteration estimates (text, via rich)."""
    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=False, color_system=None)
    p = result.profile
    con.print(f"[bold]profile-guided costs[/bold] from {escape(p.source)} "
              f"({sum(s.count for s in p.ops.values())} op records)")
    t = Table(title="predicted (analytic) vs measured per op", title_justify="left")
    for col in ("role", "op", "predicted", "measured (median)", "n", "measured/predicted",
                "used"):
        t.add_column(col, justify="left" if col in ("role", "op") else "right")
    for r in comparison_rows(result):
        m = r["measured_s"]
        ratio = f"{m / r['predicted_s']:.3g}x" if m is not None and r["predicted_s"] > 0 else "-"
        t.add_row(r["role"], escape(r["op"]), fmt_time(r["predicted_s"]),
                  fmt_time(m) if m is not None else "not measured", str(r["count"]), ratio,
                  fmt_time(r["used_s"]) if r["used_s"] is not None else "-")
    con.print(t)
    a, g, meas = _iter_time(result.analytic), _iter_time(result.guided), p.measured_iteration
    line = (f"[bold]iteration time[/bold]: analytic {fmt_time(a)}, profile-guided "
            f"{fmt_time(g)}")
    if meas is not None:
        n = len(p.iteration_episodes)
        line += (f", measured {fmt_time(meas)} (median of {n} episode"
                 f"{'s' if n != 1 else ''}"
                 f"{', first left out' if len(p.episode_times) > n else ''})")
    con.print(line)
    if result.guided.placement != result.analytic.placement:
        con.print("placement changed with measured costs (see the schedule below)")
    for note in result.notes:
        con.print(f"note: {escape(note)}")
    return buf.getvalue()
