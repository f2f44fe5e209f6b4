"""Hugging Face ``transformers`` models in flowrl (extra: ``pip install 'flowrl[hf]'``).

Everything is loaded from a *local directory* (``from_pretrained(path, local_files_only=True)``);
flowrl never reaches the hub. The pieces:

* :func:`load_causal_lm`, :func:`load_tokenizer` (left padding), :class:`HFValueModel`
  (a scalar head on a base model: the value / reward model);
* :func:`generate` - sampling (temperature, top-p, max new tokens, EOS) on left-padded prompts,
  returning flowrl's rollout layout (``tokens``, ``attention_mask``, ``response_mask``);
* :func:`response_logprobs` / :func:`response_values` - through the fused kernel dispatcher
  (:func:`flowrl.kernels.token_logprobs`);
* :class:`HFModule` - a :class:`~flowrl.models.torch_module.TorchModule` whose ``setup`` loads
  ``models.<name>.model_path`` (``args.head: lm | value``) in the model's dtype and, for
  trainers, an AdamW optimizer from ``models.<name>.optim``;
* :func:`build_char_tokenizer`, :func:`save_tiny_llama` - a tiny random Llama + char tokenizer
  written to a directory, for tests and examples (no downloads).

``import flowrl.models.hf`` does not import transformers; the first call that needs it does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from flowrl import kernels
from flowrl.errors import ConfigError
from flowrl.models._extras import require
from flowrl.models.args import ModuleArgs
from flowrl.models.torch_module import TorchModule

VALUE_HEAD_FILE = "flowrl_value_head.pt"
DEFAULT_CHARS = "abcdefghijklmnopqrstuvwxyz .,!?"
SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
           "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def transformers():
    """The ``transformers`` module, or :class:`MissingExtraError` naming ``flowrl[hf]``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # flowrl only ever loads local directories
    return require("transformers", "hf", "flowrl's Hugging Face backend")


def torch_dtype(name: str | torch.dtype | None) -> torch.dtype:
    if name is None:
        return torch.float32
    if isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def _check_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"model directory not found: {p} (flowrl loads Hugging Face models from local "
            f"directories only; save one with model.save_pretrained(dir))")
    return p


# ---------------------------------------------------------------------------- loading
def load_tokenizer(path: str | os.PathLike):
    """The tokenizer saved in ``path``, set to pad on the left (prompts end where generation starts)."""
    tf = transformers()
    tok = tf.AutoTokenizer.from_pretrained(str(_check_dir(path)), local_files_only=True)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str | os.PathLike, dtype: str | torch.dtype | None = "fp32",
                   device: str | torch.device = "cpu"):
    """``AutoModelForCausalLM.from_pretrained(path, local_files_only=True)`` on ``device``."""
    tf = transformers()
    model = tf.AutoModelForCausalLM.from_pretrained(
        str(_check_dir(path)), local_files_only=True, dtype=torch_dtype(dtype))
    return model.to(device)


class HFValueModel(nn.Module):
    """A base transformer (no LM head) with a linear scalar head: a value or reward model.

    ``from_pretrained(path)`` loads the base model from a causal-LM or base-model directory
    (``AutoModel``) and the head from ``flowrl_value_head.pt`` when present (else a fresh head,
    seeded by ``head_seed``). ``forward`` returns one scalar per token, ``[B, T]``.
    """

    def __init__(self, backbone: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.value_head = nn.Linear(hidden_size, 1)

    @property
    def config(self):
        return self.backbone.config

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: str | torch.dtype | None = "fp32",
                        head_seed: int = 0, device: str | torch.device = "cpu") -> "HFValueModel":
        tf = transformers()
        p = _check_dir(path)
        backbone = tf.AutoModel.from_pretrained(str(p), local_files_only=True,
                                                dtype=torch_dtype(dtype))
        model = cls(backbone, backbone.config.hidden_size)
        model.value_head.to(torch_dtype(dtype))
        if (p / VALUE_HEAD_FILE).is_file():
            model.value_head.load_state_dict(torch.load(p / VALUE_HEAD_FILE, map_location="cpu",
                                                        weights_only=True))
        else:  # a fresh head: a function of head_seed alone, not of the global RNG state
            with torch.random.fork_rng():
                torch.manual_seed(head_seed)
                nn.init.zeros_(model.value_head.bias)
                nn.init.normal_(model.value_head.weight,
                                std=1.0 / (backbone.config.hidden_size + 1))
        return model.to(device)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(path))
        torch.save(self.value_head.state_dict(), Path(path) / VALUE_HEAD_FILE)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids, use_cache=False)
        return self.value_head(out.last_hidden_state).squeeze(-1).float()


