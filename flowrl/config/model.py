"""A model's section of the config (``models.<name>``): typed settings, one field each.

The planner (``flowrl.compiler.resources``) and the built-in modules read the same fields::

    models:
      policy:
        model_path: ckpt/llama          # shape and dtype filled from its config.json
        dtype: bf16                     # default: config.json's torch_dtype, else bf16
        generation: {max_new_tokens: 512, temperature: 1.0, top_p: 1.0,
                     expected_new_tokens: 180, p99_new_tokens: 480, batching: continuous}
        optim: {lr: 1.0e-6, betas: [0.9, 0.95], weight_decay: 0.0, eps: 1.0e-8, grad_clip: 1.0}
        parallel: {tp: 2, pp: 1, dp: 4}
        shape: {num_layers: 32, hidden_size: 4096, num_heads: 32, num_kv_heads: 8,
                vocab_size: 128256, max_seq_len: 2048}
        args: {...}                     # the module's own arguments (see BaseModule.Args)

The older flat spellings stay valid as aliases of one typed field each (a value is stored
once, in the typed field): ``tensor_model_parallel_size`` -> ``parallel.tp``,
``pipeline_model_parallel_size`` -> ``parallel.pp``, ``data_parallel_size`` -> ``parallel.dp``,
``num_params`` / ``num_layers`` / ``hidden_size`` / ``vocab_size`` / ``max_seq_len`` ->
``shape.*``, ``max_new_tokens`` -> ``generation.max_new_tokens``. Writing an alias and its
typed field with different values is an error naming both.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flowrl.config.checkpoint import DTYPES, DEFAULT_DTYPE, apply_checkpoint_config, \
    checkpoint_dtype
from flowrl.config.types import Float, Int

OffloadPolicy = Literal["auto", "never", "weights", "optimizer", "all"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GenerationConfig(_Strict):
    """How an inference model samples responses."""

    max_new_tokens: Int | None = Field(None, ge=1, description="response tokens per prompt")
    temperature: Float = Field(1.0, ge=0, description="sampling temperature (0: greedy)")
    top_p: Float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    top_k: Int = Field(0, ge=0, description="sample from the k likeliest tokens (0: all)")
    # Planning only (flowrl/compiler/lengths.py): the response-length distribution.
    expected_new_tokens: Int | None = Field(
        None, ge=1, description="mean response tokens, for planning (default: "
        "max_new_tokens, every response to the cap)")
    p99_new_tokens: Int | None = Field(
        None, ge=1, description="99th-percentile response tokens, for planning: the long "
        "tail (default: expected_new_tokens, no spread)")
    batching: Literal["static", "continuous"] | None = Field(
        None, description="how the generator batches decoding, for planning: static "
        "(HF generate: a batch runs until its longest response) or continuous (vLLM: "
        "finished requests leave the batch); default: what the module declares "
        "(BaseModule.generation_batching), static without a module")

    @model_validator(mode="after")
    def _lengths_ordered(self) -> "GenerationConfig":
        mean, p99, cap = self.expected_new_tokens, self.p99_new_tokens, self.max_new_tokens
        if p99 is not None and mean is None:
            raise ValueError("p99_new_tokens needs expected_new_tokens (the mean)")
        if p99 is not None and p99 < mean:
            raise ValueError(f"p99_new_tokens={p99} is below expected_new_tokens={mean}")
        for name, v in (("expected_new_tokens", mean), ("p99_new_tokens", p99)):
            if v is not None and cap is not None and v > cap:
                raise ValueError(f"{name}={v} exceeds max_new_tokens={cap}")
        return self


class OptimConfig(_Strict):
    """A trainer's AdamW settings and its learning-rate schedule.

    The schedule (:mod:`flowrl.models.lr_schedule`) runs over the trainer's total optimizer
    steps, ``num_episode x (sample_per_episode / train_global_batch_size) x
    num_training_epoch``; without ``scheduler``/warm-up keys the lr stays constant.
    """

    lr: Float = Field(1e-5, gt=0, description="learning rate")
    betas: tuple[Float, Float] = Field((0.9, 0.999), description="Adam's (beta1, beta2)")
    weight_decay: Float = Field(0.0, ge=0)
    eps: Float = Field(1e-8, gt=0)
    grad_clip: Float | None = Field(1.0, gt=0, description="max gradient norm (null: none)")
    scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="lr decay after warm-up: constant, linear or cosine")
    warmup_steps: Int | None = Field(None, ge=0, description="optimizer steps of linear warm-up")
    warmup_ratio: Float | None = Field(None, ge=0, lt=1, description="warm-up as a fraction "
                                       "of the total optimizer steps (instead of warmup_steps)")
    min_lr_ratio: Float = Field(0.0, ge=0, le=1, description="the decay's floor, x lr")
    fused: bool | None = Field(None, description="fused AdamW kernel (null: fused on CUDA, "
                                                 "foreach on CPU)")

    @model_validator(mode="after")
    def _one_warmup(self) -> "OptimConfig":
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("set warmup_steps or warmup_ratio, not both")
        return self


class ParallelConfig(_Strict):
    """Tensor, pipeline and data parallel sizes."""

    tp: Int = Field(1, ge=1, description="tensor parallel size")
    pp: Int = Field(1, ge=1, description="pipeline parallel size")
    dp: Int | None = Field(None, ge=1, description="data parallel size (default: from "
                           "num_devices, else 1)")


class ShapeConfig(_Strict):
    """The network's shape, for planning (filled from ``model_path``'s config.json)."""

    num_params: Int | None = Field(None, ge=1, description="parameter count")
    num_layers: Int | None = Field(None, ge=1)
    hidden_size: Int | None = Field(None, ge=1)
    num_heads: Int | None = Field(None, ge=1, description="attention heads")
    num_kv_heads: Int | None = Field(None, ge=1, description="key/value heads (GQA)")
    vocab_size: Int | None = Field(None, ge=1)
    max_seq_len: Int | None = Field(None, ge=1, description="prompt + response tokens")


#: flat alias -> (typed section, field): the older spellings, one stored value each.
ALIASES: dict[str, tuple[str, str]] = {
    "tensor_model_parallel_size": ("parallel", "tp"),
    "pipeline_model_parallel_size": ("parallel", "pp"),
    "data_parallel_size": ("parallel", "dp"),
    "max_new_tokens": ("generation", "max_new_tokens"),
    **{k: ("shape", k) for k in ("num_params", "num_layers", "hidden_size", "vocab_size",
                                 "max_seq_len")},
}


_SECTIONS: dict[str, type[BaseModel]] = {
    "parallel": ParallelConfig, "generation": GenerationConfig, "shape": ShapeConfig}


def _move_aliases(data: dict) -> dict:
    """Flat alias keys written into their typed sections (a new dict)."""
    data = dict(data)
    for alias, (section, field) in ALIASES.items():
        if alias not in data:
            continue
        value = data.pop(alias)
        sub = data.get(section)
        sub = dict(sub) if isinstance(sub, dict) else ({} if sub is None else sub)
        if not isinstance(sub, dict):
            data[section] = sub
            continue  # the section's own type error is reported by pydantic
        # A typed value at its default does not count as set (a dumped config has them all).
        default = _SECTIONS[section].model_fields[field].default
        if sub.get(field) not in (None, default) and value is not None and sub[field] != value:
            raise ValueError(f"{alias}={value} (an alias of {section}.{field}) and "
                             f"{section}.{field}={sub[field]} are both set; keep one")
        if value is not None or field not in sub:
            sub[field] = value
        data[section] = sub
    return data


class ModelConfig(_Strict):
    """Per-model section: typed settings read by the planner and the built-in modules, plus
    the module's own ``args`` (validated by the module's ``Args`` class when it has one)."""

    num_devices: Int | None = Field(None, ge=1,
                                    description="devices for this model (default tp*pp*dp)")
    trainable: bool | None = Field(None, description="default: inferred (calls train_step)")
    model_path: str | None = Field(
        None, min_length=1, description="a local Hugging Face model directory; its config.json "
        "fills shape and dtype")
    dtype: Literal["fp32", "bf16", "fp16"] | None = Field(
        None, description="weights' dtype (default: config.json's torch_dtype, else bf16)")
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    shape: ShapeConfig = Field(default_factory=ShapeConfig)
    colocation_group: str | None = None
    ray_node_resource: str | None = Field(
        None, min_length=1, description="Ray runtime: pin this model's workers to the nodes "
        "that offer this custom resource (e.g. node_b, from `ray start --resources`)")
    offload: OffloadPolicy = "auto"
    cpu_seconds_per_sample: Float | None = Field(
        None, ge=0, description="host seconds per sample of a call (a rule reward without "
        "weights: planned from this; default 2 ms for such a model)")
    devices: list[Int] | None = Field(None, description="explicit device ids (strategy manual)")
    args: dict[str, Any] = Field(default_factory=dict, description="the module's own arguments")

    @model_validator(mode="before")
    @classmethod
    def _aliases_and_checkpoint(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = _move_aliases(data)
        return apply_checkpoint_config(data)

    @model_validator(mode="after")
    def _parallel_sizes_fit(self) -> "ModelConfig":
        mp = self.model_parallel_size
        if self.num_devices is not None and self.num_devices % mp:
            raise ValueError(
                f"num_devices={self.num_devices} is not a multiple of tensor*pipeline "
                f"parallel size {mp}")
        return self

    # ---- derived values (read-only) -----------------------------------------------------
    @property
    def weights_dtype(self) -> str:
        """``dtype``, else ``model_path``'s config.json ``torch_dtype``, else bf16 (read now:
        an example may write its checkpoint after the config was loaded)."""
        if self.dtype is not None:
            return self.dtype
        return checkpoint_dtype(self.model_path) or DEFAULT_DTYPE

    @property
    def model_parallel_size(self) -> int:
        return self.parallel.tp * self.parallel.pp

    @property
    def dp_size(self) -> int:
        if self.parallel.dp is not None:
            return self.parallel.dp
        if self.num_devices is not None:
            return self.num_devices // self.model_parallel_size
        return 1

    @property
    def total_devices(self) -> int:
        return self.num_devices or self.model_parallel_size * self.dp_size

    # The flat aliases, read-only: each reads its one typed field.
    tensor_model_parallel_size = property(lambda self: self.parallel.tp)
    pipeline_model_parallel_size = property(lambda self: self.parallel.pp)
    data_parallel_size = property(lambda self: self.parallel.dp)
    max_new_tokens = property(lambda self: self.generation.max_new_tokens)
    num_params = property(lambda self: self.shape.num_params)
    num_layers = property(lambda self: self.shape.num_layers)
    hidden_size = property(lambda self: self.shape.hidden_size)
    vocab_size = property(lambda self: self.shape.vocab_size)
    max_seq_len = property(lambda self: self.shape.max_seq_len)


__all__ = ["ALIASES", "DTYPES", "GenerationConfig", "ModelConfig", "OffloadPolicy",
           "OptimConfig", "ParallelConfig", "ShapeConfig"]
