"""The plan's parallel layout as data: per model tp x pp x dp, the device split, staleness.

The placement pass records, next to the meshes, *why* they look as they do: which family
the plan belongs to (``colocated``: every model on every device; ``disaggregated``: the
rollout flow's models on one block, the trainers on another; ``hybrid``: the generator on
its own block, scorers beside the trainers), the rollout:train device split, the staleness
the plan needs (``0 .. runtime_args.max_staleness``), each model's layout and role, the
weight resharding every sync pays when a generator's layout differs from its trainer's, and
notes where this runtime cannot honour the plan. Its JSON form is the ``layout`` object of
``flowrl.schedule/1`` (absent for schedules compiled without a cluster).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

LayoutRole = Literal["generate", "score", "train"]
Family = Literal["colocated", "disaggregated", "hybrid", "custom"]


@dataclass(frozen=True)
class ModelLayout:
    """One model's parallel layout: ``tp * pp * dp == len(devices)``."""

    model: str
    role: LayoutRole
    tp: int
    pp: int
    dp: int
    devices: tuple[int, ...]
    from_config: bool = True  # tp and pp are the config's (False: the planner chose them)

    def describe(self) -> str:
        """``TP2xDP4`` style (``PP`` only when > 1)."""
        pp = f"xPP{self.pp}" if self.pp > 1 else ""
        return f"TP{self.tp}{pp}xDP{self.dp}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "role": self.role, "tp": self.tp, "pp": self.pp,
                "dp": self.dp, "devices": list(self.devices), "from_config": self.from_config}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelLayout":
        return cls(d["model"], d["role"], int(d["tp"]), int(d["pp"]), int(d["dp"]),
                   tuple(d["devices"]), bool(d.get("from_config", True)))


@dataclass(frozen=True)
class Reshard:
    """A sync whose source and destination layouts differ: weights are resharded on the way
    (``seconds``: the cost model's estimate per sync)."""

    src: str
    dst: str
    src_layout: str
    dst_layout: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "src_layout": self.src_layout,
                "dst_layout": self.dst_layout, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Reshard":
        return cls(d["src"], d["dst"], d["src_layout"], d["dst_layout"], float(d["seconds"]))


@dataclass(frozen=True)
class PlanLayout:
    """What the planner decided, beyond device ids (see the module docstring).

    ``rollout_devices``/``train_devices``: devices of the rollout flow's and the train flow's
    models; ``staleness``: what the plan needs (``configured_staleness``: the config's
    ``max_staleness``); ``score``: the planner's estimated seconds per episode (the
    pipelined steady state when ``staleness >= 1``).
    """

    family: Family
    rollout_devices: tuple[int, ...]
    train_devices: tuple[int, ...]
    staleness: int
    configured_staleness: int
    models: tuple[ModelLayout, ...]
    reshards: tuple[Reshard, ...] = ()
    score: float | None = None  # None: the strategy did not score its answer
    notes: tuple[str, ...] = ()

    @property
    def split(self) -> str:
        """``"4:12"`` (rollout devices : train devices), ``"shared 8"`` when they overlap."""
        shared = set(self.rollout_devices) & set(self.train_devices)
        if shared:
            return f"shared {len(set(self.rollout_devices) | set(self.train_devices))}"
        return f"{len(self.rollout_devices)}:{len(self.train_devices)}"

    def model(self, name: str) -> ModelLayout:
        """The layout of model ``name``."""
        return next(m for m in self.models if m.model == name)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "rollout_devices": list(self.rollout_devices),
                "train_devices": list(self.train_devices), "staleness": self.staleness,
                "configured_staleness": self.configured_staleness,
                "models": [m.to_dict() for m in self.models],
                "reshards": [r.to_dict() for r in self.reshards], "score": self.score,
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PlanLayout":
        return cls(d["family"], tuple(d["rollout_devices"]), tuple(d["train_devices"]),
                   int(d["staleness"]), int(d["configured_staleness"]),
                   tuple(ModelLayout.from_dict(m) for m in d["models"]),
                   tuple(Reshard.from_dict(r) for r in d.get("reshards", ())),
                   d.get("score"), tuple(d.get("notes", ())))
