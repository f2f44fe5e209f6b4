"""Profile-guided costs: a run's measured op times replace the analytic cost model.

Both runtimes time every op they execute and ``engine.learn()`` writes the records to
``output_dir/op_profile.jsonl`` (one JSON object per executed op: ``role``, ``op`` (the op's
label, e.g. ``policy.forward_step`` or ``sync ppo_policy -> policy``), ``model``,
``seconds``, ``bytes``). This module reads such a run directory, aggregates the records per
op (median seconds) and builds an ``op_costs`` function for
:func:`~flowrl.compiler.pipeline.compile_schedule`, which then times the schedule with the
measurements instead of the formulas of :mod:`flowrl.compiler.costmodel`:

* a **call** or **sync** op that was measured takes its median measured time, scaled by
  ``analytic(new mesh) / analytic(measured mesh)`` so that a placement search can still move
  it (on the placement it was measured on, the factor is exactly 1);
* an **offload/onload** op takes ``bytes moved x`` the measured seconds per byte of that
  transfer (or of all measured transfers) instead of ``bytes / host_bandwidth``;
* ops that were not measured keep their analytic estimate.

The *measured placement* is the run's compiled schedule when the run directory holds it
(``schedule.json``, ``Schedule.to_json()``); otherwise the profile is assumed to come from a
run of the placement being compiled (same cluster and strategy).

``flowrl explain TARGET --profile RUN_DIR`` prints :func:`flowrl.report.profile.profile_report`: predicted
(analytic) vs measured seconds per op, and the iteration time analytic, profile-guided and
measured (median ``time/episode_s`` of ``metrics.jsonl``).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowrl.ir import ClusterSpec, Estimates, Op, Schedule
from flowrl.ir.serialize import write_schedule_file
from flowrl.config import ModelConfig, RuntimeArgs
from flowrl.errors import FlowRLError

PROFILE_FILE = "op_profile.jsonl"
SCHEDULE_FILE = "schedule.json"
METRICS_FILE = "metrics.jsonl"
TRANSFERS = ("offload", "onload")

OpKey = tuple[str, str]  # (role, op label)


@dataclass(frozen=True)
class OpStat:
    """Measured times of one op (all its executions in the run)."""

    role: str
    op: str
    model: str
    count: int
    median_s: float
    #: transfers only: executions that moved bytes, and their median seconds per byte
    moves: int = 0
    seconds_per_byte: float | None = None
    median_bytes: int = 0


@dataclass
class Profile:
    """A run's measurements: per-op statistics, episode times and (if saved) its schedule."""

    source: str
    ops: dict[OpKey, OpStat]
    episode_times: list[float] = field(default_factory=list)
    schedule: Schedule | None = None  # the schedule the run executed, if saved
    #: measured mean response tokens per generating model (median over episodes)
    response_lengths: dict[str, float] = field(default_factory=dict)

    @property
    def iteration_episodes(self) -> list[float]:
        """Episode times used for the measured iteration: the first (warm-up: process start,
        first-call costs) is left out when there are at least three."""
        return self.episode_times[1:] if len(self.episode_times) >= 3 else self.episode_times

    @property
    def measured_iteration(self) -> float | None:
        eps = self.iteration_episodes
        return statistics.median(eps) if eps else None

    @property
    def transfer_seconds_per_byte(self) -> float | None:
        """Over every measured transfer that moved bytes (total seconds / total bytes)."""
        moving = [s for s in self.ops.values() if s.op.split(" ", 1)[0] in TRANSFERS and s.moves]
        if not moving:
            return None
        return statistics.median(s.seconds_per_byte for s in moving)


def _op_kind(label: str) -> str:
    head = label.split(" ", 1)[0]
    return head if head in TRANSFERS or head == "sync" else "call"


def aggregate(records: list[dict[str, Any]]) -> dict[OpKey, OpStat]:
    """Per (role, op label): the median of its measured seconds (and, for transfers, of the
    seconds per byte of the executions that moved something)."""
    groups: dict[OpKey, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["role"], r["op"]), []).append(r)
    out = {}
    for (role, op), rs in groups.items():
        secs = [float(r["seconds"]) for r in rs]
        moving = [r for r in rs if int(r.get("bytes") or 0) > 0]
        spb = None
        if _op_kind(op) in TRANSFERS and moving:
            spb = statistics.median(float(r["seconds"]) / int(r["bytes"]) for r in moving)
        out[(role, op)] = OpStat(role, op, rs[0].get("model", ""), len(rs),
                                 statistics.median(secs), len(moving), spb,
                                 int(statistics.median(int(r["bytes"]) for r in moving))
                                 if moving else 0)
    return out


