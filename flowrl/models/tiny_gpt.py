"""A small GPT-style transformer for tests and CPU examples (random init, no downloads).

Supports left-padded prompts (attention mask + positions from the mask), a KV cache for
sampling, and an optional scalar value head for critics and reward models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flowrl import kernels


@dataclass
class TinyGPTConfig:
    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    max_len: int = 128
    value_head: bool = False


class _Block(nn.Module):
    def __init__(self, c: TinyGPTConfig) -> None:
        super().__init__()
        self.n_heads = c.n_heads
        self.ln1 = nn.LayerNorm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.proj = nn.Linear(c.d_model, c.d_model)
        self.ln2 = nn.LayerNorm(c.d_model)
        self.mlp = nn.Sequential(nn.Linear(c.d_model, 4 * c.d_model), nn.GELU(),
                                 nn.Linear(4 * c.d_model, c.d_model))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, cache: tuple | None):
        b, t, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x)), (k, v)


class TinyGPT(nn.Module):
    """Decoder-only transformer. ``forward`` returns logits ``[B, T, V]`` (or values ``[B, T]``)."""

    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.max_len, config.d_model)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        out = 1 if config.value_head else config.vocab_size
        self.head = nn.Linear(config.d_model, out, bias=config.value_head)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: list | None = None, key_mask: torch.Tensor | None = None):
        """``key_mask`` covers cached + new keys when decoding with ``cache``."""
        b, t = tokens.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(tokens)
        keys = attention_mask if key_mask is None else key_mask
        pos = (keys.cumsum(1) - 1).clamp_min(0)[:, -t:]
        if int(pos.max()) >= self.config.max_len:
            raise ValueError(f"sequence of {int(pos.max()) + 1} tokens exceeds max_len="
                             f"{self.config.max_len}")
        x = self.tok(tokens) + self.pos(pos)
        n_keys = keys.shape[1]
        ones = torch.ones(t, n_keys, dtype=torch.bool, device=tokens.device)
        allowed = ones.tril(n_keys - t)[None, None] & keys[:, None, None, :].bool()
        # Fully padded query rows would give NaN; let each query see its own key (output unused).
        allowed = allowed | (ones.tril(n_keys - t) & ~ones.tril(n_keys - t - 1))[None, None]
        new_cache = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, allowed, None if cache is None else cache[i])
            new_cache.append(kv)
        out = self.head(self.ln_f(x))
        out = out.squeeze(-1) if self.config.value_head else out
        return out, new_cache

    def response_logprobs(self, tokens: torch.Tensor, attention_mask: torch.Tensor,
                          prompt_len: int, temperature: float = 1.0) -> torch.Tensor:
        """Log-probs ``[B, N]`` of the response tokens ``tokens[:, prompt_len:]``."""
        logits, _ = self(tokens, attention_mask)
        return kernels.token_logprobs(logits[:, prompt_len - 1:-1], tokens[:, prompt_len:],
                                      temperature=temperature)

    def response_values(self, tokens: torch.Tensor, attention_mask: torch.Tensor,
                        prompt_len: int) -> torch.Tensor:
        """Values ``[B, N]``: V of the state before each response token."""
        values, _ = self(tokens, attention_mask)
        return values[:, prompt_len - 1:-1]

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
                 eos_id: int, pad_id: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Sample continuations of left-padded prompts with a KV cache.

        Returns ``tokens`` [B, P+N], ``attention_mask`` [B, P+N] and ``response_mask`` [B, N]
        (1 up to and including EOS); after EOS a row only produces padding.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        b = prompt.shape[0]
        keys = prompt_mask.clone()
        logits, cache = self(prompt, prompt_mask)
        done = torch.zeros(b, dtype=torch.bool, device=prompt.device)
        new_tokens, new_mask = [], []
        for _ in range(max_new_tokens):
            probs = torch.softmax(logits[:, -1].float() / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            new_tokens.append(nxt)
            new_mask.append((~done).long())
            done = done | (nxt == eos_id)
            if bool(done.all()):
                break
            keys = torch.cat([keys, new_mask[-1][:, None]], 1)
            logits, cache = self(nxt[:, None], cache=cache, key_mask=keys)
        resp = torch.stack(new_tokens, 1)
        resp_mask = torch.stack(new_mask, 1)
        pad = max_new_tokens - resp.shape[1]
        if pad:
            resp = F.pad(resp, (0, pad), value=pad_id)
            resp_mask = F.pad(resp_mask, (0, pad), value=0)
        return {"tokens": torch.cat([prompt, resp], 1),
                "attention_mask": torch.cat([prompt_mask, resp_mask], 1),
                "response_mask": resp_mask}
