"""Strategy ``search``: the planner. Explores placements, per-model layouts and staleness
with the cost model and keeps the best.

The space: every device plan of :mod:`~flowrl.compiler.placement.hybrid` (colocated;
disaggregated and hybrid at each rollout:train split), each model at any tp x pp x dp of
:mod:`flowrl.compiler.parallelism` on its block (a generator's independent of its trainer's),
and staleness ``0 .. runtime_args.max_staleness``; then free aligned device blocks per unit.

1. **Seeds**: the ``colocate`` and ``disaggregate`` placements at the config's layouts (so
   the answer is never worse than either) and every device plan at its models' best-ranked
   layouts, each scored at staleness 0 and 1. (Every ``k >= 1`` has the same deterministic
   steady state, :mod:`flowrl.compiler.pipelining`: ``k > 1`` only absorbs variance, so the
   plan takes the smallest ``k`` that reaches its time.)
2. **Layouts**: for the best few plans, coordinate descent over each model's next-ranked
   layouts (others fixed).
3. **Blocks**: the previous search over aligned device blocks per unit (a unit of ``s``
   devices starts at a multiple of ``s``, ``s`` its model-parallel size times a power of two;
   units may overlap and time-share or not and run concurrently): coordinate descent, then
   seeded random moves of one or two units, from the best plan so far.

Each candidate is scored by the compiler's own pass list from ``memory`` on
(``PlacementRequest.evaluate_at``/``evaluate``): estimated seconds per episode (the
pipelined steady state at staleness >= 1), ``inf`` when infeasible. Same inputs and seed,
same result; a 6-model PPO on 64 devices plans in well under 2 s.
"""

from __future__ import annotations

import math
import random
from typing import Callable

from flowrl.compiler.colocation import Unit, unit_meshes
from flowrl.compiler.placement.colocate import colocate
from flowrl.compiler.placement.disaggregate import disaggregate
from flowrl.compiler.parallelism import with_layouts
from flowrl.compiler.placement.hybrid import (LayoutRanker, device_plans, model_roles,
                                              plan_meshes, unit_blocks)
from flowrl.compiler.placement.registry import (PlacementRequest, Placed, Workload,
                                                register_strategy)
from flowrl.compiler.resources import ModelResources
from flowrl.config import RuntimeArgs
from flowrl.errors import CompileError
from flowrl.ir import ClusterSpec, Mesh

#: Candidates scored at most (each runs memory, offload and schedule): keeps compile < 1 s.
MAX_EVALS = 240
COORDINATE_SWEEPS = 2
#: Plans whose layouts phase 2 refines, and layouts tried per model beyond the current one.
REFINE_PLANS, REFINE_LAYOUTS = 5, 2
#: The planner's candidates in all (phase 3 gets what phases 1-2 leave, at least
#: ``MIN_LOCAL_EVALS``): 6-model PPO on 64 devices plans in ~1.3 s.
PLAN_EVALS, MIN_LOCAL_EVALS = 160, 40

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


class _BlockScores:
    """Cached ``evaluate`` scores of candidates (unit blocks); an infeasible one scores
    ``inf`` and keeps the compiler's reason."""

    def __init__(self, units: list[Unit], resources: dict[str, ModelResources],
                 evaluate: Callable[[dict[str, Mesh]], float]) -> None:
        self.units, self.resources, self.evaluate = units, resources, evaluate
        self.scores: dict[Candidate, float] = {}
        self.errors: list[str] = []

    def meshes_of(self, cand: Candidate) -> dict[str, Mesh]:
        out: dict[str, Mesh] = {}
        for u, devices in zip(self.units, cand):
            out.update(unit_meshes(u, devices, self.resources))
        return out

    def __call__(self, cand: Candidate) -> float:
        if cand not in self.scores:
            try:
                self.scores[cand] = self.evaluate(self.meshes_of(cand))
            except CompileError as e:  # out of memory even with offload, bad fit ...
                self.scores[cand] = math.inf
                self.errors.append(str(e))
        return self.scores[cand]