def load_profile(run: str | Path) -> Profile:
    """Read ``RUN_DIR/op_profile.jsonl`` (or a ``.jsonl`` file), plus ``metrics.jsonl`` and
    ``schedule.json`` next to it when present."""
    path = Path(run)
    run_dir = path if path.is_dir() else path.parent
    file = path / PROFILE_FILE if path.is_dir() else path
    if not file.is_file():
        raise FlowRLError(
            f"no op profile at {file}: run the flow with runtime_args.output_dir set "
            f"(learn() writes output_dir/{PROFILE_FILE}) and pass that directory")
    records = []
    for i, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            float(r["seconds"]), r["role"], r["op"]
        except (ValueError, KeyError, TypeError) as e:
            raise FlowRLError(f"{file}:{i}: not an op record ({type(e).__name__}: {e}); "
                              f"expected {{role, op, model, seconds, bytes}}") from None
        records.append(r)
    if not records:
        raise FlowRLError(f"{file} holds no op records (did the run execute any op?)")
    episodes: list[float] = []
    rows: list[dict[str, Any]] = []
    metrics = run_dir / METRICS_FILE
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows.append(row)
                if row.get("time/episode_s") is not None:
                    episodes.append(float(row["time/episode_s"]))
    schedule = None
    sched = run_dir / SCHEDULE_FILE
    if sched.is_file():
        schedule = Schedule.from_json(json.loads(sched.read_text()))
    return Profile(str(file), aggregate(records), episodes, schedule,
                   response_lengths(rows))


