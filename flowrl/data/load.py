"""load_dataset_spec: a :class:`DataConfig` -> train (and eval) records."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowrl.data.config import DataConfig
from flowrl.data.formats import DataFileError, read_rows
from flowrl.data.records import prepare


@dataclass
class DataSplits:
    """Records (dicts with flowrl's column names) to train on and to evaluate on."""

    train: list[dict]
    eval: list[dict] | None
    path: Path

    def column(self, name: str, split: str = "train") -> list:
        """One column of a split (``splits.column("prompt")`` -> the prompts)."""
        rows = self.train if split == "train" else (self.eval or [])
        missing = [i for i, r in enumerate(rows) if name not in r]
        if missing:
            raise DataFileError(f"data file {self.path} row {missing[0]} ({split}): no column "
                                f"'{name}'")
        return [r[name] for r in rows]


def split_eval(rows: list[dict], fraction: float, seed: int, path: Path
               ) -> tuple[list[dict], list[dict]]:
    """Hold out ``round(fraction * len)`` rows (at least one) drawn with ``seed``; both parts
    keep the file's order, so the same seed gives the same split on every machine."""
    k = max(1, round(fraction * len(rows)))
    if k >= len(rows):
        raise DataFileError(f"data file {path}: eval_fraction={fraction} of {len(rows)} rows "
                            f"leaves nothing to train on")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:k])
    return ([r for i, r in enumerate(rows) if i not in held],
            [r for i, r in enumerate(rows) if i in held])


def load_dataset_spec(config: DataConfig, base_dir: str | Path | None = None,
                      tokenizer: Any = None) -> DataSplits:
    """Read, map, check and render ``config``'s data; paths are relative to ``base_dir`` (the
    config file's directory). ``tokenizer`` renders chat prompts (``apply_chat_template``)."""
    base = Path(base_dir or ".")
    path = (base / config.path).resolve()
    rows = prepare(read_rows(path, config.format, config.split), config, path, tokenizer)
    evals = None
    if config.eval_path is not None:
        eval_file = (base / config.eval_path).resolve()
        evals = prepare(read_rows(eval_file, config.format, config.split), config, eval_file,
                        tokenizer)
    elif config.eval_split is not None:
        evals = prepare(read_rows(path, config.format, config.eval_split), config, path,
                        tokenizer)
    elif config.eval_fraction is not None:
        rows, evals = split_eval(rows, config.eval_fraction, config.seed, path)
    return DataSplits(rows, evals, path)
