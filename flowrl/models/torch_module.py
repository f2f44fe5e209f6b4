"""``TorchModule``: a module wrapping a ``torch.nn.Module`` (and optionally its optimizer)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from flowrl.errors import FlowRLError
from flowrl.models import lr_schedule
from flowrl.models.base import BaseModule
from flowrl.models.finite import SKIPPED_METRIC, NonFiniteError, first_nonfinite

_ALL_STATE = ("weights", "grads", "optimizer")


class CheckpointMismatchError(FlowRLError):
    """A checkpoint's weights do not fit the module (changed shapes or parameter names)."""


class TorchModule(BaseModule):
    """Set ``self.model`` (and, for trainers, ``self.optimizer`` / ``self.scheduler``) in ``setup``.

    Offload is real: the tensors' storage on the compute device is released and kept in a
    host copy until ``onload`` restores it, so using an offloaded model fails loudly instead
    of silently running from stale memory.
    """

    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._host: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.offload_count = 0
        self.onload_count = 0

    def reset(self) -> None:
        super().reset()
        self.model = self.optimizer = self.scheduler = None
        self._host = {}

    # ---- offload -------------------------------------------------------------------------
    def _state_tensors(self, what: str) -> list[torch.Tensor]:
        """Tensors holding ``what``; for grads, the parameters whose ``.grad`` is set."""
        if what not in _ALL_STATE:
            raise ValueError(f"unknown state '{what}'; expected one of {_ALL_STATE}")
        if self.model is None:
            return []
        params = list(self.model.parameters())
        if what == "weights":
            return params + list(self.model.buffers())
        if what == "grads":
            return [p for p in params if p.grad is not None]
        if self.optimizer is None:
            return []
        return [v for st in self.optimizer.state.values() for v in st.values()
                if isinstance(v, torch.Tensor) and v.dim() > 0]

    def offload(self, what: tuple[str, ...] = _ALL_STATE) -> int:
        """Release ``what`` from the compute device into host memory; returns bytes moved."""
        moved = 0
        for kind in what:
            if kind in self._host:
                continue  # already off
            kept = []
            for t in self._state_tensors(kind):
                src = t.grad if kind == "grads" else t.data
                kept.append((t, src.detach().to("cpu", copy=True)))
                moved += src.numel() * src.element_size()
                if kind == "grads":
                    t.grad = None
                else:
                    t.data = torch.empty(0, dtype=src.dtype, device=src.device)
            self._host[kind] = kept
        if moved:
            self.offload_count += 1
        return moved

    def onload(self, what: tuple[str, ...] = _ALL_STATE) -> int:
        """Bring ``what`` back onto the compute device; returns bytes moved."""
        moved = 0
        # Weights first: a gradient can only be attached to a parameter of its own shape.
        for kind in sorted(what, key=lambda k: _ALL_STATE.index(k) if k in _ALL_STATE else 9):
            for t, host in self._host.pop(kind, []):
                dev = host.to(self.device)
                if kind == "grads":
                    t.grad = dev
                else:
                    t.data = dev
                moved += host.numel() * host.element_size()
        if moved:
            self.onload_count += 1
        return moved

    @property
    def is_offloaded(self) -> bool:
        return bool(self._host)

    @property
    def offloaded_state(self) -> frozenset[str]:
        return frozenset(self._host)

    # ---- training ----------------------------------------------------------------------------
    def optimizer_from_config(self, cls: type[torch.optim.Optimizer] = torch.optim.AdamW,
                              params: Any = None) -> torch.optim.Optimizer:
        """``cls`` (an Adam-family optimizer) over ``params`` (default: ``self.model``'s) with
        ``models.<name>.optim``: lr, betas, eps, weight decay and ``fused`` (see
        :func:`~flowrl.models.lr_schedule.fused_kwargs`). Clip with
        ``self.model_config.optim.grad_clip`` in :meth:`train_micro_batches`. When ``optim``
        sets a schedule (``scheduler``, warm-up), ``self.scheduler`` becomes its ``LambdaLR``
        (:mod:`flowrl.models.lr_schedule`), stepped after each optimizer step."""
        o = self.model_config.optim
        params = list(self.model.parameters() if params is None else params)
        device = next((p.device for p in params if isinstance(p, torch.Tensor)), self.device)
        optimizer = cls(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay,
                        **lr_schedule.fused_kwargs(cls, o.fused, device))
        scheduler = lr_schedule.build_scheduler(optimizer, o, self.runtime_args)
        if scheduler is not None:
            self.scheduler = scheduler
        return optimizer

    def train_micro_batches(self, micro_batches: list[dict],
                            loss_fn: Callable[[dict], tuple[torch.Tensor, dict]],
                            max_grad_norm: float | None = None) -> dict[str, float]:
        """One optimizer step over a global batch given as micro-batches.

        ``loss_fn(mb)`` returns ``(loss, stats)``; gradients are accumulated as the mean over
        micro-batches, clipped to ``max_grad_norm`` (when given), and the optimizer (and
        scheduler, if set) steps once. Returns the micro-batch means of ``loss`` and every
        stat, plus ``grad_norm`` when clipping.
        """
        if self.optimizer is None:
            raise RuntimeError(f"module '{self.name}' has no self.optimizer (set it in setup())")
        if not micro_batches:
            raise ValueError(f"{self.name}: train_micro_batches got no micro-batches")
        n = len(micro_batches)
        self.optimizer.zero_grad(set_to_none=True)
        stats: dict[str, float] = {}
        losses: list[torch.Tensor] = []
        for mb in micro_batches:
            loss, extra = loss_fn(mb)
            (loss / n).backward()
            losses.append(loss.detach())
            for k, v in {"loss": loss, **extra}.items():
                stats[k] = stats.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / n
        if max_grad_norm is not None:
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), max_grad_norm))
        if not self._step_is_finite(torch.stack(losses), stats.get("grad_norm")):
            return {}  # skip_batch: no step, nothing non-finite reaches the metrics
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return stats

    def _step_is_finite(self, losses: torch.Tensor, grad_norm: float | None) -> bool:
        """Check the losses and gradient norm before the optimizer step: on NaN/inf the
        gradients are dropped and, per ``runtime_args.on_nonfinite``, a
        :class:`NonFiniteError` is raised or the step is skipped (and counted)."""
        norm = torch.tensor([grad_norm]) if grad_norm is not None else torch.zeros(1)
        found = first_nonfinite([("loss", losses), ("grad_norm", norm)])
        if found is None:
            return True
        self._drop_gradients()
        key, bad, total = found
        if self.on_nonfinite == "raise":
            raise NonFiniteError(self.name, key, bad, total, "train_step")
        self.log(SKIPPED_METRIC, 1.0, "sum")
        return False

    def _drop_gradients(self) -> None:
        """Forget the gradients of a step that will not be taken (non-finite)."""
        self.optimizer.zero_grad(set_to_none=True)

    # ---- parameter sync and checkpoints --------------------------------------------------
    def named_sync_tensors(self) -> dict[str, torch.Tensor]:
        if self.model is None:
            raise RuntimeError(f"module '{self.name}' has no self.model (set it in setup())")
        return dict(self.model.named_parameters())

    def state_dict_for_checkpoint(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.model is not None:
            state["model"] = self.model.state_dict()
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore weights, optimizer and scheduler. Optimizer hyperparameters follow the
        current config (see :mod:`flowrl.runtime.resume`); what changed is listed in
        ``self.resume_notes``."""
        self.resume_notes: list[str] = []
        if "model" in state and self.model is not None:
            check_shapes(self.name, state["model"], self.model.state_dict())
            self.model.load_state_dict(state["model"])
        if "optimizer" in state and self.optimizer is not None:
            fresh = [{k: v for k, v in g.items() if k != "params"}
                     for g in self.optimizer.param_groups]
            self.optimizer.load_state_dict(state["optimizer"])
            self.resume_notes += self._config_hyperparameters(fresh)
        if "scheduler" in state and self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
            self._rescale_scheduler()

    def _config_hyperparameters(self, fresh: list[dict[str, Any]]) -> list[str]:
        """Put the current config's hyperparameters (the fresh optimizer's) back into the
        loaded param groups; with a scheduler, ``lr`` is its to set and ``initial_lr`` says
        what the config asked for."""
        notes = []
        for i, (group, new) in enumerate(zip(self.optimizer.param_groups, fresh)):
            for key, value in new.items():
                if key == "lr" and "initial_lr" in new:
                    continue  # scheduler-driven: handled through initial_lr
                old = group.get(key)
                if old == value or (torch.is_tensor(old) and torch.equal(old, value)):
                    continue
                if key == "initial_lr" and old:
                    group["lr"] = group["lr"] * value / old
                group[key] = value
                notes.append(f"optimizer group {i} {key}: {old} in the checkpoint -> {value} "
                             f"from the current config")
        return notes

    def _rescale_scheduler(self) -> None:
        base = getattr(self.scheduler, "base_lrs", None)
        if base is not None:
            self.scheduler.base_lrs = [g.get("initial_lr", b) for g, b in
                                       zip(self.optimizer.param_groups, base)]


def check_shapes(model: str, saved: dict[str, torch.Tensor],
                 current: dict[str, torch.Tensor]) -> None:
    """A checkpoint's weights must have this module's names and shapes; the error names the
    model and every parameter that differs (instead of a raw ``load_state_dict`` error)."""
    diffs = [f"{n}: {tuple(saved[n].shape)} in the checkpoint vs {tuple(current[n].shape)} now"
             for n in sorted(set(saved) & set(current))
             if torch.is_tensor(saved[n]) and saved[n].shape != current[n].shape]
    diffs += [f"{n}: missing from the checkpoint" for n in sorted(set(current) - set(saved))]
    diffs += [f"{n}: in the checkpoint, not in the model"
              for n in sorted(set(saved) - set(current))]
    if diffs:
        raise CheckpointMismatchError(
            f"cannot resume model '{model}': its parameters changed since the checkpoint "
            f"(model shapes cannot follow a changed config): " + "; ".join(diffs[:8]))
