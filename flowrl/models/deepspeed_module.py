"""``DeepSpeedModule``: a trainer under ``deepspeed.initialize`` (extra: ``flowrl[deepspeed]``).

The subclass builds the ``torch.nn.Module`` (and, optionally, its torch optimizer); flowrl
wraps them with ``deepspeed.initialize`` using the model's config:

* ``models.<name>.dtype``: ``bf16`` or ``fp32`` (``fp16`` too, with dynamic loss scaling;
  default: the checkpoint's ``torch_dtype`` from ``model_path``, else bf16);
* ``models.<name>.optim``: AdamW's lr / betas / eps / weight decay; ``optim.grad_clip`` ->
  ``gradient_clipping``;
* ``models.<name>.args`` (:class:`DeepSpeedArgs`): ``zero_stage`` 0-3 (default 0),
  ``ds_config`` (any further DeepSpeed config keys, merged last), ``init_seed``;
* ``runtime_args.train_global_batch_size`` / ``train_micro_batch_size``: DeepSpeed's
  ``train_batch_size`` / ``train_micro_batch_size_per_gpu`` (gradient accumulation follows).

On a machine without CUDA, DeepSpeed runs on its CPU accelerator over gloo (set up here:
``DS_ACCELERATOR=cpu``; install with ``DS_BUILD_OPS=0``). Under ZeRO-3 the parameters are
partitioned, so :meth:`named_sync_tensors` and checkpoints gather full tensors first
(``deepspeed.zero.GatheredParameters``).

>>> class PolicyTrainer(DeepSpeedModule):
...     def build_model(self):
...         return load_causal_lm(self.model_config.model_path)
...     def train_step(self, data, iteration):
...         return self.train_micro_batches(data, lambda engine, mb: my_loss(engine, mb))
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from typing import Any, Literal

import torch
from torch import nn

from flowrl.models._extras import require
from flowrl.models.args import ModuleArgs
from flowrl.models.torch_module import TorchModule

_DS_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def deepspeed():
    """Import deepspeed (CPU accelerator when there is no CUDA), or MissingExtraError."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return require("deepspeed", "deepspeed", "DeepSpeedModule")