# ---------------------------------------------------------------------- computation
def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counting only real tokens, so a left-padded row starts at position 0."""
    pos = mask.long().cumsum(-1) - 1
    return pos.clamp_min(0)


def sequence_logits(model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=tokens, attention_mask=mask.long(),
                position_ids=position_ids_from_mask(mask), use_cache=False)
    return out.logits


def response_logprobs(model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor, prompt_len: int,
                      temperature: float = 1.0, return_entropy: bool = False):
    """Log-prob of each response token (positions ``prompt_len:``) under ``model``, ``[B, N]``.

    The logits that predict response tokens go through :func:`flowrl.kernels.token_logprobs`
    (the fused log-softmax + gather: Triton on GPU, the chunked torch path on CPU).
    """
    logits = sequence_logits(model, tokens, mask)[:, prompt_len - 1:-1]
    return kernels.token_logprobs(logits, tokens[:, prompt_len:], temperature=temperature,
                                  return_entropy=return_entropy)


def response_values(model: HFValueModel, tokens: torch.Tensor, mask: torch.Tensor,
                    prompt_len: int) -> torch.Tensor:
    """V(s_t) for each response token: the head's output at the token *before* it, ``[B, N]``."""
    values = model(tokens, mask.long(), position_ids_from_mask(mask))
    return values[:, prompt_len - 1:-1]


def sequence_scores(model: HFValueModel, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A reward model's score: the head's output at each row's last real token, ``[B]``."""
    values = model(tokens, mask.long(), position_ids_from_mask(mask))
    t = torch.arange(mask.shape[1], device=mask.device)
    last = (mask.long() * (t + 1)).argmax(1)
    return values[torch.arange(values.shape[0], device=values.device), last]


def response_mask_from_tokens(response: torch.Tensor, eos_id: int | list[int]) -> torch.Tensor:
    """1 up to and including the first EOS of each row, 0 after it."""
    eos = torch.tensor([eos_id] if isinstance(eos_id, int) else list(eos_id), device=response.device)
    is_eos = torch.isin(response, eos).long()
    after_eos = (is_eos.cumsum(1) - is_eos) > 0   # strictly after the first EOS
    return (~after_eos).long()


@torch.no_grad()
def generate(model: nn.Module, prompt: torch.Tensor, prompt_mask: torch.Tensor,
             max_new_tokens: int, eos_id: int | list[int], pad_id: int, *,
             temperature: float = 1.0, top_p: float = 1.0, do_sample: bool = True,
             top_k: int = 0) -> dict[str, torch.Tensor]:
    """Sample (or greedily decode) continuations of left-padded ``prompt`` with ``model.generate``.

    Returns ``tokens`` ``[B, P+N]``, ``attention_mask`` ``[B, P+N]`` and ``response_mask``
    ``[B, N]`` with ``N == max_new_tokens`` always (rows stop at EOS, which is kept and
    masked in; everything after it is ``pad_id`` and masked out).
    """
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    tf = transformers()
    gen_cfg = tf.GenerationConfig(
        max_new_tokens=int(max_new_tokens), min_new_tokens=0, do_sample=bool(do_sample),
        temperature=float(temperature) if do_sample else None,
        top_p=float(top_p) if do_sample else None, top_k=int(top_k) if do_sample else None,
        eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=None, use_cache=True)
    out = model.generate(input_ids=prompt, attention_mask=prompt_mask.long(),
                         generation_config=gen_cfg)
    p = prompt.shape[1]
    resp = out[:, p:]
    if resp.shape[1] < max_new_tokens:
        resp = nn.functional.pad(resp, (0, max_new_tokens - resp.shape[1]), value=pad_id)
    resp_mask = response_mask_from_tokens(resp, eos_id)
    resp = torch.where(resp_mask.bool(), resp, torch.full_like(resp, pad_id))
    return {"tokens": torch.cat([prompt, resp], 1),
            "attention_mask": torch.cat([prompt_mask.long(), resp_mask], 1),
            "response_mask": resp_mask}


# ------------------------------------------------------------------------- the module
class HFArgs(ModuleArgs):
    """``models.<name>.args`` of an :class:`HFModule` (subclasses extend it)."""

    head: Literal["lm", "value"] = "lm"
    head_seed: int = 0  # a fresh value head's initialisation
    do_sample: bool = True  # False: greedy decoding
    eos_id: int | None = None  # default: the tokenizer's
    pad_id: int | None = None


class HFModule(TorchModule):
    """A :class:`TorchModule` over a local Hugging Face model directory.

    Typed settings of ``models.<name>``: ``model_path`` (required), ``dtype`` (default: the
    checkpoint's ``torch_dtype`` from its config.json, so an fp32 checkpoint stays fp32),
    ``generation`` (max_new_tokens, temperature, top_p, top_k), ``optim`` (trainers get
    AdamW). ``args``: see :class:`HFArgs`. Subclasses write ``forward_step`` /
    ``train_step`` with the helpers below.
    """

    Args = HFArgs
    tokenizer: Any = None

    def __init__(self, name: str) -> None:
        transformers()  # fail now, naming the extra, rather than at setup time
        super().__init__(name)

    @property
    def model_path(self) -> str:
        path = self.model_config.model_path
        if not path:
            raise ConfigError(f"models.{self.name}.model_path must name a local HF model dir")
        return str(path)

    @property
    def dtype(self) -> torch.dtype:
        """``models.<name>.dtype``, else the checkpoint's own (never a silent bf16 cast)."""
        return torch_dtype(self.model_config.weights_dtype)

    def build_model(self) -> nn.Module:
        a = self.typed_args
        if a.head == "lm":
            return load_causal_lm(self.model_path, self.dtype, self.device)
        return HFValueModel.from_pretrained(self.model_path, self.dtype, a.head_seed,
                                            self.device)

    def setup(self) -> None:
        self.model = self.build_model()
        if Path(self.model_path, "tokenizer_config.json").is_file():
            self.tokenizer = load_tokenizer(self.model_path)
        if self.trainable:
            self.model.train()
            self.optimizer = self.optimizer_from_config(torch.optim.AdamW)
        else:
            self.model.eval()
            self.model.requires_grad_(False)

    # helpers for subclasses -----------------------------------------------------------
    def generate(self, prompt: torch.Tensor, prompt_mask: torch.Tensor, **overrides) -> dict:
        """Sample with ``models.<name>.generation`` (keyword ``overrides`` win: max_new_tokens,
        temperature, top_p, top_k, do_sample, eos_id, pad_id)."""
        g, a = self.model_config.generation, self.typed_args
        o = {"max_new_tokens": g.max_new_tokens or 16, "temperature": g.temperature,
             "top_p": g.top_p, "top_k": g.top_k, "do_sample": a.do_sample,
             "eos_id": self.tokenizer.eos_token_id if a.eos_id is None else a.eos_id,
             "pad_id": self.tokenizer.pad_token_id if a.pad_id is None else a.pad_id,
             **overrides}
        return generate(self.model, prompt.to(self.device), prompt_mask.to(self.device),
                        o["max_new_tokens"], o["eos_id"], o["pad_id"],
                        temperature=o["temperature"], top_p=o["top_p"],
                        do_sample=o["do_sample"], top_k=o["top_k"])

    def response_logprobs(self, tokens, mask, prompt_len, temperature=None):
        t = self.model_config.generation.temperature if temperature is None else temperature
        return response_logprobs(self.model, tokens.to(self.device), mask.to(self.device),
                                 prompt_len, t)

    def response_values(self, tokens, mask, prompt_len):
        return response_values(self.model, tokens.to(self.device), mask.to(self.device), prompt_len)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.model.save_pretrained(str(path))
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(path))


