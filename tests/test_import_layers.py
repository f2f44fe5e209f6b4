"""Imports run one way: cli -> flowrl (the public API) -> engines -> runtime / dsl / report ->
compiler -> models -> ir -> kernels -> context -> config -> errors, and no import circles.

Every module of flowrl/ is parsed with ``ast``; every ``import`` of a flowrl module counts,
at module level or inside a function, except under ``if TYPE_CHECKING:`` (types only, never
run). A module may import its own package (the first name after ``flowrl.``) or a package of
a lower layer. Kernels are a leaf (no flowrl imports at all); models sit just above the IR
(today they use context, config, errors and kernels). Two stricter rules: ``flowrl.ir``
imports only ``flowrl.errors`` (no pass, runtime, renderer or config loader), and
``flowrl.report`` (renderers) is imported by the CLI only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent / "flowrl"

#: package -> layer; a module may import packages of strictly lower layers (or its own).
LAYERS = {
    "errors": 0, "chatlearn_compat": 0.5, "config": 1, "context": 1.5, "kernels": 2,
    "algorithms": 2.5, "ir": 3,
    "models": 4, "compiler": 5, "runtime": 6, "dsl": 6, "report": 6, "engines": 7,
    "flowrl": 8, "cli": 9,
    "data": 4.5, "rewards": 4.5,  # issue 15: user data / reward functions; import models' extras
    "agents": 4.5,  # issue 16: environments, tools and the multi-turn rollout module
    "recipes": 7.5,  # issue 15: `flowrl train` builds engines from a config (above engines)
    # issue 15: the built-in HF modules score with reward functions and read datasets, so they
    # sit above data/rewards while the backends they build on stay in `models`.
    "models.builtin": 4.8,
}

#: Permanent, deliberate exceptions: (importer, imported) -> why.
ALLOWED: dict[tuple[str, str], str] = {}

#: Violations outside the compiler / ir / report packages that exist today.
#: TODO(issue 11): the runtime re-layering removes these; delete each entry with its import.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}

MY_PACKAGES = ("flowrl.ir", "flowrl.compiler", "flowrl.report", "flowrl.cli")


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """flowrl modules an import statement loads (``from pkg import mod`` -> ``pkg.mod``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "flowrl"]
    base = node.module or ""
    if node.level:  # relative: resolve against the importing module's package
        pkg = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            pkg = pkg.rsplit(".", 1)[0]
        base = f"{pkg}.{base}" if base else pkg
    if base.split(".")[0] != "flowrl":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _imports(module: str, source: str | None = None) -> list[tuple[str, int]]:
    """(imported flowrl module, line) for every import outside ``if TYPE_CHECKING:``."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for c in child.orelse:
                    visit(c)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.extend((t, child.lineno) for t in _targets(module, child))
            visit(child)

    visit(ast.parse(MODULES[module].read_text() if source is None else source))
    return out


EDGES = [(m, t, line) for m in sorted(MODULES) for t, line in _imports(m) if t != m]


def package(module: str) -> str:
    """The layer-bearing package of a module: ``flowrl.compiler.memory`` -> ``compiler``."""
    parts = module.split(".")
    if ".".join(parts[1:3]) in LAYERS:  # a sub-package with its own layer (models.builtin)
        return ".".join(parts[1:3])
    return parts[1] if len(parts) > 1 else "flowrl"


def _violations() -> list[str]:
    out = []
    for src, dst, line in EDGES:
        if (src, dst) in ALLOWED or (src, dst) in KNOWN_VIOLATIONS:
            continue
        a, b = package(src), package(dst)
        if a == b:
            continue
        if a not in LAYERS or b not in LAYERS:
            out.append(f"{src}:{line} -> {dst}: package not in LAYERS (add it)")
        elif LAYERS[b] >= LAYERS[a]:
            out.append(f"{src}:{line} imports {dst} ({a} may not import {b})")
        elif a == "ir" and b != "errors":
            out.append(f"{src}:{line} imports {dst} (flowrl.ir imports only flowrl.errors)")
        elif b == "report" and a != "cli":
            out.append(f"{src}:{line} imports {dst} (renderers are for the CLI only)")
    return out


def test_every_package_has_a_layer():
    assert {package(m) for m in MODULES} <= set(LAYERS)


def test_imports_run_one_way():
    assert _violations() == []


def test_known_violations_still_exist_and_are_outside_the_compiler():
    # A fixed violation must leave the allowlist, and none may be in the re-layered packages.
    edges = {(s, d) for s, d, _ in EDGES}
    for src, dst in KNOWN_VIOLATIONS:
        assert (src, dst) in edges, f"{src} -> {dst} is gone: remove it from KNOWN_VIOLATIONS"
        assert not src.startswith(MY_PACKAGES)


def test_no_import_cycles():
    g = nx.DiGraph((s, d) for s, d, _ in EDGES if (s, d) not in ALLOWED)
    cycles = sorted(nx.simple_cycles(g), key=len)
    assert cycles == [], f"import cycles, shortest first: {cycles[:5]}"


def test_checker_sees_function_level_imports_and_skips_type_checking():
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import flowrl.cli\n"
           "def f():\n    from flowrl.engines import engine\n")
    assert [t for t, _ in _imports("flowrl.ir.probe", src)] == ["flowrl.engines.engine"]


def test_schedule_renderers_come_from_report_and_name_it_when_missing(monkeypatch):
    import flowrl.report  # noqa: F401  (registers the renderers)
    from flowrl.errors import FlowRLError
    from flowrl.ir import schedule as ir_schedule
    from flowrl.report.text import explain_text

    assert ir_schedule.RENDERERS["explain"] is explain_text
    monkeypatch.setattr(ir_schedule, "RENDERERS", {})
    with pytest.raises(FlowRLError, match=r"Schedule.explain\(\).*import flowrl.report"):
        ir_schedule._renderer("explain")
