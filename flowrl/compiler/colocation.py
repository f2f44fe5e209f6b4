"""Colocation: models that must share devices become one placement unit.

Models with the same ``colocation_group`` label (and models listed together in an explicit
``colocation=[[...], ...]``) are placed as one unit: every member runs on the unit's
devices, so the offload pass time-shares that memory between them. Placement strategies
place units; :func:`unit_meshes` turns a unit's devices into each member's mesh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flowrl.ir import Mesh
from flowrl.compiler.resources import ModelResources
from flowrl.errors import CompileError


@dataclass(frozen=True)
class Unit:
    """Models placed together.

    ``mp``: the unit's device count must be a multiple of it (lcm of members' tp*pp);
    ``pinned``: a fixed device count (the largest one a member's config fixes), else None.
    """

    name: str
    models: tuple[str, ...]
    mp: int
    pinned: int | None

    def sizes(self, num_devices: int) -> list[int]:
        """Device counts this unit may take: its pinned count, or mp times a power of two."""
        if self.pinned is not None:
            return [self.pinned]
        out, n = [], self.mp
        while n <= num_devices:
            out.append(n)
            n *= 2
        return out


def colocation_units(resources: dict[str, ModelResources],
                     colocation: list[list[str]] | None = None) -> list[Unit]:
    """Group models (in first-use order) into placement units."""
    names = list(resources)
    parent = {n: n for n in names}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:  # keep the earlier model as the root so unit order is first-use order
            first, second = sorted((ra, rb), key=names.index)
            parent[second] = first

    by_label: dict[str, str] = {}
    for n in names:
        label = resources[n].colocation_group
        if label is not None:
            if label in by_label:
                union(by_label[label], n)
            else:
                by_label[label] = n
    for group in colocation or []:
        for other in group[1:]:
            union(group[0], other)

    members: dict[str, list[str]] = {}
    for n in names:
        members.setdefault(find(n), []).append(n)
    units = []
    for root, ms in members.items():
        label = resources[root].colocation_group if len(ms) > 1 else None
        mp = math.lcm(*(resources[m].mp for m in ms))
        pinned_counts = [resources[m].pinned_devices for m in ms
                         if resources[m].pinned_devices is not None]
        pinned = max(pinned_counts) if pinned_counts else None
        if pinned is not None and pinned % mp and len(ms) > 1:
            raise CompileError(
                f"colocation group {ms}: models.{ms[0]}.num_devices={pinned} is not a multiple "
                f"of every member's tensor*pipeline parallel size (lcm {mp})")
        units.append(Unit(label or "+".join(ms), tuple(ms), mp, pinned))
    return units


def unit_meshes(unit: Unit, devices: tuple[int, ...],
                resources: dict[str, ModelResources]) -> dict[str, Mesh]:
    """Each member's mesh on the unit's ``devices``: its pinned count, else all it can use."""
    out = {}
    for m in unit.models:
        r = resources[m]
        n = r.pinned_devices if r.pinned_devices is not None else len(devices) // r.mp * r.mp
        if n < r.mp or n > len(devices):
            raise CompileError(
                f"model '{m}' needs {max(n, r.mp)} devices but its unit '{unit.name}' was given "
                f"{len(devices)}")
        out[m] = Mesh(tuple(devices[:n]), r.tp, r.pp, n // r.mp)
    return out
