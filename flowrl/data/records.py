"""Rows -> records flowrl reads: columns renamed to flowrl's names, required columns checked,
message-list prompts rendered with the tokenizer's chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from flowrl.data.config import REQUIRED, DataConfig
from flowrl.data.formats import DataFileError

#: Columns that must hold text (the prompt may also be a list of chat messages).
TEXT_COLUMNS = ("chosen", "rejected", "completion")


def map_columns(rows: list[dict], columns: Mapping[str, str], path: Path) -> list[dict]:
    """Rename ``user -> canonical`` in every row; a mapped column a row lacks is an error."""
    out = []
    for i, row in enumerate(rows):
        for user, target in columns.items():
            if user not in row:
                raise DataFileError(f"data file {path} row {i}: no column '{user}' (mapped to "
                                    f"'{target}' by data.columns); the row has "
                                    f"{', '.join(map(str, row)) or 'no columns'}")
        out.append({columns.get(k, k): v for k, v in row.items()})
    return out


def check_required(rows: list[dict], kind: str, path: Path) -> None:
    """Every row has the columns ``kind`` needs, with text where text is needed."""
    for i, row in enumerate(rows):
        for col in REQUIRED[kind]:
            if row.get(col) is None:
                raise DataFileError(
                    f"data file {path} row {i}: missing column '{col}' (needed for "
                    f"kind={kind}); the row has {', '.join(map(str, row))}. Map your column "
                    f"with data.columns: {{your_name: {col}}}")
        for col in TEXT_COLUMNS:
            if col in row and not isinstance(row[col], str):
                raise DataFileError(f"data file {path} row {i}: column '{col}' is a "
                                    f"{type(row[col]).__name__}, expected a string")


def render_prompts(rows: list[dict], mode: str, tokenizer: Any, path: Path) -> list[dict]:
    """Prompts as text: message lists (and, with ``always``, strings) through the chat
    template; the messages themselves are kept under ``messages`` for reward functions."""
    out = []
    for i, row in enumerate(rows):
        prompt = row.get("prompt")
        if isinstance(prompt, str) and mode != "always":
            out.append(row)
            continue
        where = f"data file {path} row {i}"
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        _check_messages(messages, where, mode)
        out.append({**row, "prompt": apply_chat_template(tokenizer, messages, where),
                    "messages": messages})
    return out


def _check_messages(messages: Any, where: str, mode: str) -> None:
    if not isinstance(messages, list) or not all(
            isinstance(m, Mapping) and "role" in m and "content" in m for m in messages):
        raise DataFileError(f"{where}: column 'prompt' is a {type(messages).__name__}; expected "
                            f"a string or a list of {{role, content}} messages")
    if mode == "never":
        raise DataFileError(f"{where}: column 'prompt' is a list of messages but "
                            f"data.chat_template is 'never'")


def apply_chat_template(tokenizer: Any, messages: list, where: str) -> str:
    """``messages`` rendered as the prompt text the model continues (generation prompt on)."""
    if tokenizer is None or not hasattr(tokenizer, "apply_chat_template"):
        raise DataFileError(f"{where}: the prompt is a list of messages, which needs a tokenizer "
                            f"with a chat template (got {type(tokenizer).__name__})")
    try:
        return tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                             add_generation_prompt=True)
    except Exception as err:  # no template set, or the template rejected the messages
        raise DataFileError(f"{where}: the tokenizer's chat template failed "
                            f"({type(err).__name__}: {err})") from err


def prepare(rows: list[dict], config: DataConfig, path: Path, tokenizer: Any) -> list[dict]:
    """Mapping, checks and prompt rendering, in that order."""
    rows = map_columns(rows, config.columns, path)
    check_required(rows, config.kind, path)
    return render_prompts(rows, config.chat_template, tokenizer, path)