def init_distributed_single_process(port: int | None = None) -> None:
    """Make a one-process torch.distributed world (gloo on CPU) when none exists yet."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port or _free_port()), "RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    for k, v in env.items():
        os.environ.setdefault(k, v)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DeepSpeedArgs(ModuleArgs):
    """``models.<name>.args`` of a :class:`DeepSpeedModule` (subclasses extend it)."""

    zero_stage: Literal[0, 1, 2, 3] = 0
    ds_config: dict[str, Any] = {}  # further DeepSpeed config keys, merged last
    init_seed: int | None = None  # seeds build_model (default runtime_args.seed)


class DeepSpeedModule(TorchModule):
    """A trainer whose model and optimizer live in a ``DeepSpeedEngine``.

    Override :meth:`build_model` (and optionally :meth:`build_optimizer`) and write
    ``train_step`` with :meth:`train_micro_batches`. ``self.model`` is the engine's module
    (the plain ``nn.Module``), ``self.engine`` the ``DeepSpeedEngine``.
    """

    Args = DeepSpeedArgs
    engine: Any = None

    def __init__(self, name: str) -> None:
        deepspeed()  # before registering the name: a missing library ->
        # MissingExtraError naming flowrl[deepspeed], now
        super().__init__(name)

    # ---- what subclasses provide ---------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} ('{self.name}') must implement "
                                  f"build_model() returning a torch.nn.Module")

    def build_optimizer(self, params) -> torch.optim.Optimizer:
        """AdamW with ``models.<name>.optim`` (override for another optimizer)."""
        return self.optimizer_from_config(torch.optim.AdamW, params)

    # ---- config -------------------------------------------------------------------------
    @property
    def zero_stage(self) -> int:
        return self.typed_args.zero_stage

    @property
    def dtype_name(self) -> str:
        return self.model_config.weights_dtype

    def ds_config(self, world_size: int = 1) -> dict[str, Any]:
        """The DeepSpeed config this module runs with (``args.ds_config`` merged last)."""
        ra, a = self.runtime_args, self.typed_args
        micro, glob = ra.train_micro_batch_size, ra.train_global_batch_size
        if glob % (micro * world_size):
            raise ValueError(
                f"{self.name}: train_global_batch_size={glob} is not a multiple of "
                f"train_micro_batch_size={micro} x world size {world_size}")
        dt = self.dtype_name
        cfg: dict[str, Any] = {
            "train_batch_size": glob,
            "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": glob // (micro * world_size),
            "zero_optimization": {"stage": self.zero_stage},
            "bf16": {"enabled": dt == "bf16"},
            "fp16": {"enabled": dt == "fp16"},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 2 ** 31 - 1,
            "wall_clock_breakdown": False,
        }
        if self.model_config.optim.grad_clip is not None:
            cfg["gradient_clipping"] = float(self.model_config.optim.grad_clip)
        return _merge(cfg, a.ds_config)

    # ---- life cycle ---------------------------------------------------------------------
    def setup(self) -> None:
        ds = deepspeed()
        if not torch.distributed.is_initialized():
            init_distributed_single_process()
            ds.init_distributed(dist_backend="gloo" if not torch.cuda.is_available() else "nccl")
        world = torch.distributed.get_world_size()
        config = self.ds_config(world)
        with torch.random.fork_rng():
            seed = self.typed_args.init_seed
            torch.manual_seed(self.runtime_args.seed if seed is None else seed)
            module = self.build_model()
        optimizer = self.build_optimizer(module.parameters())
        self.engine, self.optimizer, _, self.scheduler = ds.initialize(
            model=module, optimizer=optimizer, config=config,
            lr_scheduler=self.scheduler)  # optim's schedule; DeepSpeed steps it
        self.model = self.engine.module
        self.device = self.engine.device if isinstance(self.engine.device, torch.device) \
            else torch.device(self.engine.device)

    @property
    def compute_dtype(self) -> torch.dtype:
        return _DS_DTYPES[self.dtype_name]

    def train_micro_batches(self, micro_batches: list[dict],
                            loss_fn: Callable[[Any, dict], tuple[torch.Tensor, dict]]) -> dict:
        """Forward/backward each micro-batch through the engine and step once per global batch.

        ``loss_fn(engine, mb)`` returns ``(loss, stats)`` and must run the forward pass through
        ``engine`` (the ``DeepSpeedEngine``, called like the module), not ``self.model``:
        ``engine.forward`` is where ZeRO-3 counts micro-steps, and bypassing it makes ZeRO-3
        keep only the last micro-batch's gradient. DeepSpeed scales the loss by the gradient
        accumulation steps and steps the optimizer at the accumulation boundary. Returns the
        mean loss and stats, the grad norm and the optimizer step count.
        """
        gas = self.engine.gradient_accumulation_steps()
        if len(micro_batches) != gas:
            raise ValueError(
                f"{self.name}: got {len(micro_batches)} micro-batches but DeepSpeed was set up "
                f"for gradient_accumulation_steps={gas} (train_global_batch_size / "
                f"train_micro_batch_size / world size)")
        stats: dict[str, float] = {}
        losses: list[torch.Tensor] = []
        finite = True
        for i, mb in enumerate(micro_batches):
            loss, s = loss_fn(self.engine, mb)
            self.engine.backward(loss)
            losses.append(loss.detach().float().reshape(()))
            # the last step() is the optimizer step: TorchModule's non-finite check first.
            # DeepSpeed cannot skip that step, so skip_batch runs it on zeroed gradients
            # with lr 0: the weights stay as they are.
            if i == gas - 1:
                finite = self._step_is_finite(torch.stack(losses), None)
            with self._frozen_weights(not finite):
                self.engine.step()
            for k, v in {"loss": loss, **s}.items():
                stats[k] = stats.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / gas
        if not finite:
            return {}  # skip_batch: counted by _step_is_finite, no NaN in the metrics
        norm = self.engine.get_global_grad_norm()
        if norm is not None:
            stats["grad_norm"] = float(norm)
        stats["optimizer_steps"] = float(self.engine.global_steps)
        return stats

    def _drop_gradients(self) -> None:
        """Zero (in place: DeepSpeed's step expects them) the gradients of a skipped step."""
        for p in self.engine.module.parameters():
            if p.grad is not None:
                p.grad.zero_()

    @contextmanager
    def _frozen_weights(self, frozen: bool):
        """While ``frozen``, every param group's learning rate is 0 (no update, no decay)."""
        groups = self.engine.optimizer.param_groups if frozen else []
        saved = [g["lr"] for g in groups]
        for g in groups:
            g["lr"] = 0.0
        try:
            yield
        finally:
            for g, lr in zip(groups, saved):
                g["lr"] = lr

    # ---- ZeRO-3 aware state access ------------------------------------------------------
    def gathered(self, params=None, modifier_rank: int | None = None):
        """Context in which (all, or ``params``) ZeRO-3 parameters hold their full tensors."""
        if self.zero_stage != 3:
            return nullcontext()
        ds = deepspeed()
        params = list(self.model.parameters()) if params is None else list(params)
        return ds.zero.GatheredParameters(params, modifier_rank=modifier_rank)

    @torch.no_grad()
    def named_sync_tensors(self) -> dict[str, torch.Tensor]:
        """Full parameters by name. Under ZeRO-3 these are gathered *copies* (a sync source);
        under stages 0-2 they are the module's own parameters."""
        if self.model is None:
            raise RuntimeError(f"module '{self.name}' is not set up")
        if self.zero_stage != 3:
            return {n: p.detach() for n, p in self.model.named_parameters()}
        out = {}
        for n, p in self.model.named_parameters():  # one at a time: peak = one full tensor
            with self.gathered([p]):
                out[n] = p.data.detach().clone()
        return out

    @torch.no_grad()
    def load_synced(self, tensors: dict[str, torch.Tensor]) -> int:
        """Write full tensors into the (possibly partitioned) parameters; returns bytes."""
        moved = 0
        for n, p in self.model.named_parameters():
            if n not in tensors:
                raise KeyError(f"{self.name}: no tensor named {n!r} to load")
            with self.gathered([p], modifier_rank=0):
                p.data.copy_(tensors[n].to(p.dtype))
            moved += tensors[n].numel() * p.element_size()
        return moved

    def state_dict_for_checkpoint(self) -> dict[str, Any]:
        state: dict[str, Any] = {"model": {n: t.to("cpu", copy=True)
                                           for n, t in self.named_sync_tensors().items()}}
        if self.zero_stage == 0 and self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        state["global_steps"] = self.engine.global_steps
        return state

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        if "model" in state:
            self.load_synced(state["model"])
        if "optimizer" in state and self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if "global_steps" in state:
            self.engine.global_steps = state["global_steps"]

    # ---- offload ------------------------------------------------------------------------
    def offload(self, what: tuple[str, ...] = ("weights", "grads", "optimizer")) -> int:
        """On GPU with ZeRO-3: ``engine.offload_states()`` (DeepSpeed moves its own flat
        buffers). On CPU the states already live in host memory: nothing moves (0 bytes).
        Other stages keep their flat buffers in place (swapping ``.data`` would break the
        views ZeRO-1/2 hold), so they report 0 too."""
        if self.engine is None or self.device.type == "cpu" or self.zero_stage != 3:
            return 0
        nbytes = _state_bytes(self.engine)
        self.engine.offload_states()
        self._ds_offloaded = True
        return nbytes

    def onload(self, what: tuple[str, ...] = ("weights", "grads", "optimizer")) -> int:
        if not getattr(self, "_ds_offloaded", False):
            return 0
        self.engine.reload_states()
        self._ds_offloaded = False
        return _state_bytes(self.engine)

    @property
    def is_offloaded(self) -> bool:
        return bool(getattr(self, "_ds_offloaded", False))

    @property
    def offloaded_state(self) -> frozenset[str]:
        return frozenset(("weights", "grads", "optimizer")) if self.is_offloaded else frozenset()


def _state_bytes(engine) -> int:
    return sum(p.ds_numel * p.element_size() if hasattr(p, "ds_numel") else
               p.numel() * p.element_size() for p in engine.module.parameters())


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