def _coordinate_sweeps(best: Candidate, options: list[list], score: _BlockScores,
                       max_evals: int) -> Candidate:
    """Try every option of one unit at a time, keeping improvements, until a sweep finds
    none (or the evaluation budget is spent)."""
    for _ in range(COORDINATE_SWEEPS):
        improved = False
        for i in range(len(best)):
            for opt in options[i]:
                cand = best[:i] + (opt,) + best[i + 1:]
                if len(score.scores) >= max_evals and cand not in score.scores:
                    break
                if score(cand) < score(best):
                    best, improved = cand, True
        if not improved:
            break
    return best


def _random_moves(best: Candidate, options: list[list], score: _BlockScores,
                  rng: random.Random, max_evals: int) -> Candidate:
    """Change one or two units at random while the evaluation budget lasts."""
    tries = 0
    while len(score.scores) < max_evals and tries < 4 * max_evals and len(best):
        tries += 1
        cand = list(best)
        for i in rng.sample(range(len(best)), k=min(len(best), rng.choice((1, 2)))):
            cand[i] = rng.choice(options[i])
        c = tuple(cand)
        if score(c) < score(best):
            best = c
    return best


def search_placement(units: list[Unit], resources: dict[str, ModelResources],
                     cluster: ClusterSpec, workload: Workload, args: RuntimeArgs,
                     evaluate: Callable[[dict[str, Mesh]], float], seed: int = 0,
                     max_evals: int = MAX_EVALS,
                     start: dict[str, Mesh] | None = None) -> dict[str, Mesh]:
    """The best placement found over aligned unit blocks (lowest ``evaluate``), from the
    ``colocate`` and ``disaggregate`` placements and ``start``; raises if no candidate is
    feasible."""
    options = [unit_options(u, cluster.num_devices) for u in units]
    score = _BlockScores(units, resources, evaluate)
    seeds: list[Candidate] = [_as_candidate(units, colocate(units, resources, cluster))]
    try:
        seeds.append(_as_candidate(units, disaggregate(units, resources, cluster, workload, args)))
    except CompileError:
        pass  # not enough devices to give every unit its own
    if start is not None:
        seeds.append(_as_candidate(units, start))
    best = min(seeds, key=lambda c: (score(c), seeds.index(c)))
    best = _coordinate_sweeps(best, options, score, max_evals)
    best = _random_moves(best, options, score, random.Random(seed), max_evals)
    if math.isinf(score(best)):
        detail = f": {score.errors[0]}" if score.errors else ""
        raise CompileError(f"search found no placement that fits cluster '{cluster.name}'"
                           + detail)
    return score.meshes_of(best)


class _Scorer:
    """Cached scores of (meshes, staleness); infeasible candidates score ``inf`` and keep
    the compiler's reason."""

    def __init__(self, req: PlacementRequest):
        self.req, self.cache, self.errors = req, {}, []
        self.max_k = min(1, req.args.max_staleness) if req.evaluate_at is not None else 0

    def __call__(self, meshes: dict[str, Mesh], k: int) -> float:
        key = (tuple(sorted(meshes.items())), k)
        if key not in self.cache:
            try:
                self.cache[key] = (self.req.evaluate_at(meshes, k) if self.req.evaluate_at
                                   else self.req.evaluate(meshes))
            except CompileError as e:
                self.cache[key] = math.inf
                self.errors.append(str(e).splitlines()[0])
        return self.cache[key]

    def best_k(self, meshes: dict[str, Mesh]) -> tuple[float, int]:
        """(score, staleness): the smallest staleness reaching the best score."""
        return min((self(meshes, k), k) for k in range(self.max_k + 1))


def _seed_plans(req: PlacementRequest, score: _Scorer,
                ranker: LayoutRanker) -> list[tuple[float, int, str, dict[str, Mesh], list]]:
    """Phase 1: (score, staleness, family, meshes, blocks) of the seeds, best first."""
    n, roles = req.cluster.num_devices, model_roles(req.workload)
    found = []
    seeds = [("colocated", colocate(req.units, req.resources, req.cluster), None)]
    try:
        seeds.append(("disaggregated", disaggregate(req.units, req.resources, req.cluster,
                                                    req.workload, req.args), None))
    except CompileError:
        pass  # not enough devices to give every unit its own at the config's layouts
    for plan in device_plans(n):
        blocks = unit_blocks(plan, req.units, roles, n)
        meshes = plan_meshes(req.units, blocks, req.resources, ranker)
        if meshes is not None:
            seeds.append((plan[0], meshes, blocks))
    for order, (family, meshes, blocks) in enumerate(seeds):
        s, k = score.best_k(meshes)
        found.append((s, k, order, family, meshes, blocks))
    found.sort(key=lambda x: (x[0], x[1], x[2]))
    return [(s, k, f, m, b) for s, k, _, f, m, b in found]


