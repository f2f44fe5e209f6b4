"""Strategy ``search``: explore placements with the cost model, keep the best.

A candidate gives every unit a block of devices; units may overlap (then they time-share the
devices and the offload pass plans their memory) or not (then they can run concurrently).
Blocks are aligned: a unit of ``s`` devices starts at a multiple of ``s``, with ``s`` a
power-of-two multiple of the unit's model-parallel size (or its fixed count), so blocks never
straddle a node needlessly and the space stays small.

The search starts from the ``colocate`` and ``disaggregate`` placements (so it is never
worse than either), improves by coordinate descent (each unit in turn tries every block,
others fixed) and then by seeded random moves of one or two units. Each candidate is scored
by the compiler's own pass list from ``memory`` on (``PlacementRequest.evaluate``) (estimated iteration seconds; infeasible
candidates score ``inf``). Same inputs and seed give the same result.
"""

from __future__ import annotations

import math
import random
from typing import Callable

from flowrl.compiler.colocation import Unit, unit_meshes
from flowrl.compiler.placement.colocate import colocate
from flowrl.compiler.placement.disaggregate import disaggregate
from flowrl.compiler.placement.registry import PlacementRequest, Workload, register_strategy
from flowrl.compiler.resources import ModelResources
from flowrl.config import RuntimeArgs
from flowrl.errors import CompileError
from flowrl.ir import ClusterSpec, Mesh

#: Candidates scored at most (each runs memory, offload and schedule): keeps compile < 1 s.
MAX_EVALS = 240
COORDINATE_SWEEPS = 2

Candidate = tuple[tuple[int, ...], ...]  # per unit: its devices


def unit_options(unit: Unit, num_devices: int) -> list[tuple[int, ...]]:
    """Aligned device blocks the unit may take."""
    out = []
    for size in unit.sizes(num_devices):
        for start in range(0, num_devices - size + 1, size):
            out.append(tuple(range(start, start + size)))
    return out


def _as_candidate(units: list[Unit], meshes: dict[str, Mesh]) -> Candidate:
    # A unit's block is the union of its members' devices (members start at its first device).
    return tuple(tuple(sorted({d for m in u.models for d in meshes[m].devices})) for u in units)


def search_placement(units: list[Unit], resources: dict[str, ModelResources],
                     cluster: ClusterSpec, workload: Workload, args: RuntimeArgs,
                     evaluate: Callable[[dict[str, Mesh]], float], seed: int = 0,
                     max_evals: int = MAX_EVALS) -> dict[str, Mesh]:
    """The best placement found (lowest ``evaluate``); raises if no candidate is feasible."""
    rng = random.Random(seed)
    options = [unit_options(u, cluster.num_devices) for u in units]
    scores: dict[Candidate, float] = {}
    errors: list[str] = []

    def meshes_of(cand: Candidate) -> dict[str, Mesh]:
        out: dict[str, Mesh] = {}
        for u, devices in zip(units, cand):
            out.update(unit_meshes(u, devices, resources))
        return out

    def score(cand: Candidate) -> float:
        if cand not in scores:
            try:
                scores[cand] = evaluate(meshes_of(cand))
            except CompileError as e:  # out of memory even with offload, bad fit ...
                scores[cand] = math.inf
                errors.append(str(e))
        return scores[cand]

    seeds: list[Candidate] = [_as_candidate(units, colocate(units, resources, cluster))]
    try:
        seeds.append(_as_candidate(units, disaggregate(units, resources, cluster, workload, args)))
    except CompileError:
        pass  # not enough devices to give every unit its own
    best = min(seeds, key=lambda c: (score(c), seeds.index(c)))

    def affordable(c: Candidate) -> bool:
        return len(scores) < max_evals or c in scores

    for _ in range(COORDINATE_SWEEPS):
        improved = False
        for i in range(len(units)):
            for opt in options[i]:
                cand = best[:i] + (opt,) + best[i + 1:]
                if not affordable(cand):
                    break
                if score(cand) < score(best):
                    best, improved = cand, True
        if not improved:
            break
    tries = 0
    while len(scores) < max_evals and tries < 4 * max_evals and len(units):
        tries += 1
        cand = list(best)
        for i in rng.sample(range(len(units)), k=min(len(units), rng.choice((1, 2)))):
            cand[i] = rng.choice(options[i])
        c = tuple(cand)
        if score(c) < score(best):
            best = c
    if math.isinf(score(best)):
        detail = f": {errors[0]}" if errors else ""
        raise CompileError(f"search found no placement that fits cluster '{cluster.name}'"
                           + detail)
    return meshes_of(best)


@register_strategy("search")
def _search(req: PlacementRequest) -> dict[str, Mesh]:
    if req.evaluate is None:
        raise CompileError("strategy 'search' needs an evaluate function")
    return search_placement(req.units, req.resources, req.cluster, req.workload, req.args,
                            req.evaluate, req.seed)
