"""Text with a real Hugging Face tokenizer (a tiny one built in code, no downloads):
decode_completions skips special tokens (issue 15 item 9: RuleReward read '6</s>' and
exact_match scored a right answer 0), and data prompts rendered with its chat template."""

from __future__ import annotations

import json

import pytest
import torch

from _backend_utils import need
from flowrl.data import DataConfig, load_dataset_spec
from flowrl.engines.rewards import exact_match
from flowrl.rewards import decode_completions

pytestmark = pytest.mark.backend

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
    need("transformers", "hf")
    import tokenizers as tk
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + list("0123456789+= "))}
    raw = tk.Tokenizer(tk.models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = tk.pre_tokenizers.Split(tk.Regex("."), behavior="isolated")
    raw.decoder = tk.decoders.Fuse()
    raw.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>")
    tok.chat_template = TEMPLATE
    return tok


def test_special_tokens_are_skipped_so_exact_match_scores_a_right_answer(tokenizer):
    ids = tokenizer.encode("6", add_special_tokens=False) + [tokenizer.eos_token_id,
                                                            tokenizer.pad_token_id]
    assert tokenizer.decode(ids) == "6</s><pad>"  # what RuleReward decoded (the defect)
    assert exact_match(tokenizer.decode(ids[:2]), "6") == 0.0
    rows = torch.tensor([ids, tokenizer.encode("12", add_special_tokens=False)
                         + [tokenizer.eos_token_id]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    texts = decode_completions(tokenizer, rows, mask)
    assert texts == ["6", "12"] and exact_match(texts[0], "6") == 1.0


def test_message_prompts_through_the_tokenizers_chat_template(tmp_path, tokenizer):
    msgs = [{"role": "system", "content": "add"}, {"role": "user", "content": "1+2="}]
    (tmp_path / "d.jsonl").write_text(json.dumps({"messages_col": msgs, "answer": "3"}) + "\n")
    cfg = DataConfig(path="d.jsonl", columns={"messages_col": "prompt"})
    row = load_dataset_spec(cfg, tmp_path, tokenizer=tokenizer).train[0]
    assert row["prompt"] == "<|system|>add\n<|user|>1+2=\n<|assistant|>"
    assert row["messages"] == msgs and row["answer"] == "3"
