"""Trainer backends of the built-in trainers: plain Hugging Face/torch, DeepSpeed, Megatron.

A built-in trainer writes its loss once, as a mixin, against three methods a backend gives:

* ``run_micro_batches(data, loss_fn)``: one optimizer step over the micro-batches;
  ``loss_fn(model, mb) -> (loss, stats)`` must run its forward pass through ``model`` (the
  HF model, the DeepSpeed engine or the Megatron GPT);
* ``token_logprobs(model, tokens, mask, prompt_len, return_entropy=False, temperature=None)``:
  log-probs (and entropies) of the tokens after ``prompt_len``, ``[B, N]``, at the Policy's
  temperature unless given;
* ``token_logits(model, tokens, mask)``: the logits ``[B, T, V]`` of whole sequences;
* ``token_values(model, tokens, mask, prompt_len)``: a value head's ``V(s_t)``, ``[B, N]``.

The backend is ``models.<name>.args.backend``; the class is chosen when the trainer is
constructed (``flowrl.init`` must have loaded the config by then, as for every module that
depends on its section) and checked again at ``setup``.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from torch import nn

from flowrl import kernels
from flowrl.errors import ConfigError
from flowrl.models import hf
from flowrl.models.args import ModuleArgs
from flowrl.models.builtin.policy import logprob_temperature
from flowrl.models.builtin.inference import full_sequence  # noqa: F401 (trainers import it from here)
from flowrl.models.hf import HFArgs, HFModule

Backend = Literal["hf", "deepspeed", "megatron"]
BACKENDS: tuple[str, ...] = ("hf", "deepspeed", "megatron")
LossFn = Callable[[Any, dict], tuple[torch.Tensor, dict]]


class BackendArgs(ModuleArgs):
    """The backend choice every built-in trainer's ``Args`` starts with."""

    backend: Backend = "hf"




def configured_backend(name: str, allowed: tuple[str, ...], role: str) -> str:
    """``models.<name>.args.backend`` of the active config (``hf`` when no config is loaded
    yet; :meth:`BackendMixin.check_backend` catches a late mismatch at setup)."""
    from flowrl import context

    if not context.is_initialized():
        return "hf"
    cfg = context.get_args()
    if name not in cfg.models:
        return "hf"
    backend = cfg.model(name).args.get("backend", "hf")
    if backend not in allowed:
        raise ConfigError(f"models.{name}.args.backend: the {role} supports "
                          f"{', '.join(allowed)}; got {backend!r}")
    return backend


class BackendMixin:
    """What every backend shares: the ``lr`` the step ran with and the setup-time check."""

    backend_name = "hf"

    def check_backend(self) -> None:
        wanted = self.typed_args.backend
        if wanted != self.backend_name:
            raise ConfigError(
                f"models.{self.name}.args.backend is {wanted!r} but {type(self).__name__} "
                f"'{self.name}' was built for {self.backend_name!r}: construct the trainer "
                f"after flowrl.init(config) so it can pick its backend")

    @property
    def forward_model(self) -> Any:
        """What a forward pass goes through (the DeepSpeed engine, else the model)."""
        return getattr(self, "engine", None) or self.model

    @property
    def logprob_temperature(self) -> float:
        """The temperature of the log-probs, the Policy's: ``generation.temperature``, 1 for
        greedy (0)."""
        return logprob_temperature(float(self.model_config.generation.temperature))

    def current_lr(self) -> float:
        """The learning rate of the step about to run (the scheduler's value)."""
        return float(self.optimizer.param_groups[0]["lr"])


