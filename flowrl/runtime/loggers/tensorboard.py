"""TensorBoard scalars under ``output_dir/tb``, one step per episode."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from flowrl.errors import MissingExtraError


def tensorboard_dir(output_dir: str | None, tensorboard: bool | None) -> Path | None:
    """``output_dir/tb`` when TensorBoard is on: ``True`` (an error when the package is
    missing), ``False``, or ``None`` for "when ``output_dir`` is set and it is installed"."""
    if not output_dir:
        return None
    installed = importlib.util.find_spec("tensorboard") is not None
    if tensorboard and not installed:
        raise MissingExtraError(
            "runtime_args.tensorboard is on but the 'tensorboard' package is not "
            "installed: pip install 'flowrl[tensorboard]'")
    return Path(output_dir) / "tb" if tensorboard or (tensorboard is None and installed) \
        else None


class TensorBoardSink:
    """A ``SummaryWriter`` opened on first use; after :meth:`restore` it purges the steps
    logged after the checkpoint."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.writer = None
        self._purge_step: int | None = None

    def log(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.log_dir), purge_step=self._purge_step)
        for k, v in row.items():
            if k != "episode" and v is not None:
                self.writer.add_scalar(k, v, row["episode"])
        self.writer.flush()

    def restore(self, history: list[dict[str, Any]]) -> None:
        self.close()
        self._purge_step = (history[-1]["episode"] + 1) if history else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
