"""Parameter-name and layout mapping between training and inference models, for sync.

Inference models (Hugging Face ``LlamaForCausalLM``, vLLM's Llama) use Hugging Face names with
separate ``q_proj`` / ``k_proj`` / ``v_proj`` and ``gate_proj`` / ``up_proj``; a megatron-core
GPT model fuses them (``linear_qkv``, ``linear_fc1``) and, with tensor parallelism, holds only
its rank's shard of each. This module converts between the two in plain torch (no megatron
import), so the layouts are testable anywhere:

* :func:`megatron_to_hf_llama` - the shards of every TP rank -> full Hugging Face tensors;
* :func:`hf_llama_to_megatron` - full Hugging Face tensors -> one TP rank's shards.

Megatron layouts (per TP rank ``r`` of ``tp``; ``d`` = head dim, ``g`` = query groups,
``h/g`` query heads per group):

* ``linear_qkv.weight``: ``g/tp`` groups, each ``[q (h/g * d rows); k (d); v (d)]``;
* ``linear_fc1.weight``: ``[gate shard r; up shard r]`` (SwiGLU);
* column-parallel (``word_embeddings``, ``output_layer``): rows split; row-parallel
  (``linear_proj``, ``linear_fc2``): columns split; norms: replicated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class GPTLayout:
    """The sizes a layout conversion needs (a Llama-style GPT: RMSNorm, SwiGLU, RoPE, no bias)."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    ffn_hidden_size: int
    vocab_size: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_query_groups

    def check_tp(self, tp: int) -> None:
        for what, n in (("num_query_groups", self.num_query_groups),
                        ("num_attention_heads", self.num_attention_heads),
                        ("ffn_hidden_size", self.ffn_hidden_size), ("vocab_size", self.vocab_size)):
            if n % tp:
                raise ValueError(f"{what}={n} is not divisible by tensor parallel size {tp}")

    @classmethod
    def from_hf_config(cls, cfg) -> "GPTLayout":
        """From a ``transformers`` Llama config (or anything with the same attribute names)."""
        return cls(cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
                   getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
                   cfg.intermediate_size, cfg.vocab_size)


# per-layer names: megatron suffix -> (HF suffix, how it is split across TP)
_LAYER_SIMPLE = {
    "input_layernorm.weight": ("input_layernorm.weight", None),
    "pre_mlp_layernorm.weight": ("post_attention_layernorm.weight", None),
    # megatron's Transformer-Engine spec fuses the norms into the linear layers:
    "self_attention.linear_qkv.layer_norm_weight": ("input_layernorm.weight", None),
    "mlp.linear_fc1.layer_norm_weight": ("post_attention_layernorm.weight", None),
    "self_attention.linear_proj.weight": ("self_attn.o_proj.weight", 1),
    "mlp.linear_fc2.weight": ("mlp.down_proj.weight", 1),
}
_TOP = {
    "embedding.word_embeddings.weight": ("model.embed_tokens.weight", 0),
    "output_layer.weight": ("lm_head.weight", 0),
    "decoder.final_layernorm.weight": ("model.norm.weight", None),
}


def _layer(name: str) -> tuple[int, str] | None:
    parts = name.split(".")
    if len(parts) > 3 and parts[0] == "decoder" and parts[1] == "layers":
        return int(parts[2]), ".".join(parts[3:])
    return None


def megatron_to_hf_llama(shards: dict[str, list[Tensor]], layout: GPTLayout) -> dict[str, Tensor]:
    """Full Hugging Face Llama tensors from megatron-core shards (``shards[name][tp_rank]``)."""
    out: dict[str, Tensor] = {}
    L = layout
    for name, parts in shards.items():
        if name in _TOP:
            hf_name, dim = _TOP[name]
            out[hf_name] = parts[0] if dim is None else torch.cat(parts, dim)
            continue
        loc = _layer(name)
        if loc is None:
            raise KeyError(f"no Hugging Face name for megatron parameter {name!r}")
        i, suffix = loc
        pre = f"model.layers.{i}."
        if suffix in _LAYER_SIMPLE:
            hf_suffix, dim = _LAYER_SIMPLE[suffix]
            out[pre + hf_suffix] = parts[0] if dim is None else torch.cat(parts, dim)
        elif suffix == "self_attention.linear_qkv.weight":
            d, hpg = L.head_dim, L.heads_per_group
            full = torch.cat(parts, 0).reshape(L.num_query_groups, (hpg + 2) * d, L.hidden_size)
            q, k, v = full.split([hpg * d, d, d], dim=1)
            out[pre + "self_attn.q_proj.weight"] = q.reshape(-1, L.hidden_size)
            out[pre + "self_attn.k_proj.weight"] = k.reshape(-1, L.hidden_size)
            out[pre + "self_attn.v_proj.weight"] = v.reshape(-1, L.hidden_size)
        elif suffix == "mlp.linear_fc1.weight":
            gates, ups = zip(*(p.chunk(2, 0) for p in parts))
            out[pre + "mlp.gate_proj.weight"] = torch.cat(gates, 0)
            out[pre + "mlp.up_proj.weight"] = torch.cat(ups, 0)
        else:
            raise KeyError(f"no Hugging Face name for megatron parameter {name!r} "
                           f"(biases and other architectures are not mapped)")
    return out


def hf_llama_to_megatron(hf: dict[str, Tensor], layout: GPTLayout, tp_rank: int = 0,
                         tp_size: int = 1, fused_norms: bool = False) -> dict[str, Tensor]:
    """One TP rank's megatron-core tensors from full Hugging Face Llama tensors.

    ``fused_norms`` targets the Transformer-Engine layer spec (norm weights inside
    ``linear_qkv`` / ``linear_fc1``) instead of the local spec.
    """
    L = layout
    L.check_tp(tp_size)

    def shard(t: Tensor, dim: int | None) -> Tensor:
        return t if dim is None else t.chunk(tp_size, dim)[tp_rank]

    out: dict[str, Tensor] = {}
    for name, (hf_name, dim) in _TOP.items():
        if hf_name in hf:
            out[name] = shard(hf[hf_name], dim)
    skip = ({"input_layernorm.weight", "pre_mlp_layernorm.weight"} if fused_norms else
            {"self_attention.linear_qkv.layer_norm_weight", "mlp.linear_fc1.layer_norm_weight"})
    d, hpg = L.head_dim, L.heads_per_group
    for i in range(L.num_layers):
        pre, mpre = f"model.layers.{i}.", f"decoder.layers.{i}."
        for suffix, (hf_suffix, dim) in _LAYER_SIMPLE.items():
            if suffix not in skip:
                out[mpre + suffix] = shard(hf[pre + hf_suffix], dim)
        q = hf[pre + "self_attn.q_proj.weight"].reshape(L.num_query_groups, hpg * d, L.hidden_size)
        k = hf[pre + "self_attn.k_proj.weight"].reshape(L.num_query_groups, d, L.hidden_size)
        v = hf[pre + "self_attn.v_proj.weight"].reshape(L.num_query_groups, d, L.hidden_size)
        qkv = torch.cat([q, k, v], 1).reshape(-1, L.hidden_size)
        out[mpre + "self_attention.linear_qkv.weight"] = shard(qkv, 0)
        gate, up = hf[pre + "mlp.gate_proj.weight"], hf[pre + "mlp.up_proj.weight"]
        out[mpre + "mlp.linear_fc1.weight"] = torch.cat([shard(gate, 0), shard(up, 0)], 0)
    return out
