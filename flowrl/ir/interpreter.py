"""One way to walk a schedule: :class:`OpInterpreter`, a method per op kind.

Like ``torch.fx.Interpreter``, a subclass says what each kind of op means to it and the
base does the walking and dispatch. The residency check, the timeline estimate and the
offload pass's entry-transfer accounting are interpreters; runtimes are meant to be too::

    class LocalRunner(OpInterpreter):
        def call(self, op, node):      # node: the CallNode of op.node in this role's graph
            return self.modules[op.model].dispatch(node.method, self.inputs_of(node))
        def offload(self, op):         # op.what: ("weights", "grads", "optimizer")
            self.modules[op.model].offload(op.what)
        def onload(self, op):
            self.modules[op.model].onload(op.what)
        def sync(self, op):            # op.src: the trainer, op.model: the destination
            sync_parameters(self.modules[op.src], self.modules[op.model])

    LocalRunner(schedule).run("rollout")

:meth:`OpInterpreter.run` walks one role's op list (``self.role`` and ``self.index`` say
where it is), calling :meth:`begin` first and returning :meth:`end`'s result. Kinds a
subclass does not override go to :meth:`default` (does nothing). An op of an unknown kind is
a :class:`~flowrl.errors.CompileError` naming the role, the op's index and the kind.
"""

from __future__ import annotations

from typing import Any

from flowrl.errors import CompileError
from flowrl.ir.graph import CallNode, FlowGraph
from flowrl.ir.ops import Op
from flowrl.ir.schedule import Schedule

#: op kind -> the interpreter method that handles it
HANDLERS = {"call": "call", "offload": "offload", "onload": "onload", "sync": "sync"}


class OpInterpreter:
    """Walks op lists of a schedule, dispatching each op to the method for its kind.

    Args:
        schedule: the schedule whose ``ops`` and ``graphs`` :meth:`run` reads by default.
        graphs: role -> graph, to look call nodes up in (default: the schedule's).
    """

    def __init__(self, schedule: Schedule | None = None,
                 graphs: dict[str, FlowGraph] | None = None) -> None:
        self.schedule = schedule
        self.graphs = graphs if graphs is not None else (schedule.graphs if schedule else {})
        self.role: str = ""
        self.index = -1

    def run(self, role: str, ops: list[Op] | None = None) -> Any:
        """Run ``ops`` (default: the schedule's ops of ``role``) in order; returns :meth:`end`."""
        if ops is None:
            ops = self.schedule.ops_for(role) if self.schedule is not None else []
        self.role = role
        self.begin(role, ops)
        for i, op in enumerate(ops):
            self.index = i
            self.run_op(op)
        return self.end(role, ops)

    def run_op(self, op: Op) -> Any:
        """Dispatch one op to :meth:`call`, :meth:`offload`, :meth:`onload` or :meth:`sync`."""
        name = HANDLERS.get(op.kind)
        if name is None:
            raise CompileError(f"{self.role} op {self.index}: unknown op kind {op.kind!r} "
                               f"(known: {', '.join(HANDLERS)})")
        if name == "call":
            return self.call(op, self.node(op))
        return getattr(self, name)(op)

    def node(self, op: Op) -> CallNode | None:
        """The call node ``op`` runs, from the current role's graph (None if unknown)."""
        graph = self.graphs.get(self.role)
        if graph is None or op.node is None or op.node not in graph.graph:
            return None
        return graph.call(op.node)

    # ---- hooks a subclass overrides ---------------------------------------------------------
    def begin(self, role: str, ops: list[Op]) -> None:
        """Before the first op of a run."""

    def end(self, role: str, ops: list[Op]) -> Any:
        """After the last op of a run; its result is :meth:`run`'s."""
        return None

    def default(self, op: Op) -> Any:
        """What an op kind the subclass does not handle does: nothing."""
        return None

    def call(self, op: Op, node: CallNode | None) -> Any:
        """Run graph node ``op.node`` of model ``op.model`` (``node``: its CallNode)."""
        return self.default(op)

    def offload(self, op: Op) -> Any:
        """Move state ``op.what`` of ``op.model`` off its devices."""
        return self.default(op)

    def onload(self, op: Op) -> Any:
        """Bring state ``op.what`` of ``op.model`` back onto its devices."""
        return self.default(op)

    def sync(self, op: Op) -> Any:
        """Copy trainer ``op.src``'s weights into inference model ``op.model``."""
        return self.default(op)
