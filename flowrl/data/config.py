"""The ``data:`` section: where the prompts (and answers, preference pairs...) come from."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flowrl.config.sections import validate_section

#: Column names flowrl's algorithms read; every other column is passed through unchanged
#: (reward functions get them as keyword arguments).
CANONICAL = ("prompt", "answer", "chosen", "rejected", "completion")

#: Columns every row must have, by the kind of training the data feeds.
REQUIRED: dict[str, tuple[str, ...]] = {
    "rl": ("prompt",),                           # PPO, GRPO, ... (answer optional)
    "preference": ("prompt", "chosen", "rejected"),  # DPO
    "sft": ("prompt", "completion"),
}

DataFormat = Literal["auto", "jsonl", "parquet", "hf_disk"]


class DataConfig(BaseModel):
    """A local dataset, its column mapping, prompt rendering and eval split.

    >>> DataConfig(path="gsm8k.parquet", columns={"question": "prompt", "solution": "answer"},
    ...            eval_fraction=0.05)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="JSONL / Parquet file or a `datasets` save_to_disk directory, "
                                  "relative to the config file's directory")
    format: DataFormat = Field("auto", description="auto: by suffix (.jsonl/.json, .parquet) "
                                                   "or a save_to_disk directory")
    kind: Literal["rl", "preference", "sft"] = Field("rl", description="which columns rows need")
    columns: dict[str, str] = Field(default_factory=dict,
                                    description="your column name -> flowrl's (prompt, answer, "
                                                "chosen, rejected, completion)")
    split: str = Field("train", description="the split of a DatasetDict directory to train on")
    eval_path: str | None = Field(None, description="a separate eval file or directory")
    eval_split: str | None = Field(None, description="an eval split of the same DatasetDict")
    eval_fraction: float | None = Field(None, gt=0, lt=1,
                                        description="hold out this fraction of the rows")
    seed: int = Field(0, description="seed of the eval_fraction draw")
    chat_template: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: render message-list prompts with the tokenizer's chat "
                            "template; always: string prompts too (as one user message); "
                            "never: message lists are an error")

    @field_validator("columns")
    @classmethod
    def _known_targets(cls, columns: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for user, target in columns.items():
            if target not in CANONICAL:
                hint = difflib.get_close_matches(target, CANONICAL, n=1)
                raise ValueError(f"'{target}' (for your column '{user}') is not a flowrl column"
                                 + (f"; did you mean '{hint[0]}'?" if hint else "")
                                 + f" (known: {', '.join(CANONICAL)})")
            if target in seen:
                raise ValueError(f"'{seen[target]}' and '{user}' are both mapped to "
                                 f"'{target}'")
            seen[target] = user
        return columns

    @model_validator(mode="after")
    def _one_eval_source(self) -> DataConfig:
        given = [k for k in ("eval_path", "eval_split", "eval_fraction")
                 if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one eval source; got {' and '.join(given)}")
        return self


def parse_data_config(data: Any) -> DataConfig:
    """The ``data:`` section as a :class:`DataConfig`; errors are ``ConfigError``s naming
    ``data.<field>``."""
    return validate_section(DataConfig, data, "data")