# -------------------------------------------------------- tiny models for tests/examples
def build_char_tokenizer(chars: str = DEFAULT_CHARS):
    """A character-level fast tokenizer built in code (no downloads): one id per character,
    then ``<pad>``, ``<s>``, ``</s>``, ``<unk>``. Decoding joins characters without spaces."""
    tf = transformers()
    tk = require("tokenizers", "hf", "flowrl's Hugging Face backend")
    specials = [SPECIAL_TOKENS[k] for k in ("pad", "bos", "eos", "unk")]
    vocab = {s: i for i, s in enumerate(specials)}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    raw = tk.Tokenizer(tk.models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk"]))
    raw.pre_tokenizer = tk.pre_tokenizers.Split(tk.Regex("."), behavior="isolated")
    raw.decoder = tk.decoders.Fuse()
    raw.add_special_tokens(specials)
    tok = tf.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token=SPECIAL_TOKENS["pad"], bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"], unk_token=SPECIAL_TOKENS["unk"], padding_side="left")
    return tok


def tiny_llama_config(vocab_size: int, hidden_size: int = 128, num_layers: int = 2,
                      num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 256,
                      max_position_embeddings: int = 256, initializer_range: float = 0.02,
                      **ids: int):
    tf = transformers()
    return tf.LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads, max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range, rms_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
        **ids)


def save_tiny_llama(path: str | os.PathLike, *, seed: int = 0, chars: str = DEFAULT_CHARS,
                    vocab_size: int | None = None, dtype: str = "fp32", **config_kw) -> Path:
    """Write a random-init tiny ``LlamaForCausalLM`` and a char tokenizer to ``path``.

    The same ``seed`` and sizes give the same weights. ``vocab_size`` defaults to the
    tokenizer's size rounded up to a multiple of 16. Returns the directory.
    """
    tf = transformers()
    tok = build_char_tokenizer(chars)
    n = len(tok)
    vocab = vocab_size or (n + 15) // 16 * 16
    if vocab < n:
        raise ValueError(f"vocab_size={vocab} is smaller than the tokenizer ({n} tokens)")
    cfg = tiny_llama_config(vocab, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id, **config_kw)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = tf.LlamaForCausalLM(cfg)
    model.to(torch_dtype(dtype))
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "flowrl_tiny.json").write_text(json.dumps({"seed": seed, "chars": chars}))
    return out
