"""The layout's rules, checked: imports go one way, no cycles, small modules, honest errors."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from app.cli.main import WORKER_MODULE
from app.errors import BotError, CommandError, SettingsError, UsageError

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for path in [*ROOT.glob("app/**/*.py"), *ROOT.glob("workers/*.py"), ROOT / "health.py"]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every project module `path` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            candidates = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        names.update(c for c in candidates if c in known)
    return names


def test_app_never_imports_workers() -> None:
    modules = _modules()
    offenders = {
        name: sorted(i for i in _imports(path, modules) if i.split(".")[0] == "workers")
        for name, path in modules.items()
        if name.split(".")[0] == "app"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_module_imports_one_that_imports_it_back() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    cycles = []
    for start in graph:
        # Depth-first from each module; a path back to it is a cycle.
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(trail)
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert cycles == []


def test_modules_stay_small() -> None:
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_command_line_names_a_real_worker() -> None:
    assert callable(importlib.import_module(WORKER_MODULE).run_worker)


def test_the_root_error_is_never_raised_itself() -> None:
    with pytest.raises(TypeError, match="abstract"):
        BotError("what went wrong?")
    assert str(CommandError("for the member")) == "for the member"
    assert isinstance(SettingsError("X: bad"), UsageError)
