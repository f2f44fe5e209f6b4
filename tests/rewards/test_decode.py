"""decode_completions: completion ids -> text without special tokens, with flowrl's
ToyTokenizer (a Hugging Face tokenizer: tests/backends/test_hf_text.py)."""

from __future__ import annotations

import pytest
import torch

from flowrl.models.toy_tokenizer import ToyTokenizer
from flowrl.rewards import TokenizerTypeError, decode_completions


def test_toy_tokenizer_rows_cut_by_the_mask_and_without_special_tokens():
    tok = ToyTokenizer()
    six, seventeen = tok.encode("6", bos=False), tok.encode("17", bos=False)
    ids = torch.tensor([six + [tok.eos_id, tok.pad_id, tok.pad_id],
                        seventeen + [tok.eos_id, tok.pad_id]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    assert decode_completions(tok, ids, mask) == ["6", "17"]
    assert decode_completions(tok, [six + [tok.eos_id]]) == ["6"]  # lists, no mask


def test_a_tokenizer_without_a_skip_switch_is_refused_by_name():
    class Plain:
        def decode(self, ids):
            return "".join(map(str, ids))

    with pytest.raises(TokenizerTypeError, match="cannot decode completions with Plain: its "
                                                 "decode\\(\\) takes neither skip_special_tokens "
                                                 "nor skip_special"):
        decode_completions(Plain(), [[1, 2]])