def response_lengths(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean response tokens per generating model, the median over episodes of its
    ``<model>/response_length`` metric, or of ``<model>/generated_tokens / samples``."""
    per: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            model, _, name = key.rpartition("/")
            if not model or value is None:
                continue
            if name == "response_length":
                per.setdefault(model, []).append(float(value))
            elif name == "generated_tokens" and row.get("samples") and \
                    f"{model}/response_length" not in row:
                per.setdefault(model, []).append(float(value) / float(row["samples"]))
    return {m: statistics.median(v) for m, v in per.items() if v}


def length_notes(profile: Profile, models: dict[str, ModelConfig]) -> list[str]:
    """For each model whose measured mean response differs from what it is planned with
    (``generation.expected_new_tokens``, else ``max_new_tokens``), the setting to change. The
    measured op times already hold the real lengths; the setting carries them to ops and
    placements the profile did not measure."""
    notes = []
    for model, mean in sorted(profile.response_lengths.items()):
        gen = models[model].generation if model in models else None
        if gen is None or mean <= 0:
            continue
        planned = gen.expected_new_tokens or gen.max_new_tokens
        if planned is None or abs(planned - mean) > 0.1 * planned:
            notes.append(f"measured mean response of '{model}': {mean:.0f} tokens (planned: "
                         f"{planned if planned is not None else 'the flow default'}); set "
                         f"models.{model}.generation.expected_new_tokens: "
                         f"{max(1, round(mean))} to plan unmeasured ops and placements with it")
    return notes


def write_schedule(schedule: Schedule, run_dir: str | Path) -> Path:
    """Save the schedule a run executes next to its profile (``RUN_DIR/schedule.json``), so
    ``--profile`` knows the placement the times were measured on."""
    return write_schedule_file(schedule, Path(run_dir) / SCHEDULE_FILE)


#: ClusterSpec fields that may differ between the cluster a profile was measured on and the
#: one it is applied to while measured times are still rescaled by the cost model's ratio.
SHAPE_FIELDS = ("name", "num_nodes", "devices_per_node", "device_memory_gb",
                "memory_utilization")


def same_devices(a: ClusterSpec, b: ClusterSpec) -> bool:
    """Same kind of device and links (counts and memory size may differ)."""
    da, db = a.model_dump(exclude=set(SHAPE_FIELDS)), b.model_dump(exclude=set(SHAPE_FIELDS))
    return da == db


def _reference_durations(schedule: Schedule) -> dict[OpKey, float]:
    """Analytic seconds of each call/sync op of a compiled schedule (first occurrence)."""
    out: dict[OpKey, float] = {}
    for role, ops in schedule.ops.items():
        for op in ops:
            if op.kind in ("call", "sync"):
                out.setdefault((role, op.label()), op.duration)
    return out


class ProfileCosts:
    """``op_costs`` for :func:`~flowrl.compiler.pipeline.compile_schedule` from a profile.

    ``reference``: analytic seconds of each call/sync op on the placement the profile was
    measured on (see the module docstring); ``cluster``: the cluster being compiled for.
    ``used`` collects the ops whose duration came from a measurement.
    """

    def __init__(self, profile: Profile, reference: dict[OpKey, float],
                 cluster: ClusterSpec) -> None:
        self.profile, self.reference, self.cluster = profile, reference, cluster
        self.default_spb = profile.transfer_seconds_per_byte
        self.used: set[OpKey] = set()

    def __call__(self, role: str, op: Op, analytic: float) -> float:
        key = (role, op.label())
        stat = self.profile.ops.get(key)
        if op.kind in TRANSFERS:
            spb = stat.seconds_per_byte if stat is not None and stat.seconds_per_byte else \
                self.default_spb
            if spb is None or analytic <= 0:
                return analytic
            moved = analytic * self.cluster.host_bandwidth * max(1, len(op.devices))
            self.used.add(key)
            return moved * spb
        if stat is None:
            return analytic
        self.used.add(key)
        ref = self.reference.get(key)
        if ref is None or ref <= 0 or analytic <= 0 or math.isclose(ref, analytic):
            return stat.median_s
        return stat.median_s * analytic / ref


@dataclass
class ProfileResult:
    """An analytic schedule, its profile-guided recompilation and the profile behind it."""

    analytic: Schedule
    guided: Schedule
    profile: Profile
    costs: ProfileCosts
    notes: list[str] = field(default_factory=list)


def sync_pairs(schedule: Schedule) -> list[tuple[str, str]]:
    """(trainer, inference model) pairs of a schedule's sync ops, in order."""
    return [(op.src, op.model) for op in schedule.ops.get("sync", []) if op.kind == "sync"]


def profile_guided(analytic: Schedule, models: dict[str, ModelConfig], profile: Profile, *,
                   runtime_args: RuntimeArgs, seed: int = 0,
                   colocation: list[list[str]] | None = None,
                   capabilities: dict[str, dict[str, bool]] | None = None) -> ProfileResult:
    """Recompile ``analytic`` (same graphs, cluster and strategy) with the profile's measured
    op costs. ``models``: the config sections the analytic schedule was compiled from;
    ``capabilities``: as it was compiled with (see ``compile_schedule``)."""
    from flowrl.compiler.pipeline import compile_schedule

    if not isinstance(analytic.estimates, Estimates) or analytic.cluster is None:
        raise FlowRLError("profile-guided costs need a compiled schedule: pass --cluster "
                          "(e.g. local or 8xH100-80GB)")
    notes = []
    reference_schedule = analytic
    ran = profile.schedule
    if ran is not None and ran.placement and isinstance(ran.cluster, ClusterSpec):
        if same_devices(ran.cluster, analytic.cluster):
            reference_schedule = ran
            if ran.placement != analytic.placement or ran.cluster != analytic.cluster:
                notes.append(f"the profile was measured on '{ran.cluster.name}' with strategy "
                             f"'{ran.strategy}'; its times are rescaled to this placement by "
                             f"the cost model's ratio (new / measured placement)")
        else:
            reference_schedule = None
            notes.append(f"the profile was measured on cluster '{ran.cluster.name}' (other "
                         f"devices than '{analytic.cluster.name}'): measured times are used as "
                         f"they are, not rescaled")
    else:
        notes.append("the run directory has no schedule.json: the profile is assumed to come "
                     "from a run of this same placement")
    reference = _reference_durations(reference_schedule) if reference_schedule else {}
    costs = ProfileCosts(profile, reference, analytic.cluster)
    used = {c.model for g in analytic.graphs.values() for c in g.calls()}
    guided = compile_schedule(dict(analytic.graphs), {m: models[m] for m in used},
                              sync_pairs(analytic), analytic.cluster, analytic.strategy,
                              seed=seed, runtime_args=runtime_args, colocation=colocation,
                              op_costs=costs, capabilities=capabilities)
    unmatched = sorted(k for k in profile.ops if k[0] in guided.ops and k not in costs.used
                       and _op_kind(k[1]) not in TRANSFERS)
    if unmatched:
        notes.append("measured but not in this schedule: "
                     + ", ".join(f"{r}/{o}" for r, o in unmatched[:6])
                     + (" ..." if len(unmatched) > 6 else ""))
    notes.extend(length_notes(profile, models))
    return ProfileResult(analytic, guided, profile, costs, notes)
