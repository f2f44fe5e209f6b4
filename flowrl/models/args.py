"""Typed module arguments: a module class declares ``Args`` (a pydantic model), and its
``models.<name>.args`` section is validated against it when the module is bound to a config.

>>> class Policy(TorchModule):
...     class Args(ModuleArgs):
...         max_prompt_len: int = 8
...     def setup(self):
...         width = self.typed_args.max_prompt_len

Settings every model has (generation, optimizer, parallelism, dtype, shape) are typed fields
of the model's section itself (:mod:`flowrl.config.model`), not ``args``. Modules without
``Args`` keep free-form ``args`` (a user's own module reads ``self.model_args``).
"""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ConfigDict, ValidationError

from flowrl.config import ModelConfig
from flowrl.errors import ConfigError

#: keys that used to be free-form ``args`` of the built-in modules, and where they live now.
MOVED_KEYS = {
    "model_path": "model_path", "dtype": "dtype",
    "max_new_tokens": "generation.max_new_tokens", "temperature": "generation.temperature",
    "top_p": "generation.top_p", "top_k": "generation.top_k", "lr": "optim.lr",
    "weight_decay": "optim.weight_decay", "betas": "optim.betas", "eps": "optim.eps",
    "max_grad_norm": "optim.grad_clip", "max_seq_len": "shape.max_seq_len",
}


class ModuleArgs(BaseModel):
    """Base for a module's ``Args``: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


def _message(name: str, cls: type[BaseModel], err: ValidationError) -> str:
    lines = [f"models.{name}.args does not fit {cls.__qualname__}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            field = str(e["loc"][-1])
            if field in MOVED_KEYS:
                msg = (f"a typed setting of every model now: write models.{name}."
                       f"{MOVED_KEYS[field]} (not under args)")
            else:
                hint = difflib.get_close_matches(field, list(cls.model_fields), n=1)
                msg = "unknown key" + (f"; did you mean '{hint[0]}'?" if hint else "") + \
                    f" (known: {', '.join(sorted(cls.model_fields)) or 'none'})"
        lines.append(f"  models.{name}.args.{key}: {msg}")
    return "\n".join(lines)


def validate_module_args(cls: type, name: str, section: ModelConfig) -> BaseModel | None:
    """``section.args`` validated against ``cls.Args`` (``None`` when the class has none).

    Raises:
        ConfigError: an unknown key (with a "did you mean", or where a moved key lives
            now) or a bad value, naming ``models.<name>.args.<key>``.
    """
    args_cls = getattr(cls, "Args", None)
    if args_cls is None:
        return None
    if not (isinstance(args_cls, type) and issubclass(args_cls, BaseModel)):
        raise TypeError(f"{cls.__qualname__}.Args must be a pydantic BaseModel subclass")
    try:
        return args_cls.model_validate(section.args)
    except ValidationError as e:
        raise ConfigError(_message(name, args_cls, e)) from None


__all__ = ["MOVED_KEYS", "ModuleArgs", "validate_module_args"]
