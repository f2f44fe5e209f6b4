"""Validating one standalone config section (``reward:``, ``data:``) into its pydantic model.

Errors read like the config loader's: one line per problem, with the section's dotted path
and a "did you mean" for an unknown key.
"""

from __future__ import annotations

import difflib
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from flowrl.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def validate_section(model: type[M], data: Any, section: str) -> M:
    """``data`` as a ``model``, or a :class:`ConfigError` naming ``section.field``."""
    if isinstance(data, model):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{section}: expected a mapping, got a {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        lines = [f"invalid {section} section:"]
        for e in err.errors():
            loc = ".".join([section, *map(str, e["loc"])])
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                hint = difflib.get_close_matches(str(e["loc"][-1]), list(model.model_fields), n=1)
                msg = "unknown field" + (f"; did you mean '{hint[0]}'?" if hint else "")
            lines.append(f"  {loc}: {msg}")
        raise ConfigError("\n".join(lines)) from None