def _refine_layouts(req: PlacementRequest, score: _Scorer, ranker: LayoutRanker,
                    blocks: list, meshes: dict[str, Mesh], best: tuple[float, int],
                    ) -> tuple[tuple[float, int], dict[str, Mesh]]:
    """Phase 2: each model in turn tries its next-ranked layouts on its block."""
    choice = {m: 0 for u in req.units for m in u.models}
    for m in choice:
        if req.resources[m].pinned_devices is not None:
            continue
        for i in range(1, REFINE_LAYOUTS + 1):
            cand = plan_meshes(req.units, blocks, req.resources, ranker, {**choice, m: i})
            if cand is None:
                break
            got = (score(cand, best[1]), best[1])
            if got < best:
                best, meshes, choice = got, cand, {**choice, m: i}
    return best, meshes


def plan_search(req: PlacementRequest, max_evals: int = PLAN_EVALS) -> Placed:
    """The planner (module docstring): meshes, staleness, family and score of the best plan."""
    score = _Scorer(req)
    ranker = LayoutRanker(req.resources, req.workload, req.args, req.cluster)
    seeds = _seed_plans(req, score, ranker)
    (s, k, family, meshes, _) = seeds[0]
    best = (s, k)
    for s0, k0, fam, m0, blocks in seeds[:REFINE_PLANS]:
        if blocks is None or not math.isfinite(s0):
            continue
        got, cand = _refine_layouts(req, score, ranker, blocks, m0, (s0, k0))
        if got < best:
            best, meshes, family = got, cand, fam
    planned = with_layouts(req.resources, meshes)
    units = [Unit(u.name, u.models, math.lcm(*(planned[m].mp for m in u.models)), u.pinned)
             for u in req.units]
    k = best[1]
    try:
        local = search_placement(units, planned, req.cluster, req.workload, req.args,
                                 lambda m: score(m, k), req.seed,
                                 max(MIN_LOCAL_EVALS, max_evals - len(score.cache)),
                                 start=meshes)
    except CompileError:
        local = None
    if local is not None and (score(local, k), k) < best:
        best, meshes, family = (score(local, k), k), local, "custom"
    if not math.isfinite(best[0]):
        detail = f": {score.errors[0]}" if score.errors else ""
        raise CompileError(f"search found no placement that fits cluster "
                           f"'{req.cluster.name}'{detail}")
    return Placed(meshes, best[1] if req.evaluate_at is not None else None, family, best[0],
                  _runners_up(req, seeds, meshes))


#: Other plans kept for ``flowrl explain`` to compare the winner with.
RUNNERS_UP = 3


def _runners_up(req: PlacementRequest, seeds: list, winner: dict[str, Mesh]) -> tuple:
    """The best feasible seeds unlike the winner, one per family and split (best first):
    ``(label, meshes, staleness)``, e.g. ``("disaggregated 4:4", ...)``."""
    roles, n = model_roles(req.workload), req.cluster.num_devices
    out, seen = [], set()
    for s, k, family, meshes, _ in seeds:
        if not math.isfinite(s) or meshes == winner:
            continue
        gen = {d for m, r in roles.items() if r == "generate" and m in meshes
               for d in meshes[m].devices}
        label = family if family == "colocated" or not gen else \
            f"{family} {len(gen)}:{n - len(gen)}"
        if label not in seen:
            seen.add(label)
            out.append((label, meshes, k if req.evaluate_at is not None else None))
    return tuple(out[:RUNNERS_UP])


@register_strategy("search")
def _search(req: PlacementRequest) -> Placed:
    if req.evaluate is None and req.evaluate_at is None:
        raise CompileError("strategy 'search' needs an evaluate function")
    return plan_search(req)
