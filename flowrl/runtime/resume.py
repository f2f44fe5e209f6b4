"""What a resume compares: the config a checkpoint was written under vs the current one.

Checkpoints record the whole config (model sections and ``runtime_args``) as JSON. On resume
every difference is printed. The rule for what wins:

- **Config wins** for everything the engine and modules read at run time (batch sizes,
  episode counts, model ``args``), and for **optimizer hyperparameters** (``lr``, ``betas``,
  ``eps``, ``weight_decay`` ...): :meth:`TorchModule.load_checkpoint_state` loads the
  optimizer's moments and step counts, then puts back every param-group hyperparameter the
  freshly built optimizer (from the current config) sets differently, and prints each one.
  With an LR scheduler the scheduler's position is kept and its base LR rescaled.
- **The checkpoint wins** for weights, optimizer moments, RNG streams, data position and the
  replay buffer (that is what continuing a run means).
- **Cannot be honoured**: a changed parameter shape; the error names model and parameter.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import torch

from flowrl.config import FlowRLConfig

#: differences that are expected between a run and its resumption
_IGNORED = {"runtime_args.resume", "runtime_args.num_episode", "runtime_args.progress"}


def config_record(config: FlowRLConfig) -> str:
    """The config as JSON text (a checkpoint part: ``weights_only`` loads plain strings)."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


def config_changes(saved: str | None, current: FlowRLConfig) -> list[str]:
    """One line per setting that differs between the checkpoint's config and ``current``."""
    if not saved:
        return ["the checkpoint records no config (written by an older flowrl); not compared"]
    try:
        old = _flat(json.loads(saved))
    except (TypeError, ValueError):
        return ["the checkpoint's recorded config is unreadable; not compared"]
    new = _flat(json.loads(config_record(current)))
    lines = []
    for key in sorted(set(old) | set(new)):
        if key in _IGNORED or old.get(key) == new.get(key):
            continue
        lines.append(f"config {key}: {old.get(key, '<unset>')!r} in the checkpoint, now "
                     f"{new.get(key, '<unset>')!r} (the current config is used)")
    return lines


def flat_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nested state (dicts, lists) with a dotted path naming it."""
    if isinstance(obj, torch.Tensor):
        yield prefix or "<tensor>", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from flat_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flat_tensors(v, f"{prefix}[{i}]")
