"""Pass ``decoupled``: decoupled PPO's proximal policy as a node of the train flow.

With ``runtime_args.off_policy.correction == "decoupled"`` and ``max_staleness >= 1``, the
loss compares the trained policy with a *proximal* policy (the trainer's weights before the
optimizer step) rather than with the stale behaviour policy that generated the samples. The
compiler makes that computation explicit: before each ``train_step`` of a policy trainer it
inserts a call of the same trainer's ``proximal_logprobs`` on the same inputs, and the
``train_step`` reads its outputs too. Both runtimes execute it like any other call, and
``flowrl explain`` lists it in the train flow's DAG and ops.

A *policy trainer* is a trainer synced into a model whose rollout call reads the prompts
(the generating policy). The rewrite returns new graphs; the traced ones are not changed.
"""

from __future__ import annotations

from flowrl.config import RuntimeArgs
from flowrl.errors import CompileError
from flowrl.ir import CallNode, FlowGraph

#: The trainer method that computes the proximal policy's log-probs (engineer K's contract).
PROXIMAL_METHOD = "proximal_logprobs"
#: ``CallNode.source`` of inserted nodes: names the pass in the DAG and in errors.
INSERTED_BY = "<compiler pass 'decoupled'>"


def decoupled(args: RuntimeArgs) -> bool:
    """Whether these runtime args ask for decoupled PPO's proximal policy."""
    return args.max_staleness >= 1 and args.off_policy.correction == "decoupled"


def policy_trainers(graphs: dict[str, FlowGraph], sync: list[tuple[str, str]]) -> list[str]:
    """Trainers synced into a model whose rollout call reads the prompts, in sync order."""
    generating = {c.model for c in graphs["rollout"].entry_calls()}
    return list(dict.fromkeys(src for src, dst in sync if dst in generating))


def _check(trainers: list[str], sync: list[tuple[str, str]],
           methods: dict[str, frozenset[str]] | None, k: int) -> None:
    if not trainers:
        raise CompileError(
            f"runtime_args.off_policy.correction is 'decoupled' (max_staleness {k}) but no "
            f"trainer is synced into the rollout's generating model (sync pairs: "
            f"{sync or 'none'}); use correction 'tis' or 'none'")
    for t in trainers:
        if methods is not None and t in methods and PROXIMAL_METHOD not in methods[t]:
            raise CompileError(
                f"trainer '{t}' implements no {PROXIMAL_METHOD}, which "
                f"runtime_args.off_policy.correction 'decoupled' (max_staleness {k}) calls "
                f"before each {t}.train_step for the proximal policy's log-probs "
                f"(models.{t}); implement it or use correction 'tis'")


def insert_proximal_logprobs(graphs: dict[str, FlowGraph], sync: list[tuple[str, str]],
                             args: RuntimeArgs,
                             methods: dict[str, frozenset[str]] | None = None
                             ) -> dict[str, FlowGraph]:
    """``graphs`` with a ``proximal_logprobs`` call before each policy trainer's
    ``train_step`` when :func:`decoupled` (else ``graphs`` itself).

    Raises:
        CompileError: no policy trainer, or one whose class lacks ``proximal_logprobs``
            (``methods``: the flow-callable methods per model, when known).
    """
    if not decoupled(args):
        return graphs
    trainers = policy_trainers(graphs, sync)
    _check(trainers, sync, methods, args.max_staleness)
    train = graphs["train"]
    out = FlowGraph(train.name, outputs=train.outputs, source=train.source)
    for c in train.calls():
        if c.is_train and c.model in trainers:
            suffix = c.id[len(f"{c.model}.{c.method}"):]  # keeps "#k" of repeated calls
            prox = CallNode(f"{c.model}.{PROXIMAL_METHOD}{suffix}", c.model, PROXIMAL_METHOD,
                            c.inputs, None, INSERTED_BY, c.order)
            out.add_call(prox)
            c = CallNode(c.id, c.model, c.method, c.inputs + (prox.id,), c.outputs, c.source,
                         c.order)
        out.add_call(c)
    return {**graphs, "train": out}
