"""Preference data for DPO: prompt/chosen/rejected records, tokenized into pair batches.

A record is a mapping ``{"prompt": str, "chosen": str, "rejected": str}`` (extra keys are
ignored); a JSONL file holds one per line (:func:`load_preference_records`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch.utils.data import Dataset

from flowrl.errors import ConfigError

RECORD_KEYS = ("prompt", "chosen", "rejected")


def check_preference_records(records: Iterable[Any], where: str = "preference data") -> list[dict]:
    """The records as dicts; an error names the first bad record and key."""
    out = []
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise ConfigError(f"{where}: record {i} is a {type(r).__name__}, expected a mapping "
                              f"with keys {RECORD_KEYS}")
        for k in RECORD_KEYS:
            if not isinstance(r.get(k), str):
                got = "missing" if k not in r else f"a {type(r[k]).__name__}"
                raise ConfigError(f"{where}: record {i} key '{k}' is {got}, expected a string")
        out.append({k: r[k] for k in RECORD_KEYS})
    return out


def load_preference_records(path: str | Path) -> list[dict]:
    """Read prompt/chosen/rejected records from a JSONL file (one JSON object per line)."""
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return check_preference_records(records, str(path))


class PreferenceDataset(Dataset):
    """Tokenized preference pairs; ``collate_fn`` right-pads each side to the batch's longest.

    Each side is ``encode(prompt) + encode_response(response) + [eos_id]``; its loss mask is 1
    on the response and EOS tokens. Sequences longer than ``max_len`` are an error.
    """

    def __init__(self, records: Iterable[Any], encode: Callable[[str], list[int]], pad_id: int,
                 eos_id: int | None = None,
                 encode_response: Callable[[str], list[int]] | None = None,
                 max_len: int | None = None) -> None:
        self.records = check_preference_records(records)
        self.pad_id = pad_id
        encode_response = encode_response or encode
        eos = [] if eos_id is None else [eos_id]
        self.items = []
        for i, r in enumerate(self.records):
            prompt = list(encode(r["prompt"]))
            item = {}
            for side in ("chosen", "rejected"):
                resp = list(encode_response(r[side])) + eos
                if max_len is not None and len(prompt) + len(resp) > max_len:
                    raise ConfigError(f"preference record {i}: prompt + {side} is "
                                      f"{len(prompt) + len(resp)} tokens, over max_len={max_len}")
                item[side] = (prompt + resp, len(prompt))
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        return self.items[idx]

    def collate_fn(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        out = {}
        for side in ("chosen", "rejected"):
            seqs = [s[side] for s in samples]
            width = max(len(ids) for ids, _ in seqs)
            tokens = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            loss_mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, (ids, n_prompt) in enumerate(seqs):
                tokens[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                mask[i, :len(ids)] = 1
                loss_mask[i, n_prompt:len(ids)] = 1
            out.update({f"{side}_tokens": tokens, f"{side}_mask": mask,
                        f"{side}_loss_mask": loss_mask})
        return out
