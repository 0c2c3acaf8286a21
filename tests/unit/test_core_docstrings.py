"""The shared core can be used without reading it: each public function of
services/common says what it takes (`Args:`) and what it gives back (`Returns:`), and the
package says what it exports (`__all__`). ruff's D rules check that the docstrings exist."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import services.common

CORE = Path(services.common.__file__).parent
MODULES = sorted(p for p in CORE.glob("*.py") if p.name != "__init__.py")


def _returns_nothing(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    ret = node.returns
    return (
        ret is None
        or (isinstance(ret, ast.Constant) and ret.value is None)
        or (isinstance(ret, ast.Name) and ret.id == "NoReturn")
    )


def _is_overload(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "overload" for d in node.decorator_list)


def undocumented(path: Path) -> list[str]:
    """The public top-level functions of `path` whose docstring lacks a section it needs."""
    missing = []
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if node.name.startswith("_") or _is_overload(node):
            continue  # an @overload only declares a signature; the implementation documents
        doc = ast.get_docstring(node) or ""
        params = [a.arg for a in [*node.args.args, *node.args.kwonlyargs]]
        if any(p not in ("self", "cls") for p in params) and "Args:" not in doc:
            missing.append(f"{node.name}: no Args")
        if not _returns_nothing(node) and "Returns:" not in doc:
            missing.append(f"{node.name}: no Returns")
    return missing


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_public_functions_say_what_they_take_and_give(path: Path) -> None:
    assert undocumented(path) == []


def test_the_check_sees_a_missing_section(tmp_path: Path) -> None:
    sloppy = tmp_path / "sloppy.py"
    sloppy.write_text('def f(a: int) -> int:\n    """Twice a."""\n    return 2 * a\n')
    assert undocumented(sloppy) == ["f: no Args", "f: no Returns"]


def test_the_package_exports_its_modules() -> None:
    assert sorted(services.common.__all__) == sorted(p.stem for p in MODULES)
