"""The architecture's rules that a grep can check: lower rooms never reach up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "selfmeta"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("room, above", [
    ("data", ("selfmeta.engine", "selfmeta.methods", "selfmeta.meta", "selfmeta.api", "selfmeta.cli")),
    ("objectives", ("selfmeta.engine", "selfmeta.methods", "selfmeta.meta", "selfmeta.data")),
    ("encoders", ("selfmeta.engine", "selfmeta.methods", "selfmeta.meta")),
])
def test_lower_rooms_do_not_import_higher_ones(room, above):
    for path in sorted((SRC / room).rglob("*.py")):
        upward = sorted(m for m in imported_modules(path) if m.startswith(above))
        assert not upward, f"{path.relative_to(SRC)} imports {upward}"
