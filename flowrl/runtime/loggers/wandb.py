"""Weights & Biases: ``runtime_args.wandb: {project, name, mode, dir, tags, ...}``.

The run starts when the logger is built (so the console can say where its files go), logs one
step per episode and finishes at the end of ``learn()``; a later ``learn()`` (or a resumed run
with an ``output_dir``, which keeps the run id in ``output_dir/wandb_run_id``) continues the
same W&B run. W&B cannot drop steps, so after a resume it keeps what it already had for the
replayed episodes (``metrics.jsonl`` and TensorBoard are rewritten to the checkpoint's rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowrl.config.tracking import WandbArgs
from flowrl.errors import FlowRLError
from flowrl.models._extras import require


class WandbError(FlowRLError):
    """W&B refused to start a run (no API key online, an unwritable ``dir``, ...)."""


class WandbSink:
    """Logs rows to a W&B run (``mode`` online or offline; ``disabled`` builds no sink)."""

    def __init__(self, args: WandbArgs, output_dir: str | None,
                 run_config: dict[str, Any] | None = None, resume: bool = False) -> None:
        self.wandb = require("wandb", "wandb", "runtime_args.wandb")
        self.args = args
        self.dir = args.dir or output_dir  # None: W&B's own default (./wandb)
        self.config = run_config or {}
        self._id_file = Path(output_dir) / "wandb_run_id" if output_dir else None
        self.run_id = self._id_file.read_text().strip() if (
            resume and self._id_file is not None and self._id_file.is_file()) else None
        self._resuming = self.run_id is not None
        self.run = None
        self._start()

    def _start(self) -> None:
        a = self.args
        try:
            if self.dir:
                Path(self.dir).mkdir(parents=True, exist_ok=True)
            self.run = self.wandb.init(
                project=a.project, name=a.name, entity=a.entity, group=a.group, tags=a.tags,
                mode=a.mode, dir=self.dir, config=self.config, id=self.run_id,
                resume="allow" if self._resuming else None,
                # flowrl prints its own progress; W&B must not capture or wrap the console
                settings=self.wandb.Settings(console="off", silent=True))
        except Exception as e:  # W&B raises its own types; name the section and the cause
            raise WandbError(
                f"runtime_args.wandb: could not start the W&B run (project '{a.project}', mode "
                f"{a.mode}): {type(e).__name__}: {e}. Without a network use mode: offline "
                f"(and `wandb sync` later)") from e
        self.run_id, self._resuming = self.run.id, True  # a restart continues this run
        if self._id_file is not None:
            self._id_file.write_text(self.run_id + "\n")

    @property
    def run_dir(self) -> Path:
        """The directory of this run's W&B files (``files/`` lies inside it)."""
        return Path(self.run.dir).parent

    def describe(self) -> str:
        url = getattr(self.run, "url", None) if self.args.mode == "online" else None
        return f"{self.run_dir} ({self.args.mode}{', ' + url if url else ''})"

    def log(self, row: dict[str, Any]) -> None:
        if self.run is None:
            self._start()
        self.run.log({k: v for k, v in row.items() if k != "episode" and v is not None},
                     step=row["episode"])

    def restore(self, history: list[dict[str, Any]]) -> None:
        pass  # W&B keeps its steps; see the module docstring

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
