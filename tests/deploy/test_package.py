"""The wheel built from pyproject.toml is the whole installable project: the services and the
code generated from proto/ (the `shop.*` stubs and the `buf.validate` module they import),
with no `.pth` file or hand copy needed. A client team installs it and imports the stubs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.deploy.manifests import ROOT

STUBS = "shop.payment.v1.payment_service_pb2_grpc"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a clean copy of what the image's build context holds (no build/ left over
    from an earlier build can leak files into it)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("services", "gen"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        check=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (built,) = out.glob("shop_mesh-*.whl")
    return built


def test_the_wheel_carries_the_generated_code(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("shop/payment/v1/payment_service_pb2_grpc", "buf/validate/validate_pb2"):
        assert f"{module}.py" in names
        assert f"{module}.pyi" in names, "typed stubs travel with the code"
    assert "services/common/request_rules.py" in names
    assert not any(name.endswith(".pth") for name in names)


def test_an_empty_venv_with_the_wheel_imports_the_stubs(wheel: Path, tmp_path: Path) -> None:
    """A fresh virtual environment (no pip, nothing installed) gets the wheel alone; its
    third-party dependencies (grpcio, protobuf) are borrowed from this venv by a path line
    appended after the venv's own site-packages, so `shop` can only come from the wheel."""
    empty = tmp_path / "empty"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(empty)], check=True)
    python = empty / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # A plain directory line: its own .pth files (this venv's editable install) are not run.
    (Path(purelib) / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = (
        f"import {STUBS} as stubs, buf.validate.validate_pb2 as rules\n"
        "print(stubs.__file__); print(rules.__file__)\n"
        "print(hasattr(stubs, 'PaymentServiceStub'))"
    )
    result = subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the repository, whose gen/ must not be on the path
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    stubs_file, rules_file, has_stub = result.stdout.split()
    assert stubs_file.startswith(purelib), stubs_file
    assert rules_file.startswith(purelib), rules_file
    assert has_stub == "True"
