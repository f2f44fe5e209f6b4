"""``runtime_args.wandb``: the Weights & Biases run a training run logs to (optional extra)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class WandbArgs(BaseModel):
    """Where and how metrics go to W&B (``pip install 'flowrl[wandb]'``).

    ``mode: offline`` writes the run under ``dir`` with no network (``wandb sync`` uploads it
    later); ``disabled`` keeps the section but logs nothing.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    project: str = Field(..., min_length=1, description="the W&B project")
    name: str | None = Field(None, description="the run's display name (default: W&B's)")
    entity: str | None = Field(None, description="team or user (default: your W&B default)")
    group: str | None = Field(None, description="groups related runs in the W&B UI")
    mode: Literal["online", "offline", "disabled"] = Field(
        "online", description="online: stream to the server; offline: files only, no network; "
        "disabled: log nothing")
    dir: str | None = Field(None, description="where W&B writes its run files (default "
                            "output_dir, else W&B's ./wandb)")
    tags: list[str] = Field(default_factory=list, description="tags of the W&B run")
