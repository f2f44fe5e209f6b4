"""Helpers and fixtures for the heavy-backend tests (``pytest -m backend tests/backends``).

Not a ``conftest.py``: several test folders here have one, and a second module named
``conftest`` on ``sys.path`` would shadow the others' helpers. Test files import from it.

Every model here is a tiny random-init Llama written to a temp directory and loaded back
with ``from_pretrained(path, local_files_only=True)``: the hub is never contacted.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def need(module: str, extra: str):
    """Skip (with the install command) when ``module`` is not installed."""
    from flowrl.models._extras import available

    if not available(module):
        pytest.skip(f"{module} is not installed: pip install 'flowrl[{extra}]'")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A tiny random Llama (hidden 64, 2 layers, GQA 4/2 heads) + char tokenizer on disk."""
    need("transformers", "hf")
    from flowrl.models.hf import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), seed=0, initializer_range=0.2)
