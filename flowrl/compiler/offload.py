"""Pass 4, ``offload``: insert offload/onload ops so every device stays under capacity.

Residency is planned over one iteration (the moments of rollout, train, sync and eval in
episode order, cyclically: the next iteration follows) by simulation:

1. before each op, state whose policy forces offloading (``weights``/``optimizer``/``all``)
   and that the op does not need is offloaded; what the op needs is onloaded;
2. while a device of the op would overflow, evict movable resident state (policy ``auto``, or
   a forced kind), cheapest first: state the current role needs again (it repeats) would be
   reloaded on every run of the role, other state once per iteration, so evict the latter
   first; among equals, the state next needed furthest in the future (Belady's rule), then the
   larger. Then put back any evicted state that fits after all (a big eviction can make
   earlier small ones pointless). Nothing movable left: ``OutOfMemoryAtCompileError`` naming
   the device, the moment and the resident models;
3. a ``train_step`` (or a sync, which must find both models fully onloaded) that cannot
   fit even with everything else off its devices streams the optimizer state it needs
   through the device in chunks (ZeRO-Offload style), if the policy lets the optimizer move
   (``auto``, ``optimizer``, ``all``): ``onload``/``offload`` ops marked ``streamed`` around
   the op, one chunk counted on the device;
4. offloaded state must fit its node's host RAM at every moment
   (:mod:`flowrl.compiler.host_memory`); else a ``HostMemoryError``.

The simulation runs twice round the cycle and keeps the second (steady-state) pass; a role
that repeats appears twice in a row in the cycle, so its kept plan is the one for a repeat.

Repetition: rollout and train run many times per episode, and eval follows some episodes,
so each role's op list begins with *entry* ops that bring any state the role can be entered
in (the exit state of every role that may precede it, and for rollout also "everything
resident", the state right after setup) to the role's planned entry state: offload first,
then onload. Offload and onload are idempotent (an already-offloaded state moves 0 bytes),
so entry ops that do not apply cost nothing.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from flowrl.compiler.host_memory import check_host_memory
from flowrl.compiler.memory import Key, MemoryModel, Moment
from flowrl.compiler.resources import STATE_KINDS, ModelResources, fmt_bytes, forced_kinds
from flowrl.errors import OutOfMemoryAtCompileError
from flowrl.ir import Op, OpInterpreter
from flowrl.ir.episode import ALL_RESIDENT

#: Device bytes a streamed optimizer step holds at once.
STREAM_CHUNK = 1_000_000_000


@dataclass
class OffloadPlan:
    """Untimed op lists and the residency they produce."""

    ops: dict[str, list[Op]]
    residency: list[frozenset[Key]]  # per moment
    after: list[list[int]]  # per moment, per device
    peak_after: list[int]
    moment_index: list[int]  # moment -> index of its op in ops[role]
    #: moment -> {optimizer state key: chunk bytes per device} streamed through that op
    streamed: dict[int, dict[Key, int]] = field(default_factory=dict)
    entry_ops: dict[str, int] = field(default_factory=dict)  # role -> number of entry ops
    exit_state: dict[str, frozenset[Key]] = field(default_factory=dict)
    predecessors: dict[str, list[str]] = field(default_factory=dict)
    host_after: list[list[int]] = field(default_factory=list)  # per moment, per node


def _next_use(uses: list[int], t: int, n: int) -> int:
    if not uses:
        return 2 * n
    i = bisect.bisect_right(uses, t)
    return uses[i] - t if i < len(uses) else uses[0] + n - t


def _oom(mem: MemoryModel, mom: Moment, state: set[Key], use: list[int], device: int,
         resources: dict[str, ModelResources]) -> OutOfMemoryAtCompileError:
    by_model: dict[str, list[str]] = {}
    for m, k in mem.items:  # config order, kinds in canonical order
        if (m, k) in state and device in mem.items[(m, k)].devices:
            by_model.setdefault(m, []).append(f"{k} {fmt_bytes(mem.items[(m, k)].per_device)}")
    resident = "; ".join(f"{m} (offload: {resources[m].offload}; {', '.join(ks)})"
                         for m, ks in by_model.items())
    pinned = list(dict.fromkeys(m for m, k in mem.items if (m, k) in state
                                and (m, k) not in mom.need
                                and device in mem.items[(m, k)].devices
                                and not resources[m].offloadable(k)))
    hint = (f"Models {', '.join(pinned)} may not be offloaded (their offload policy): set "
            f"offload: auto on them, or " if pinned else "The op alone does not fit: ")
    return OutOfMemoryAtCompileError(
        f"out of memory at compile time on device {device} at {mom.role} op "
        f"'{mom.op.label()}': needs {fmt_bytes(use[device])} but the device holds "
        f"{fmt_bytes(mem.capacity)}; resident models: {resident}; the op's working memory "
        f"{fmt_bytes(mom.transient.get(device, 0))}. {hint}give the model more devices "
        f"(tensor/pipeline/data parallel size) or use smaller batches / sequences")


def _stream_decisions(mem: MemoryModel, movable: set[Key]) -> dict[int, dict[Key, int]]:
    pinned = {k for k in mem.items if k not in movable}
    out: dict[int, dict[Key, int]] = {}
    for t, mom in enumerate(mem.moments):
        keys = [k for k in sorted(mom.need) if k[1] == "optimizer" and k in movable]
        if not keys:
            continue
        minimal = mem.usage(pinned | mom.need, mom)
        devices = {d for k in mom.need for d in mem.items[k].devices}
        if any(minimal[d] > mem.capacity for d in devices):
            out[t] = {k: min(STREAM_CHUNK, mem.items[k].per_device) for k in keys}
    return out


def _chunks(mem: MemoryModel, streamed: dict[Key, int] | None) -> dict[int, int] | None:
    """Per-device bytes of the chunks streamed through one op."""
    if not streamed:
        return None
    extra: dict[int, int] = {}
    for k, b in streamed.items():
        for d in mem.items[k].devices:
            extra[d] = extra.get(d, 0) + b
    return extra


class _Simulation:
    """Residency over the cyclic moment sequence (see the module docstring, steps 1-2)."""

    def __init__(self, mem: MemoryModel, resources: dict[str, ModelResources],
                 movable: set[Key], forced: set[Key], streamed: dict[int, dict[Key, int]]):
        self.mem, self.resources, self.movable, self.forced = mem, resources, movable, forced
        self.streamed = streamed
        self.order = {k: i for i, k in enumerate(mem.items)}  # deterministic tie-breaks
        self.needs = [frozenset(mom.need - set(streamed.get(t, ())))
                      for t, mom in enumerate(mem.moments)]
        # A role that repeats runs twice in the simulated sequence, so the plan kept is one
        # that follows a run of the same role: repeats then cost only what the plan moves.
        self.seq: list[int] = []
        for role in mem.roles:
            ts = [t for t, m in enumerate(mem.moments) if m.role == role]
            self.seq += ts * (2 if mem.repeats.get(role, 1) > 1 else 1)
        self.uses: dict[Key, list[int]] = {k: [] for k in mem.items}  # positions in seq
        for p, t in enumerate(self.seq):
            for k in self.needs[t]:
                self.uses[k].append(p)
        self.role_uses: dict[tuple[str, Key], list[int]] = {}
        for t, need in enumerate(self.needs):
            for k in need:
                self.role_uses.setdefault((mem.moments[t].role, k), []).append(t)
        self.state = set(mem.items)
        self.held = mem.usage(self.state, None)  # bytes per device of ``state``, kept current

    def reloads(self, k: Key, t: int) -> int:
        """Times per iteration ``k`` must come back if evicted at moment ``t``."""
        role = self.mem.moments[t].role
        again = self.role_uses.get((role, k), [])
        if again and (again[-1] > t or self.mem.repeats.get(role, 1) > 1):
            return self.mem.repeats.get(role, 1)
        return 1

    def rank(self, k: Key, t: int, p: int) -> tuple:
        return (-self.reloads(k, t), _next_use(self.uses[k], p, len(self.seq)),
                self.mem.items[k].per_device, -self.order[k])

    def _move(self, keys, sign: int) -> None:
        for k in keys:
            if (k in self.state) == (sign < 0):
                (self.state.remove if sign < 0 else self.state.add)(k)
                it = self.mem.items[k]
                for d in it.devices:
                    self.held[d] += sign * it.per_device

    def _evict(self, t: int, p: int, use: list[int]) -> list[Key]:
        """Evict movable state, best victim first, until the moment fits; else OOM."""
        mem, victims = self.mem, []
        # Ranks do not change within a moment: walk the candidates once, best first.
        cands = sorted((k for k in self.state if k not in self.needs[t] and k in self.movable),
                       key=lambda k: self.rank(k, t, p), reverse=True)
        for k in cands:
            if max(use) <= mem.capacity:
                break
            it = mem.items[k]
            if any(use[d] > mem.capacity for d in it.devices):
                self._move([k], -1)
                victims.append(k)
                for d in it.devices:
                    use[d] -= it.per_device
        if max(use) > mem.capacity:
            over = [d for d, u in enumerate(use) if u > mem.capacity]
            raise _oom(mem, mem.moments[t], self.state, use, max(over, key=lambda d: use[d]),
                       self.resources)
        return victims

    def step(self, p: int, t: int) -> frozenset[Key]:
        """Residency while moment ``t`` (at position ``p`` of the sequence) runs."""
        mem, need = self.mem, self.needs[t]
        self._move([k for k in self.forced if k not in need], -1)
        self._move(self.streamed.get(t, ()), -1)
        self._move(need, +1)
        use = list(self.held)
        for extra in (mem.moments[t].transient, _chunks(mem, self.streamed.get(t)) or {}):
            for d, b in extra.items():
                use[d] += b
        victims = self._evict(t, p, use) if max(use) > mem.capacity else []
        # Put back evictions that fit after all (keep-first: reverse of eviction preference).
        for k in sorted(victims[:-1], key=lambda k: self.rank(k, t, p)):
            it = mem.items[k]
            if all(use[d] + it.per_device <= mem.capacity for d in it.devices):
                self._move([k], +1)
                for d in it.devices:
                    use[d] += it.per_device
        return frozenset(self.state)


def _simulate(mem: MemoryModel, resources: dict[str, ModelResources], movable: set[Key],
              forced: set[Key], streamed: dict[int, dict[Key, int]]) -> list[frozenset[Key]]:
    """Per moment, the state resident in the steady state (second pass round the cycle)."""
    sim = _Simulation(mem, resources, movable, forced, streamed)
    residency: list[frozenset[Key]] = [frozenset()] * len(mem.moments)
    for _ in range(2):
        for p, t in enumerate(sim.seq):
            residency[t] = sim.step(p, t)
    return residency


def _transfer_ops(kind: str, keys: set[Key], mem: MemoryModel, model_order: list[str],
                  moved: set[Key] | None = None) -> list[Op]:
    """One op per model (kinds in canonical order); ``moved``: keys that really move (bytes)."""
    ops = []
    if not keys:
        return ops
    models = {m for m, _ in keys}
    for m in model_order:
        if m not in models:
            continue
        what = tuple(k for k in STATE_KINDS if (m, k) in keys)
        if what:
            counted = [(m, k) for k in what if moved is None or (m, k) in moved]
            ops.append(Op(kind, m, what=what, devices=mem.items[(m, what[0])].devices,
                          bytes=sum(mem.items[key].total for key in counted)))
    return ops


class _EntryBytes(OpInterpreter):
    """Bytes each entry transfer moves from a given state (offload/onload are idempotent:
    offloading what is already off moves nothing)."""

    def __init__(self, mem: MemoryModel, entered_from: frozenset[Key]) -> None:
        super().__init__()
        self.mem, self.state = mem, entered_from

    def begin(self, role: str, ops: list[Op]) -> None:
        self.moved: list[int] = []

    def end(self, role: str, ops: list[Op]) -> list[int]:
        return self.moved

    def _bytes(self, op: Op, present: bool) -> None:
        keys = [(op.model, k) for k in op.what]
        self.moved.append(sum(self.mem.items[k].total for k in keys
                              if (k in self.state) == present))

    def offload(self, op: Op) -> None:
        self._bytes(op, present=True)

    def onload(self, op: Op) -> None:
        self._bytes(op, present=False)


def entry_transfer_bytes(plan: OffloadPlan, mem: MemoryModel, role: str,
                         entered_from: frozenset[Key]) -> list[int]:
    """Bytes each entry op of ``role`` moves when the role starts in state ``entered_from``."""
    entry = plan.ops[role][:plan.entry_ops.get(role, 0)]
    return _EntryBytes(mem, entered_from).run(role, entry)


def offload(mem: MemoryModel, resources: dict[str, ModelResources]) -> OffloadPlan:
    """Plan residency and build each role's op list (calls, syncs and transfers, untimed)."""
    movable = {k for k in mem.items if resources[k[0]].offloadable(k[1])}
    forced = {k for k in mem.items if k[1] in forced_kinds(resources[k[0]].offload)}
    streamed = _stream_decisions(mem, movable)
    residency = _simulate(mem, resources, movable, forced, streamed)
    host_after = check_host_memory(mem, residency)
    models = list(resources)
    everything = frozenset(mem.items)
    by_role: dict[str, list[int]] = {r: [] for r in mem.roles}
    for t, mom in enumerate(mem.moments):
        by_role[mom.role].append(t)
    preds = mem.episode.predecessors()
    exit_state: dict[str, frozenset[Key]] = {ALL_RESIDENT: everything}
    # Episode order; a role without ops (no sync pairs) leaves the state as it found it.
    prev = residency[-1] if residency else everything
    for role in mem.roles:
        ts = by_role[role]
        exit_state[role] = residency[ts[-1]] if ts else prev
        prev = exit_state[role]
    plan = OffloadPlan({}, residency, [], [], [0] * len(mem.moments), streamed,
                       predecessors=preds, host_after=host_after)
    for role in mem.roles:
        ts = by_role[role]
        ops: list[Op] = []
        if ts:
            entry = residency[ts[0]]
            pred_states = [exit_state[p] for p in preds[role]]
            off = set().union(*(s - entry for s in pred_states))
            on = set().union(*(entry - s for s in pred_states))
            usual = pred_states[0]
            ops += _transfer_ops("offload", off, mem, models, off & usual)
            ops += _transfer_ops("onload", on, mem, models, on - usual)
        plan.entry_ops[role] = len(ops)
        for i, t in enumerate(ts):
            mom = mem.moments[t]
            if i:
                before, now = residency[ts[i - 1]], residency[t]
                ops += _transfer_ops("offload", set(before - now), mem, models)
                ops += _transfer_ops("onload", set(now - before), mem, models)
            keys = set(streamed.get(t, ()))
            for op in _transfer_ops("onload", keys, mem, models):
                op.streamed = True
                ops.append(op)
            plan.moment_index[t] = len(ops)
            ops.append(mom.op)
            for op in _transfer_ops("offload", keys, mem, models):
                op.streamed = True
                ops.append(op)
        plan.ops[role] = ops
    plan.exit_state = {r: s for r, s in exit_state.items() if r != ALL_RESIDENT}
    for t, mom in enumerate(mem.moments):
        plan.after.append(mem.usage(residency[t], mom, _chunks(mem, streamed.get(t))))
    plan.peak_after = [max((u[d] for u in plan.after), default=0) for d in range(mem.num_devices)]
    return plan
