"""Completion ids -> text for rule rewards, without special tokens.

A rule such as ``exact_match`` must see ``'6'``, not ``'6<eos>'`` (or pad / BOS tokens), so
the text is decoded with the tokenizer's own skip-special-tokens switch: Hugging Face
tokenizers take ``skip_special_tokens=True``, flowrl's :class:`ToyTokenizer` ``skip_special``.
"""

from __future__ import annotations

import inspect
from typing import Any

from flowrl.errors import FlowRLError


class TokenizerTypeError(FlowRLError, TypeError):
    """The tokenizer has no known way to skip special tokens; names its class."""


def _skip_kwarg(tokenizer: Any) -> str:
    try:
        params = inspect.signature(tokenizer.decode).parameters
    except (AttributeError, TypeError, ValueError):
        params = {}
    for name in ("skip_special_tokens", "skip_special"):
        if name in params:
            return name
    if hasattr(tokenizer, "all_special_ids"):  # HF tokenizers take it through **kwargs
        return "skip_special_tokens"
    raise TokenizerTypeError(
        f"cannot decode completions with {type(tokenizer).__name__}: its decode() takes "
        f"neither skip_special_tokens nor skip_special, so special tokens would stay in the text")


def decode_completions(tokenizer: Any, ids: Any, mask: Any = None) -> list[str]:
    """One string per row of ``ids`` (a tensor or a list of lists), special tokens skipped.

    ``mask`` (same shape, 1 on the completion's tokens) limits each row to its first
    ``mask.sum()`` tokens, so padding after the end is never decoded.
    """
    rows = ids.tolist() if hasattr(ids, "tolist") else [list(r) for r in ids]
    if mask is not None:
        sums = mask.sum(1).tolist() if hasattr(mask, "sum") else [sum(m) for m in mask]
        rows = [r[:int(n)] for r, n in zip(rows, sums)]
    kw = {_skip_kwarg(tokenizer): True}
    return [tokenizer.decode(r, **kw) for r in rows]
