"""What the built-in inference modules share: a frozen :class:`~flowrl.models.hf.HFModule`
whose loading errors name ``models.<name>.model_path`` and the directory, the rollout's full
sequence (prompt + response) that every scorer runs on, and forward passes in row chunks
(``args.forward_batch_size``) so a large rollout never materialises all its logits at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from pydantic import Field
from torch import nn

from flowrl.errors import ConfigError, FlowRLError
from flowrl.models.args import ModuleArgs
from flowrl.models.sequences import full_sequence  # noqa: F401 (every built-in module's)
from flowrl.models.hf import HFArgs, HFModule, load_tokenizer


class ForwardBatchArgs(ModuleArgs):
    """The chunking setting every built-in inference module has."""

    forward_batch_size: int | None = Field(
        None, ge=1, description="rows per forward pass when scoring (default: the whole batch)")


class InferenceArgs(HFArgs, ForwardBatchArgs):
    """``models.<name>.args`` of the frozen scorers (Reference, Critic, RewardModel)."""


def in_chunks(fn: Callable[..., torch.Tensor], size: int | None,
              *tensors: torch.Tensor) -> torch.Tensor:
    """``fn(*tensors)`` computed ``size`` rows at a time and concatenated (no grad needed)."""
    if size is None or tensors[0].shape[0] <= size:
        return fn(*tensors)
    return torch.cat([fn(*parts) for parts in zip(*(t.split(size) for t in tensors))])


def require_keys(model: str, method: str, batch: dict, keys: tuple[str, ...]) -> None:
    """A step's input must hold ``keys``; the error names the model, the step and what is there."""
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ConfigError(
            f"models.{model}: {method} needs batch keys {', '.join(missing)} (has "
            f"{', '.join(sorted(batch)) or 'none'}); feed it the policy's rollout output")


class FrozenHFModule(HFModule):
    """An :class:`HFModule` used for inference only: loaded from ``models.<name>.model_path``
    with errors that name the setting and the directory, kept in eval mode without gradients."""

    Args = InferenceArgs

    def _model_dir(self) -> Path:
        """``models.<name>.model_path`` as an existing directory (else :class:`ConfigError`)."""
        path = Path(self.model_path)  # ConfigError when unset
        if not path.is_dir():
            raise ConfigError(f"models.{self.name}.model_path: directory {path} does not exist "
                              f"(flowrl loads Hugging Face models from local directories)")
        if not (path / "config.json").is_file():
            raise ConfigError(f"models.{self.name}.model_path: {path} has no config.json; it is "
                              f"not a Hugging Face model directory (save one with "
                              f"model.save_pretrained(dir))")
        return path

    def _load_model(self) -> nn.Module:
        """The model of :meth:`build_model`, with load failures named after the model's dir."""
        path = self._model_dir()
        try:
            return self.build_model()
        except FlowRLError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(f"models.{self.name}.model_path: cannot load a "
                              f"{type(self).__name__} model from {path}: {err}") from err

    def _load_tokenizer(self, required: bool):
        """The tokenizer saved beside the weights; ``None`` when absent and not ``required``."""
        path = self._model_dir()
        if not (path / "tokenizer_config.json").is_file():
            if required:
                raise ConfigError(f"models.{self.name}.model_path: {path} has no tokenizer "
                                  f"(tokenizer_config.json); {type(self).__name__} needs one "
                                  f"(save it with tokenizer.save_pretrained(dir))")
            return None
        return load_tokenizer(path)

    def setup(self) -> None:
        self.model = self._load_model()
        self.tokenizer = self._load_tokenizer(required=False)
        self.model.eval()
        self.model.requires_grad_(False)
