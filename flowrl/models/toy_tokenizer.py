"""A character-level tokenizer over a small vocabulary file shipped with flowrl."""

from __future__ import annotations

from pathlib import Path

import torch

DEFAULT_VOCAB = Path(__file__).resolve().parent.parent / "assets" / "toy_vocab.txt"


class ToyTokenizer:
    """Characters in, ids out. ``<pad>``=0, ``<bos>``=1, ``<eos>``=2 by the vocab file's order."""

    def __init__(self, vocab_file: str | Path = DEFAULT_VOCAB) -> None:
        lines = Path(vocab_file).read_text().splitlines()
        self.id_to_token = [(" " if t == "<space>" else t) for t in lines if t]
        self.token_to_id = {t: i for i, t in enumerate(self.id_to_token)}
        self.pad_id = self.token_to_id["<pad>"]
        self.bos_id = self.token_to_id["<bos>"]
        self.eos_id = self.token_to_id["<eos>"]

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    def encode(self, text: str, bos: bool = True) -> list[int]:
        unknown = sorted({c for c in text if c not in self.token_to_id})
        if unknown:
            raise ValueError(f"characters not in the toy vocabulary: {unknown!r}")
        return ([self.bos_id] if bos else []) + [self.token_to_id[c] for c in text]

    def decode(self, ids, skip_special: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if i == self.eos_id and skip_special:
                break
            if skip_special and i in (self.pad_id, self.bos_id):
                continue
            out.append(self.id_to_token[i])
        return "".join(out)

    def pad_left(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad to a batch (generation continues on the right): ids and attention mask."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        return ids, mask