class HFBackend(BackendMixin, HFModule):
    """Plain torch on the HF model: :meth:`TorchModule.train_micro_batches` (AdamW, clip at
    ``optim.grad_clip``, one step, the scheduler after it)."""

    backend_name = "hf"

    def setup(self) -> None:
        self.check_backend()
        super().setup()

    def run_micro_batches(self, data: list[dict], loss_fn: LossFn) -> dict[str, float]:
        lr, clip = self.current_lr(), self.model_config.optim.grad_clip
        # an infinite clip measures grad_norm without changing the gradients
        stats = self.train_micro_batches(data, lambda mb: loss_fn(self.model, mb),
                                         float("inf") if clip is None else clip)
        return {**stats, "lr": lr} if stats else stats

    def token_logprobs(self, model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor,
                       prompt_len: int, return_entropy: bool = False,
                       temperature: float | None = None):
        t = self.logprob_temperature if temperature is None else temperature
        return hf.response_logprobs(model, tokens.to(self.device), mask.to(self.device),
                                    prompt_len, t, return_entropy=return_entropy)

    def token_logits(self, model: nn.Module, tokens: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, V]`` of left- or right-padded ``tokens``."""
        return hf.sequence_logits(model, tokens.to(self.device), mask.to(self.device))

    def token_values(self, model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor,
                     prompt_len: int) -> torch.Tensor:
        return hf.response_values(model, tokens.to(self.device), mask.to(self.device),
                                  prompt_len)


def deepspeed_backend() -> type:
    """The same HF model under ``deepspeed.initialize`` (``args.zero_stage``: 0-3)."""
    from flowrl.models.deepspeed_module import DeepSpeedArgs, DeepSpeedModule

    class DeepSpeedBackend(BackendMixin, DeepSpeedModule):
        backend_name = "deepspeed"

        class Args(DeepSpeedArgs):
            head: Literal["lm", "value"] = "lm"
            head_seed: int = 0

        def setup(self) -> None:
            self.check_backend()
            super().setup()

        def build_model(self) -> nn.Module:  # the inference twin's weights: no name mapping
            a, path = self.typed_args, self.model_config.model_path
            if a.head == "value":
                return hf.HFValueModel.from_pretrained(path, self.compute_dtype, a.head_seed)
            return hf.load_causal_lm(path, self.compute_dtype)

        def run_micro_batches(self, data: list[dict], loss_fn: LossFn) -> dict[str, float]:
            lr = self.current_lr()
            stats = self.train_micro_batches(data, loss_fn)  # loss_fn(engine, mb)
            return {**stats, "lr": lr} if stats else stats

        token_logprobs = HFBackend.token_logprobs  # the engine is called like the HF model
        token_logits = HFBackend.token_logits
        token_values = HFBackend.token_values

    return DeepSpeedBackend


def megatron_backend() -> type:
    """A megatron-core GPT loaded from the HF dir; it syncs under HF names."""
    from flowrl.models.megatron_module import MegatronModule

    class MegatronBackend(BackendMixin, MegatronModule):
        backend_name = "megatron"

        def setup(self) -> None:
            self.check_backend()
            super().setup()

        def run_micro_batches(self, data: list[dict], loss_fn: LossFn) -> dict[str, float]:
            lr = self.current_lr()
            stats = self.train_micro_batches(data, lambda mb: loss_fn(self.model, mb))
            return {**stats, "lr": lr} if stats else stats

        def token_logprobs(self, model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor,
                           prompt_len: int, return_entropy: bool = False,
                           temperature: float | None = None):
            t = self.logprob_temperature if temperature is None else temperature
            logits = self.logits(tokens, mask)[:, prompt_len - 1:-1]  # through self.model
            return kernels.token_logprobs(logits, tokens[:, prompt_len:].to(self.device),
                                          temperature=t, return_entropy=return_entropy)

        def token_logits(self, model: nn.Module, tokens: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
            return self.logits(tokens, mask)

        def token_values(self, model, tokens, mask, prompt_len):
            raise ConfigError(f"models.{self.name}.args.backend: megatron has no value head; "
                              f"use hf or deepspeed for a critic")

    return MegatronBackend


_BACKENDS: dict[str, Callable[[], type]] = {
    "hf": lambda: HFBackend, "deepspeed": deepspeed_backend, "megatron": megatron_backend}


def trainer_class(loss: type, options: type[ModuleArgs], backend: str, role: str) -> type:
    """The class ``loss`` (a mixin holding ``train_step``) on ``backend``, with ``Args``
    joining ``options`` (the trainer's own) and the backend's."""
    base = _BACKENDS[backend]()
    args = type("Args", (options, base.Args), {"__module__": loss.__module__})
    return type(f"{backend.capitalize()}{role}", (loss, base),
                {"Args": args, "__module__": loss.__module__})


def new_trainer(cls: type, top: type, loss: type, options: type[ModuleArgs],
                backends: tuple[str, ...], role: str, args: tuple, kwargs: dict) -> Any:
    """``top.__new__``: an instance of ``cls`` (the hf class), or of the ``loss`` class on
    the configured backend (initialised here: it is not a ``top``, so Python will not).
    Subclasses of ``top`` and unpickling (no name) get ``cls`` as usual."""
    name = args[0] if args else kwargs.get("name")
    if cls is not top or name is None:
        return object.__new__(cls)
    backend = configured_backend(name, backends, role)
    if backend == "hf":
        return object.__new__(cls)
    obj = object.__new__(trainer_class(loss, options, backend, top.__name__))
    obj.__init__(*args, **kwargs)
    return obj


def hf_args(options: type[ModuleArgs]) -> type:
    """``Args`` of the hf class of a trainer: its options + :class:`HFArgs`."""
    return type("Args", (options, HFArgs), {"__module__": options.__module__})
