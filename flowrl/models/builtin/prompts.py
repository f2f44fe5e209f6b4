"""The policy's prompt dataset: records (``flowrl.data``) or plain strings -> left-padded
token batches that keep the prompt text and every other column.

:func:`left_align` puts a prompt block back into the left-padded layout after a collation
that right-padded it (the replay buffer pads unequal widths on the right).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from flowrl.errors import DatasetError
from flowrl.models.sequences import left_align  # noqa: F401 (re-exported)

log = logging.getLogger("flowrl.models.builtin")

#: Keys the collated batch sets itself; a record column of that name would be overwritten.
RESERVED = ("prompt_mask", "prompt_text")


def as_records(model: str, items: Sequence[Any]) -> list[dict]:
    """``items`` as records: dicts with a string ``prompt`` (other columns kept), or strings."""
    out = []
    for i, item in enumerate(items):
        record = {"prompt": item} if isinstance(item, str) else item
        if not isinstance(record, dict):
            raise DatasetError(f"models.{model}.build_dataset: item {i} is a "
                               f"{type(item).__name__}; expected a prompt string or a record "
                               f"dict with a 'prompt' column")
        if not isinstance(record.get("prompt"), str):
            got = type(record.get("prompt")).__name__ if "prompt" in record else "no 'prompt'"
            raise DatasetError(f"models.{model}.build_dataset: record {i} has {got}; the "
                               f"'prompt' column must be text (flowrl.data renders chat "
                               f"messages to text with the tokenizer's template)")
        clash = [k for k in RESERVED if k in record]
        if clash:
            raise DatasetError(f"models.{model}.build_dataset: record {i} has column "
                               f"'{clash[0]}', a name the prompt batch sets itself; rename it")
        out.append(record)
    return out


def tokenize_prompts(tokenizer: Any, texts: list[str], max_len: int) -> tuple[list[list[int]], int]:
    """Token ids of each prompt, the *last* ``max_len`` kept (the end is where generation
    starts); returns the ids and how many prompts were cut. Special tokens (BOS) are added
    unless the text already begins with the tokenizer's BOS (a rendered chat template)."""
    bos = getattr(tokenizer, "bos_token", None)
    ids = []
    for text in texts:
        add = not (bos and text.startswith(bos))
        ids.append(tokenizer(text, add_special_tokens=add).input_ids)
    cut = sum(len(r) > max_len for r in ids)
    return [r[-max_len:] for r in ids], cut


class PromptDataset(Dataset):
    """Prompts tokenised once; :meth:`collate_fn` left-pads a batch to its longest prompt.

    A batch holds ``prompt`` ``[B, P]`` (long, left-padded with the tokenizer's pad id),
    ``prompt_mask`` ``[B, P]``, ``prompt_text`` (the prompt strings) and every other column
    of the records as a list of length ``B``. Prompts longer than ``max_prompt_len`` tokens
    are truncated from the left, so the text right before the response is kept.
    """

    def __init__(self, model: str, records: Sequence[Any], tokenizer: Any, max_prompt_len: int,
                 ) -> None:
        self.model = model
        self.records = as_records(model, records)
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            raise DatasetError(f"models.{model}: the tokenizer has no pad token (nor an EOS "
                               f"to pad with); set tokenizer.pad_token in the model dir")
        self.ids, cut = tokenize_prompts(tokenizer, [r["prompt"] for r in self.records],
                                         max_prompt_len)
        empty = [i for i, r in enumerate(self.ids) if not r]
        if empty:
            raise DatasetError(f"models.{model}.build_dataset: record {empty[0]} has an empty "
                               f"prompt (no tokens); generation needs at least one")
        if cut:
            log.warning("models.%s: %d of %d prompts are longer than args.max_prompt_len=%d "
                        "tokens and were truncated from the left", model, cut, len(self.ids),
                        max_prompt_len)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return {"ids": self.ids[i], "record": self.records[i]}

    def collate_fn(self, samples: list[dict]) -> dict[str, Any]:
        width = max(len(s["ids"]) for s in samples)
        prompt = torch.full((len(samples), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        for row, s in enumerate(samples):
            n = len(s["ids"])
            prompt[row, width - n:] = torch.tensor(s["ids"], dtype=torch.long)
            mask[row, width - n:] = 1
        batch: dict[str, Any] = {"prompt": prompt, "prompt_mask": mask,
                                 "prompt_text": [s["record"]["prompt"] for s in samples]}
        columns = dict.fromkeys(k for s in samples for k in s["record"] if k != "prompt")
        for k in columns:  # a column some records lack is None there
            batch[k] = [s["record"].get(k) for s in samples]
        return batch
