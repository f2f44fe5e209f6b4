"""``Policy``: the built-in generating model of a rollout (any local Hugging Face causal LM).

>>> policy = Policy("policy")   # models.policy: {model_path: ./my_model, generation: {...}}

``build_dataset`` turns records (``flowrl.data``) or prompt strings into left-padded token
batches; ``forward_step`` samples responses with ``models.<name>.generation`` through the
generator of ``args.generator`` (see :mod:`flowrl.models.builtin.generators`) and scores them
with the policy's own weights; ``greedy_step`` decodes greedily (ReMax's baseline).
A trainer syncs into it by HF parameter names: ``Engine(..., sync={actor: policy})``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from pydantic import Field

from flowrl.models.builtin.generators import Generator, resolve_generator, start_vllm_engine
from flowrl.models.builtin.inference import (ForwardBatchArgs, FrozenHFModule, in_chunks,
                                             require_keys)
from flowrl.models.builtin.prompts import PromptDataset, left_align
from flowrl.models.hf import load_causal_lm, response_logprobs
from flowrl.models.base import outputs
from flowrl.models.vllm_module import VLLMArgs

#: What TorchModule offloads; the vLLM engine's own kinds (kv_cache) go to the engine only.
_TORCH_STATE = ("weights", "grads", "optimizer")


def logprob_temperature(temperature: float) -> float:
    """The temperature log-probs are computed at: the sampling one, 1 for greedy (0)."""
    return temperature if temperature > 0 else 1.0


class PolicyArgs(VLLMArgs, ForwardBatchArgs):
    """``models.<name>.args`` of a :class:`Policy`. The vLLM engine settings it inherits
    (``max_model_len``, ``gpu_memory_utilization``, ...) apply when vLLM generates."""

    generator: Generator = "auto"
    max_prompt_len: int = Field(512, ge=1, description="prompt tokens kept (from the end)")
    pad_id: int | None = None  # default: the tokenizer's
    behaviour_logprobs: bool = Field(
        True, description="score the sampled responses with the policy's weights (the batch's "
        "`logprobs`). false saves that forward pass: the Actor then takes its own detached "
        "log-probs as the old ones, which is exact only when each rollout is trained once, in "
        "one optimizer step, by the weights that generated it (the Actor checks; TRL does the "
        "same); `flowrl train` chooses it when that holds")


class Policy(FrozenHFModule):
    """Generates responses and their behaviour log-probs; see the module docstring."""

    Args = PolicyArgs

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.engine = None  # the vLLM engine when args.generator resolves to vllm
        self.generator_name: str | None = None

    @property
    def generation_batching(self) -> str:
        """"continuous" when ``args.generator`` is or resolves to vLLM (as :meth:`setup` will
        resolve it, from the config: the planner reads it before setup), else "static"."""
        requested = self.typed_args.generator
        vllm_ = requested == "vllm" or resolve_generator(self.name, requested) == "vllm"
        return "continuous" if vllm_ else "static"

    # ---- life cycle -------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        return load_causal_lm(self.model_path, self.dtype, self.device)

    def setup(self) -> None:
        self.generator_name = resolve_generator(self.name, self.typed_args.generator)
        self.model = self._load_model()
        self.tokenizer = self._load_tokenizer(required=True)
        self.model.eval()
        self.model.requires_grad_(False)
        if self.generator_name == "vllm":
            self.engine = start_vllm_engine(self)

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None

    def reset(self) -> None:
        self.shutdown()
        super().reset()

    def build_dataset(self, prompts: Sequence[Any], is_eval: bool = False) -> PromptDataset:
        """Records (dicts with a text ``prompt``; other columns pass through) or strings ->
        :class:`PromptDataset`: each batch left-padded to its longest prompt, prompts longer
        than ``args.max_prompt_len`` tokens truncated from the left (the end is kept)."""
        return PromptDataset(self.name, prompts, self.tokenizer, self.typed_args.max_prompt_len)

    # ---- steps ------------------------------------------------------------------------------
    def generate(self, prompt: torch.Tensor, prompt_mask: torch.Tensor, **overrides) -> dict:
        """Continue left-padded prompts with ``models.<name>.generation`` (``overrides`` win);
        a temperature of 0 decodes greedily. Returns ``tokens``, ``attention_mask`` and
        ``response_mask`` as :func:`flowrl.models.hf.generate` does."""
        if self.generation_temperature == 0:
            overrides.setdefault("do_sample", False)
        if self.typed_args.pad_id is not None:
            overrides.setdefault("pad_id", self.typed_args.pad_id)
        if self.engine is not None:
            return self.engine.generate(prompt, prompt_mask, **overrides)
        return super().generate(prompt, prompt_mask, **overrides)

    @property
    def generation_temperature(self) -> float:
        return float(self.model_config.generation.temperature)

    def forward_step(self, batch: dict, iteration: int = 0) -> dict:
        """Sample one response per row; returns ``prompt, prompt_mask, response,
        response_mask, logprobs`` and every non-tensor column of ``batch`` (``prompt_text``,
        ``answer`` ...). Its keys follow the dataset's columns, so they are not declared with
        ``@outputs``. ``logprobs`` are the policy's own at the sampling temperature, 0 after
        EOS (absent with ``args.behaviour_logprobs: false``)."""
        require_keys(self.name, "forward_step", batch, ("prompt", "prompt_mask"))
        prompt, prompt_mask = self._left_padded(batch)
        gen = self.generate(prompt, prompt_mask)
        p = prompt.shape[1]
        mask = gen["response_mask"]
        lengths = mask.sum(1).float()
        self.log("generated_tokens", lengths.sum().item(), reduce="sum")
        self.log("response_length", lengths.mean().item())
        out = {k: v for k, v in batch.items() if not isinstance(v, torch.Tensor)}
        out.update(prompt=prompt, prompt_mask=prompt_mask,
                   response=gen["tokens"][:, p:].cpu(), response_mask=mask.cpu())
        if self.typed_args.behaviour_logprobs:
            out["logprobs"] = self._behaviour_logprobs(gen, p)
        return out

    def _behaviour_logprobs(self, gen: dict, prompt_len: int) -> torch.Tensor:
        """The sampled tokens' log-probs under these weights at the sampling temperature."""
        temperature = logprob_temperature(self.generation_temperature)
        with torch.no_grad():
            lp = in_chunks(
                lambda t, m: response_logprobs(self.model, t, m, prompt_len, temperature),
                self.typed_args.forward_batch_size, gen["tokens"].to(self.device),
                gen["attention_mask"].to(self.device))
        return (lp * gen["response_mask"].to(lp.device)).cpu()

    @outputs("baseline_response", "baseline_response_mask")
    def greedy_step(self, batch: dict, iteration: int = 0) -> dict:
        """Greedy responses (ReMax's baseline): ``baseline_response`` and its mask."""
        require_keys(self.name, "greedy_step", batch, ("prompt", "prompt_mask"))
        prompt, prompt_mask = self._left_padded(batch)
        gen = self.generate(prompt, prompt_mask, do_sample=False)
        p = prompt.shape[1]
        return {"baseline_response": gen["tokens"][:, p:].cpu(),
                "baseline_response_mask": gen["response_mask"].cpu()}

    def _left_padded(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's prompts in the layout generation needs (a right-padded batch, e.g. a
        user's own dataset, is re-aligned; a left-padded one comes back unchanged)."""
        pad = self.typed_args.pad_id
        return left_align(batch["prompt"].long(), batch["prompt_mask"].long(),
                          self.tokenizer.pad_token_id if pad is None else pad)

    # ---- sync and memory (with vLLM, the engine's staging is this model's parameters) --------
    def named_sync_tensors(self) -> dict[str, torch.Tensor]:
        if self.engine is not None:
            return self.engine.named_sync_tensors()  # marks the engine's weights stale
        return super().named_sync_tensors()

    def offload(self, what: tuple[str, ...] = _TORCH_STATE) -> int:
        moved = super().offload(tuple(k for k in what if k in _TORCH_STATE))
        return moved + (self.engine.offload(what) if self.engine is not None else 0)

    def onload(self, what: tuple[str, ...] = _TORCH_STATE) -> int:
        moved = super().onload(tuple(k for k in what if k in _TORCH_STATE))
        return moved + (self.engine.onload(what) if self.engine is not None else 0)

    @property
    def offloaded_state(self) -> frozenset[str]:
        engine = self.engine.offloaded_state if self.engine is not None else frozenset()
        return super().offloaded_state | engine
