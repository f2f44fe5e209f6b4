"""Number types for config fields: a YAML ``true`` is never read as 1."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


def _no_bool(value: Any) -> Any:
    # YAML reads `true` as a bool and pydantic would take it as 1: a typo must not count.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]
