"""``output_dir/metrics.jsonl``: one JSON object per episode, rewritten on resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class JsonlSink:
    """Appends each row as one line; :meth:`restore` rewrites the file to the checkpoint's rows
    (atomically), dropping any logged after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def restore(self, history: list[dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
        os.replace(tmp, self.path)

    def close(self) -> None:
        pass  # every log() closes the file
