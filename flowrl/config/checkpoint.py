"""A model directory's ``config.json`` (Hugging Face keys) as flowrl's shape and dtype.

When ``models.<m>.model_path`` names a directory with a ``config.json``, the shape fields
nobody wrote are filled from it, and a written value that contradicts it is an error naming
both (planning a 32-layer model as 24 layers would silently misplace it).
``max_position_embeddings`` only bounds ``max_seq_len`` (a run uses a prefix of the context;
planning with the whole context would overstate the KV cache many times). ``num_params``,
when not written, is counted from the file (:func:`hf_num_params`): grouped-query attention,
a gated (SwiGLU) MLP of ``intermediate_size``, mixture-of-experts MLPs and untied
embeddings make the usual ``12 L h^2 + V h`` wrong by up to ~15% (Llama-3-70B: 70.6B, not
66.5B). A written ``num_params`` wins (a rounded figure is no contradiction).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

DTYPES = ("fp32", "bf16", "fp16")
DEFAULT_DTYPE = "bf16"
_HF_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
#: config.json key -> shape field
HF_SHAPE_KEYS = {
    "num_hidden_layers": "num_layers", "hidden_size": "hidden_size",
    "num_attention_heads": "num_heads", "num_key_value_heads": "num_kv_heads",
    "vocab_size": "vocab_size", "max_position_embeddings": "max_seq_len",
}


#: ``hidden_act`` values of gated MLPs (gate, up and down projections: three matrices).
GATED_ACTS = ("silu", "swish", "swiglu", "gelu_pytorch_tanh", "geglu")


def hf_num_params(hf: dict) -> int | None:
    """Parameters of a decoder-only transformer described by a config.json (``None`` when
    its size keys are missing): per layer attention (``q``/``o``: ``h x heads x head_dim``
    each, ``k``/``v``: ``h x kv_heads x head_dim`` each), the MLP (``3 h f`` gated, ``2 h f``
    otherwise; times the experts of a mixture-of-experts layer, plus its router) and two
    norms; embeddings ``V h`` (twice when untied) and the final norm."""
    try:
        h, layers, vocab = (int(hf[k]) for k in ("hidden_size", "num_hidden_layers",
                                                 "vocab_size"))
    except (KeyError, TypeError, ValueError):
        return None
    heads = int(hf.get("num_attention_heads") or max(1, h // 128))
    kv = int(hf.get("num_key_value_heads") or heads)
    head_dim = int(hf.get("head_dim") or h // heads)
    ffn = int(hf.get("intermediate_size") or 4 * h)
    gated = str(hf.get("hidden_act", "")).lower() in GATED_ACTS
    experts = int(hf.get("num_local_experts") or hf.get("num_experts") or 1)
    attn = 2 * h * heads * head_dim + 2 * h * kv * head_dim
    mlp = (3 if gated else 2) * h * ffn * experts + (h * experts if experts > 1 else 0)
    embed = vocab * h * (1 if hf.get("tie_word_embeddings", False) else 2)
    return layers * (attn + mlp + 2 * h) + embed + h


def _config_json(model_path: Any) -> Path | None:
    if not isinstance(model_path, str) or not model_path:
        return None
    path = Path(model_path) / "config.json"
    return path if path.is_file() else None


@lru_cache(maxsize=64)
def _read(path: str, mtime: float) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON model config ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a model config must be a JSON object")
    return data


def read_checkpoint_config(model_path: Any) -> dict | None:
    """``model_path``'s config.json, or ``None`` when there is none (yet)."""
    path = _config_json(model_path)
    return None if path is None else _read(str(path), path.stat().st_mtime)


def checkpoint_dtype(model_path: Any) -> str | None:
    """flowrl's name for config.json's ``torch_dtype`` (``dtype`` in newer files)."""
    hf = read_checkpoint_config(model_path) or {}
    raw = hf.get("torch_dtype") or hf.get("dtype")
    return _HF_DTYPES.get(str(raw).removeprefix("torch.")) if raw else None


def apply_checkpoint_config(data: dict) -> dict:
    """``data`` (a raw model section, aliases already moved) with shape fields filled from
    ``model_path``'s config.json; a contradiction is a ``ValueError`` naming both values."""
    hf = read_checkpoint_config(data.get("model_path"))
    if hf is None:
        return data
    shape = data.get("shape")
    if shape is not None and not isinstance(shape, dict):
        return data  # pydantic reports the type error
    shape = dict(shape or {})
    where = f"{data['model_path']}/config.json"
    for key, field in HF_SHAPE_KEYS.items():
        if key not in hf:
            continue
        found, written = hf[key], shape.get(field)
        if field == "max_seq_len":
            if isinstance(written, int) and written > found:
                raise ValueError(f"shape.max_seq_len={written} exceeds {key}={found} in "
                                 f"{where}; set it to at most {found}")
            continue
        if written is None:
            shape[field] = found
        elif written != found:
            raise ValueError(f"shape.{field}={written} contradicts {key}={found} in {where}; "
                             f"remove shape.{field} or set it to {found}")
    if shape.get("num_params") is None and "num_params" not in data:
        counted = hf_num_params(hf)
        if counted is not None:
            shape["num_params"] = counted
    data = dict(data)
    data["shape"] = shape
    return data
