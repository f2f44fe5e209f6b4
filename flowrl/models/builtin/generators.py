"""Which library generates for a :class:`~flowrl.models.builtin.policy.Policy`:
``models.<name>.args.generator`` is ``hf`` (Hugging Face ``generate`` on the policy's own
model), ``vllm`` (a ``vllm.LLM`` engine) or ``auto`` (vLLM when it is installed, else HF).

With vLLM the policy keeps its Hugging Face model too: it computes the behaviour log-probs
(the same numbers a trainer computes) and its parameters *are* the engine's staging tensors,
so a parameter sync from the actor writes them once and the next generation pushes them to
the engine (:class:`PolicyVLLMEngine`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from flowrl.errors import MissingExtraError
from flowrl.models._extras import available
from flowrl.models.vllm_module import VLLMModule, vllm

Generator = Literal["auto", "hf", "vllm"]


def resolve_generator(model: str, requested: str) -> str:
    """``hf`` or ``vllm`` for ``models.<model>.args.generator = requested``.

    Raises:
        MissingExtraError: ``vllm`` was asked for and is not installed (names the extras).
    """
    if requested == "auto":
        return "vllm" if available("vllm") else "hf"
    if requested == "vllm":
        try:
            vllm()
        except MissingExtraError as err:
            raise MissingExtraError(f"models.{model}.args.generator is 'vllm': {err} (or set "
                                    f"generator: hf)") from err
    return requested


class PolicyVLLMEngine(VLLMModule):
    """The vLLM engine of one policy: it reads the policy's config section and ``args`` (the
    policy's ``Args`` include the vLLM engine settings) and stages weights in the policy's
    Hugging Face parameters (same names, shared storage)."""

    Args = None  # the section's args belong to the policy, which validated them

    def __init__(self, policy: Any) -> None:
        super().__init__(policy.name)
        self.policy = policy
        self.bind(policy.bound_config)

    @property
    def typed_args(self) -> Any:
        return self.policy.typed_args

    def _load_staging(self) -> dict[str, torch.Tensor]:
        return dict(self.policy.model.named_parameters())


def start_vllm_engine(policy: Any) -> PolicyVLLMEngine:
    """Build and start the vLLM engine for ``policy`` (whose HF model is already loaded)."""
    engine = PolicyVLLMEngine(policy)
    engine.ensure_setup()
    return engine
