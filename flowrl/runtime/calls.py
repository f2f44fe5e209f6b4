"""The call protocol, once: how every runtime starts modules and runs one call of a flow.

:func:`run_call` seeds the RNG (:func:`call_seed`), invokes ``module.<method>(data,
iteration)``, names failures (:func:`call_failure`), checks the returned dict
(:func:`check_output`), applies the non-finite guard and collects the call's metrics.
:func:`merge_inputs` joins a call's inputs and :func:`setup_modules` starts modules. The
local executor and the Ray worker both call exactly these functions, so a call behaves and
fails the same in every runtime.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import torch

from flowrl.errors import FlowRLError, StageError
from flowrl.ir import FLOW_INPUT, CallNode
from flowrl.models.base import BaseModule
from flowrl.runtime.batch import Batch
from flowrl.runtime.guards import SKIPPED_METRIC, NonFiniteError, check_call_output


class SetupError(FlowRLError):
    """A module's ``setup()`` raised; the message names the model and class, the cause is
    chained."""


@dataclass(frozen=True)
class CallContext:
    """What a call needs from its runtime: the run's seed, the episode (1-based) and the
    ``runtime_args.on_nonfinite`` policy."""

    seed: int
    episode: int
    on_nonfinite: str


@dataclass
class CallOutcome:
    """A call's checked output, its metrics and, when ``on_nonfinite: skip_batch`` dropped a
    rollout batch, why (``"<call id> key '<key>'"``)."""

    out: Any
    metrics: list[tuple[str, float, str]] = field(default_factory=list)
    skipped: str | None = None


def setup_modules(modules: dict[str, BaseModule]) -> None:
    """Every module's ``setup()`` (once); a failure is a :class:`SetupError` naming it."""
    for name, m in modules.items():
        try:
            m.ensure_setup()
        except FlowRLError:
            raise
        except Exception as e:  # name the module; the real cause stays chained
            raise SetupError(f"setup() of model '{name}' ({type(m).__name__}) failed: "
                             f"{type(e).__name__}: {e}") from e


def call_seed(seed: int, node_id: str, iteration: int) -> int:
    """The RNG seed a call runs under: a function of the run's seed, the call and iteration.

    Seeding every call this way makes sampling independent of which process runs the call
    and of what ran before it, so the local and Ray runtimes, and a resumed run, draw the
    same random numbers.
    """
    return (seed * 1_000_003 + zlib.crc32(node_id.encode()) * 7919 + iteration) % (2**63 - 1)


def describe(value: Any) -> str:
    """Short description of a batch for error messages (keys and shapes)."""
    if isinstance(value, list):
        first = f", first: {describe(value[0])}" if value else ""
        return f"list of {len(value)} micro-batches{first}"
    if isinstance(value, dict):
        parts = []
        for k, v in list(value.items())[:12]:
            parts.append(f"{k}:{tuple(v.shape)}" if isinstance(v, torch.Tensor) else
                         f"{k}:{type(v).__name__}")
        return "{" + ", ".join(parts) + (", ..." if len(value) > 12 else "") + "}"
    return type(value).__name__


def _merge_per_micro_batch(call: CallNode, parts: list[tuple[str, Any]]) -> list | None:
    """A train step's micro-batch list merged with the outputs of calls that map it (e.g.
    the ``proximal_logprobs`` call the compiler's ``decoupled`` pass inserts): each such
    output holds one value per micro-batch under every key. ``None`` when not that case."""
    lists = [v for _, v in parts if isinstance(v, list)]
    if len(lists) != 1 or not all(isinstance(mb, dict) for mb in lists[0]):
        return None
    n = len(lists[0])
    if not all(isinstance(v, list) or (isinstance(v, dict) and all(
            isinstance(x, (list, tuple)) and len(x) == n for x in v.values()))
            for _, v in parts):
        return None
    return [merge_inputs(call, [(s, v[i] if isinstance(v, list) else
                                 {k: x[i] for k, x in v.items()}) for s, v in parts])
            for i in range(n)]


