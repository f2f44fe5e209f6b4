"""``key=value`` overrides of a train config: ``algorithm.kl.coef=0.01``,
``runtime_args.num_episode=3``, ``models.actor.optim.lr=1e-5``.

Values are read as YAML scalars (``true``, ``null``, ``[1, 2]``, ``{a: 1}`` all work), plus
what YAML 1.1 leaves a string although every user means a number (``1e-5``). They are written
into the raw config before it is validated, so a wrong key or value gets the same error as
in the file (an unknown key names its "did you mean").
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from flowrl.errors import ConfigError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
# YAML 1.1 reads 1e-5 (no dot) as a string; users mean a number.
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` as ``(["a", "b", "c"], parsed value)``.

    Raises:
        ConfigError: no ``=``, an empty or malformed key, or a value YAML cannot read; the
            message quotes the override.
    """
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE with a dotted key, e.g. "
                          f"algorithm.kl.coef=0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not _KEY.match(key):
        raise ConfigError(f"override {text!r}: {key!r} is not a dotted key (e.g. "
                          f"runtime_args.num_episode=3)")
    if _FLOAT.match(raw.strip()):
        return key.split("."), float(raw)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML "
                          f"({getattr(e, 'problem', e)})") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``data`` (changed in place and returned) with each override written in, in order."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[:i + 1])
                raise ConfigError(f"override {text!r}: {where} is a {type(child).__name__} "
                                  f"({child!r}), not a section with keys")
            node = child
        node[path[-1]] = value
    return data
