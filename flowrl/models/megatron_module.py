"""``MegatronModule``: a megatron-core GPT trainer (extra: ``pip install 'flowrl[megatron]'``).

The model is a megatron-core ``GPTModel`` (local layer spec: no Transformer Engine or Apex
needed) in the Llama architecture (RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases),
built from the module's config:

* ``models.<name>.parallel.tp`` (alias ``tensor_model_parallel_size``): TP size (the
  processes must exist: launch ``TP x DP`` ranks with torchrun / ``torch.multiprocessing``;
  one process needs TP=1);
* sizes from ``model_path`` (a Hugging Face Llama directory: config *and* initial weights,
  so trainer and inference model start equal) or from ``shape`` (``num_layers``,
  ``hidden_size``, ``vocab_size``, ``num_heads``, ``num_kv_heads``, ``max_seq_len``) plus
  ``args.ffn_hidden_size`` (random init, ``args.init_method_std``);
* ``dtype`` fp32 / bf16 (default: the checkpoint's); ``optim``: a torch AdamW, clipped at
  ``optim.grad_clip``. ``args``: :class:`MegatronArgs`.

Parameter sync reads :meth:`named_sync_tensors`: every TP rank's shards are all-gathered and
mapped to Hugging Face names (QKV and gate/up split; see :mod:`flowrl.models.weight_mapping`),
so a TP=2 trainer syncs into a TP=1 Hugging Face or vLLM inference model. It is a collective:
every rank of the TP group must call it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from flowrl import kernels
from flowrl.errors import ConfigError
from flowrl.models._extras import require
from flowrl.models.args import ModuleArgs
from flowrl.models.torch_module import TorchModule
from flowrl.models.weight_mapping import GPTLayout, hf_llama_to_megatron, megatron_to_hf_llama

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def megatron_core():
    """Import megatron.core, or MissingExtraError naming ``flowrl[megatron]``."""
    return require("megatron.core", "megatron", "MegatronModule")


# ---------------------------------------------------------------------------------------
# CPU SHIM (used only when no CUDA device exists).
# megatron-core asks ``torch.cuda.current_device()`` for the device to put parameters and
# RNG state on; on a CPU-only machine that call fails. We answer "cpu" instead, and seed
# megatron's RNG tracker with ``inference_rng_tracker=True`` (a tracker that does not need
# CUDA RNG state). Nothing here runs when ``torch.cuda.is_available()``.
# ---------------------------------------------------------------------------------------
_CPU_SHIM_INSTALLED = False


def install_cpu_shim() -> bool:
    """Patch ``torch.cuda.current_device`` to return ``"cpu"`` when there is no CUDA device.

    Returns True when the shim is (now) active. Idempotent; a no-op with CUDA.
    """
    global _CPU_SHIM_INSTALLED
    if torch.cuda.is_available():
        return False
    if not _CPU_SHIM_INSTALLED:
        torch.cuda.current_device = lambda: "cpu"  # CPU SHIM: megatron-core places tensors here
        _CPU_SHIM_INSTALLED = True
    return True


def _init_distributed(tp: int) -> None:
    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend)
        return
    if tp != 1:
        raise RuntimeError(
            f"tensor_model_parallel_size={tp} needs {tp} processes: launch them with torchrun "
            f"(or torch.multiprocessing) and set RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def causal_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """Megatron's boolean attention mask ``[B, 1, S, S]`` (True = masked out): causal and
    hiding padded keys."""
    s = mask.shape[1]
    causal = torch.triu(torch.ones(s, s, dtype=torch.bool, device=mask.device), 1)
    return causal[None, None] | ~mask.bool()[:, None, None, :]


class MegatronArgs(ModuleArgs):
    """``models.<name>.args`` of a :class:`MegatronModule` (subclasses extend it)."""

    ffn_hidden_size: int | None = None  # random init: default 4 x hidden_size
    init_method_std: float | None = None  # default: config.json's initializer_range, else 0.02
    norm_eps: float = 1e-5  # RMSNorm epsilon without a config.json
    init_seed: int | None = None  # default runtime_args.seed


class MegatronModule(TorchModule):
    """A megatron-core GPT model with a torch optimizer. Write ``train_step`` with
    :meth:`train_micro_batches` and :meth:`response_logprobs`; see the module docstring."""

    Args = MegatronArgs
    layout: GPTLayout | None = None
    #: megatron-core shards every layer (tensor parallel) and stages the layers (pipeline)
    parallelism = {"tp": True, "pp": True}

    def __init__(self, name: str) -> None:
        megatron_core()  # before registering the name: a missing library ->
        # MissingExtraError naming flowrl[megatron], now
        super().__init__(name)

    # ---- config ---------------------------------------------------------------------------
    @property
    def tp_size(self) -> int:
        return self.model_config.parallel.tp

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.model_config.weights_dtype]

    def _hf_config(self) -> dict[str, Any] | None:
        path = self.model_config.model_path
        if not path:
            return None
        return json.loads(Path(path, "config.json").read_text())

    def build_layout(self) -> GPTLayout:
        hf = self._hf_config()
        if hf is not None:
            return GPTLayout(hf["num_hidden_layers"], hf["hidden_size"], hf["num_attention_heads"],
                             hf.get("num_key_value_heads") or hf["num_attention_heads"],
                             hf["intermediate_size"], hf["vocab_size"])
        s, a = self.model_config.shape, self.typed_args
        missing = [f for f in ("num_layers", "hidden_size", "vocab_size", "num_heads")
                   if getattr(s, f) is None]
        if missing:
            raise ConfigError(
                f"models.{self.name}: give model_path (a Hugging Face Llama dir) or "
                f"shape.num_layers, hidden_size, vocab_size and num_heads (missing: "
                f"{', '.join(missing)})")
        return GPTLayout(s.num_layers, s.hidden_size, s.num_heads, s.num_kv_heads or s.num_heads,
                         a.ffn_hidden_size or 4 * s.hidden_size, s.vocab_size)

    def transformer_config(self, layout: GPTLayout):
        from megatron.core.transformer.transformer_config import TransformerConfig

        hf = self._hf_config() or {}
        a = self.typed_args
        return TransformerConfig(
            num_layers=layout.num_layers, hidden_size=layout.hidden_size,
            num_attention_heads=layout.num_attention_heads,
            num_query_groups=layout.num_query_groups, ffn_hidden_size=layout.ffn_hidden_size,
            normalization="RMSNorm", layernorm_epsilon=hf.get("rms_norm_eps", a.norm_eps),
            gated_linear_unit=True, activation_func=F.silu, add_bias_linear=False,
            hidden_dropout=0.0, attention_dropout=0.0,
            init_method_std=a.init_method_std or hf.get("initializer_range", 0.02),
            tensor_model_parallel_size=self.tp_size, params_dtype=self.dtype,
            bf16=self.dtype == torch.bfloat16, fp16=self.dtype == torch.float16,
            use_cpu_initialization=not torch.cuda.is_available())

    # ---- life cycle -----------------------------------------------------------------------
    def setup(self) -> None:
        megatron_core()
        from megatron.core import parallel_state
        from megatron.core.models.gpt import GPTModel
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

        cpu = install_cpu_shim()
        _init_distributed(self.tp_size)
        if not parallel_state.model_parallel_is_initialized():
            parallel_state.initialize_model_parallel(tensor_model_parallel_size=self.tp_size)
        elif parallel_state.get_tensor_model_parallel_world_size() != self.tp_size:
            raise RuntimeError(
                f"{self.name}: megatron model parallel is already initialized with TP="
                f"{parallel_state.get_tensor_model_parallel_world_size()}, config asks {self.tp_size}")
        seed = self.typed_args.init_seed
        seed = self.runtime_args.seed if seed is None else seed
        torch.manual_seed(seed)
        model_parallel_cuda_manual_seed(seed, inference_rng_tracker=cpu)  # CPU SHIM when cpu
        self.layout = layout = self.build_layout()
        layout.check_tp(self.tp_size)
        hf = self._hf_config() or {}
        rope = (hf.get("rope_parameters") or {}).get("rope_theta") or hf.get("rope_theta", 10000.0)
        self.model = GPTModel(
            config=self.transformer_config(layout),
            transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
            vocab_size=layout.vocab_size,
            max_sequence_length=hf.get("max_position_embeddings",
                                       self.model_config.shape.max_seq_len or 2048),
            position_embedding_type="rope", rotary_base=int(rope),
            share_embeddings_and_output_weights=False,
            parallel_output=False,  # full-vocab logits: log-probs go through flowrl.kernels
        ).to(self.device)
        if self.model_config.model_path:
            self.load_hf_weights(self.model_config.model_path)
        if self.trainable:
            self.model.train()
            self.optimizer = self.optimizer_from_config(torch.optim.AdamW)
        else:
            self.model.eval()

    @property
    def tp_group(self):
        from megatron.core import parallel_state

        return parallel_state.get_tensor_model_parallel_group()

    @property
    def tp_rank(self) -> int:
        from megatron.core import parallel_state

        return parallel_state.get_tensor_model_parallel_rank()

    @torch.no_grad()
    def load_hf_weights(self, path: str | os.PathLike) -> None:
        """Load this rank's shards from a Hugging Face Llama directory (safetensors)."""
        from safetensors.torch import load_file

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors weights in {path}")
        hf: dict[str, torch.Tensor] = {}
        for f in files:
            hf.update(load_file(str(f)))
        self.load_hf_state(hf)

    @torch.no_grad()
    def load_hf_state(self, hf: dict[str, torch.Tensor]) -> None:
        mine = hf_llama_to_megatron(hf, self.layout, self.tp_rank, self.tp_size)
        params = dict(self.model.named_parameters())
        missing = sorted(set(params) - set(mine))
        if missing:
            raise KeyError(f"{self.name}: no Hugging Face weights for {missing[:6]}")
        for n, p in params.items():
            if p.shape != mine[n].shape:
                raise ValueError(f"{self.name}: {n} is {tuple(p.shape)} but the mapped HF "
                                 f"tensor is {tuple(mine[n].shape)}")
            p.copy_(mine[n].to(p.dtype))

    # ---- compute --------------------------------------------------------------------------
    def logits(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits ``[B, S, V]`` for left- or right-padded ``tokens``."""
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        pos = (mask.long().cumsum(-1) - 1).clamp_min(0)
        return self.model(tokens, pos, causal_padding_mask(mask))

    def response_logprobs(self, tokens: torch.Tensor, mask: torch.Tensor, prompt_len: int,
                          temperature: float | None = None) -> torch.Tensor:
        t = self.model_config.generation.temperature if temperature is None else temperature
        logits = self.logits(tokens, mask)[:, prompt_len - 1:-1]
        return kernels.token_logprobs(logits, tokens[:, prompt_len:].to(self.device), temperature=t)

    def clip_grad_norm(self, max_norm: float) -> float:
        """Global grad norm over all TP shards (replicated params counted once), then clip."""
        sharded, replicated = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        grads = []
        for p in self.model.parameters():
            if p.grad is None:
                continue
            sq = p.grad.detach().double().square().sum().cpu()
            if getattr(p, "tensor_model_parallel", False):
                sharded += sq
            else:
                replicated += sq
            grads.append(p.grad)
        if self.tp_size > 1:
            dist.all_reduce(sharded, group=self.tp_group)
        norm = float((sharded + replicated).sqrt())
        if max_norm and norm > max_norm:
            torch._foreach_mul_(grads, max_norm / (norm + 1e-6))
        return norm

    def train_micro_batches(self, micro_batches: list[dict],
                            loss_fn: Callable[[dict], tuple[torch.Tensor, dict]]) -> dict:
        """Zero grads, backward each micro-batch's loss / n, all-reduce over data parallel
        ranks, clip by the TP-global norm (``args.max_grad_norm``, default 1.0), step."""
        from megatron.core import parallel_state

        self.optimizer.zero_grad(set_to_none=True)
        n = len(micro_batches)
        stats: dict[str, float] = {}
        losses: list[torch.Tensor] = []
        for mb in micro_batches:
            loss, s = loss_fn(mb)
            (loss / n).backward()
            losses.append(loss.detach().float().reshape(()))
            for k, v in {"loss": loss, **s}.items():
                stats[k] = stats.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / n
        dp = parallel_state.get_data_parallel_world_size()
        if dp > 1:
            group = parallel_state.get_data_parallel_group()
            for p in self.model.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, group=group)
                    p.grad /= dp
        clip = self.model_config.optim.grad_clip
        stats["grad_norm"] = self.clip_grad_norm(float("inf") if clip is None else clip)
        if not self._step_is_finite(torch.stack(losses), stats["grad_norm"]):
            return {}  # the same pre-step non-finite check as TorchModule's
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return stats

    # ---- sync and checkpoints ---------------------------------------------------------------
    @torch.no_grad()
    def gather_shards(self) -> dict[str, list[torch.Tensor]]:
        """Every TP rank's shard of every parameter (a collective over the TP group)."""
        out = {}
        for n, p in self.model.named_parameters():
            if self.tp_size > 1 and getattr(p, "tensor_model_parallel", False):
                parts = [torch.empty_like(p.data) for _ in range(self.tp_size)]
                dist.all_gather(parts, p.data.contiguous(), group=self.tp_group)
                out[n] = parts
            else:
                out[n] = [p.data]
        return out

    def named_sync_tensors(self) -> dict[str, torch.Tensor]:
        """Full tensors under Hugging Face Llama names (gathered over TP; a sync source)."""
        if self.model is None:
            raise RuntimeError(f"module '{self.name}' is not set up")
        return megatron_to_hf_llama(self.gather_shards(), self.layout)

    def state_dict_for_checkpoint(self) -> dict[str, Any]:
        state = super().state_dict_for_checkpoint()  # this rank's shards + optimizer
        state["tp_rank"], state["tp_size"] = self.tp_rank, self.tp_size
        return state

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        if state.get("tp_size", self.tp_size) != self.tp_size:
            raise ValueError(f"{self.name}: checkpoint has TP={state['tp_size']}, model TP={self.tp_size}")
        super().load_checkpoint_state(state)