def merge_inputs(call: CallNode, parts: list[tuple[str, Any]]) -> Any:
    """The data a call receives from its sources (``(source id, value)``, in ``call.inputs``
    order): a single source's value as is, several sources' dicts merged into one batch."""
    if len(parts) == 1:
        return parts[0][1]
    per_mb = _merge_per_micro_batch(call, parts)
    if per_mb is not None:
        return per_mb
    if any(not isinstance(v, dict) for _, v in parts):
        raise StageError(
            f"{call.id} at {call.source} takes several inputs, so each must be a dict; got "
            + ", ".join(f"{s}: {describe(v)}" for s, v in parts))
    labels = [("the flow's input batch" if s == FLOW_INPUT else s, v) for s, v in parts]
    return Batch.merge(labels, f"the inputs of {call.id} at {call.source}")


def check_output(node: str, out: Any, is_train: bool, declared: list[str] | None) -> Any:
    """A step's return value, checked: a dict (train_step: None or a dict of metrics) whose
    keys match its ``@outputs`` declaration."""
    if is_train:
        if out is not None and not isinstance(out, dict):
            raise StageError(f"{node} returned {type(out).__name__}; train_step returns None or "
                             f"a dict of metrics")
        return out or {}
    if not isinstance(out, dict):
        raise StageError(f"{node} returned {type(out).__name__}; a step method returns a dict "
                         f"of new keys")
    if declared is not None and sorted(out) != declared:
        raise StageError(f"{node} returned keys {sorted(out)} but declared @outputs"
                         f"{tuple(declared)}; make them agree")
    return out


def call_metrics(model: str, logged: list[tuple[str, float, str]], out: Any,
                 is_train: bool) -> list[tuple[str, float, str]]:
    """Metrics of one call: what the module logged, plus a train_step's returned dict."""
    entries = [(f"{model}/{n}", v, r) for n, v, r in logged]
    if is_train:
        entries += [(f"{model}/{k}", float(v), "mean") for k, v in out.items()]
    return entries


def call_failure(call: CallNode, module: Any, episode: int, iteration: int, data: Any,
                 error: BaseException) -> StageError:
    """The error for a call that raised, the same in every runtime: call id, model,
    class.method, episode (1-based), iteration, call site, input and the real cause."""
    return StageError(
        f"{call.id} failed (model '{call.model}', {type(module).__name__}.{call.method}, "
        f"episode {episode}, iteration {iteration}, called at {call.source}) on input "
        f"{describe(data)}: {type(error).__name__}: {error}")


def run_call(module: BaseModule, call: CallNode, data: Any, iteration: int,
             ctx: CallContext) -> CallOutcome:
    """Run ``call`` on ``module`` with ``data``: seeded, checked, guarded, with metrics."""
    torch.manual_seed(call_seed(ctx.seed, call.id, iteration))
    try:
        out = getattr(module, call.method)(data, iteration)
    except NonFiniteError as e:  # found inside the module: add the call site
        raise e.located(call.method, ctx.episode, iteration) from None
    except FlowRLError:
        raise
    except Exception as e:  # keep the real cause, add where it happened
        raise call_failure(call, module, ctx.episode, iteration, data, e) from e
    out = check_output(call.id, out, call.is_train,
                       sorted(call.outputs) if call.outputs is not None else None)
    bad = check_call_output(call.model, call.method, out, call.is_train, ctx.on_nonfinite,
                            ctx.episode, iteration)
    logged = module.drain_logged()
    outcome = CallOutcome(out)
    if bad is not None:  # skip_batch: count it and keep NaN out of the metrics/buffer
        outcome.metrics.append((f"{call.model}/{SKIPPED_METRIC}", 1.0, "sum"))
        if call.is_train:  # the sync refuses non-finite weights if the step went ahead
            outcome.out = {k: v for k, v in out.items() if k != bad}
        else:  # a rollout batch: the rest of the flow is skipped and the batch dropped
            outcome.skipped = f"{call.id} key '{bad}'"
    outcome.metrics.extend(call_metrics(call.model, logged, outcome.out, call.is_train))
    return outcome
