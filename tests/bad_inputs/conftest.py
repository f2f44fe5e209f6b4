"""Small fixtures shared by the bad-input tests.

- ``write_yaml(text, name="c.yaml")``: writes ``text`` under ``tmp_path`` and returns the path.
- ``Echo``: a tiny module whose ``forward_step`` doubles ``x`` and whose ``build_dataset``
  wraps the prompts in :class:`ListDataset`.
- ``tiny_flow_env``: ``flowrl.init`` with sections for ``echo`` and ``trainer`` and returns
  ``(Echo("echo"), Learner("trainer"))``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch.utils.data import Dataset

import flowrl
from flowrl import BaseModule


class ListDataset(Dataset):
    """One ``{"x": tensor}`` sample per prompt (default collation)."""

    def __init__(self, prompts: list) -> None:
        self.prompts = list(prompts)
        self.collate_fn = None

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": torch.tensor(float(self.prompts[i]))}


class Echo(BaseModule):
    def build_dataset(self, prompts: list, is_eval: bool = False) -> Dataset:
        return ListDataset(prompts)

    def forward_step(self, data: dict, iteration: int = 0) -> dict:
        return {"y": data["x"] * 2}


class Learner(BaseModule):
    def train_step(self, data: list, iteration: int) -> dict:
        return {"loss": 0.0}


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[..., Path]:
    def write(text: str, name: str = "c.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def tiny_flow_env() -> tuple[Echo, Learner]:
    flowrl.init({"runtime_args": {"progress": False},
                 "models": {"echo": {}, "trainer": {}}})
    return Echo("echo"), Learner("trainer")
