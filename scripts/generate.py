"""Generate gen/ from proto/: messages (_pb2.py), typed stubs (.pyi), gRPC stubs, and the
Connect stubs (_connect.py: the ASGI app and client of each service, for google.protobuf
messages, asyncio only).

Uses the protoc bundled in grpcio-tools, the mypy-protobuf plugins and protoc-gen-connectrpc,
all pinned in pyproject.toml, so every machine produces byte-identical output.

    python scripts/generate.py --out gen     # regenerate
    python scripts/generate.py --check       # fail if gen/ differs from a fresh generation
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "gen"


def _plugin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        sys.exit(f"generate: {name} not found next to {sys.executable}; run `make venv`")
    return str(path)


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_DIR}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--plugin=protoc-gen-connectrpc={_plugin('protoc-gen-connectrpc')}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        f"--connectrpc_out={out}",
        "--connectrpc_opt=protobuf=google,io=async",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_DIR)
    # Regular packages (not namespace ones) so mypy and setuptools see them plainly.
    for directory in [p for p in out.rglob("*") if p.is_dir()]:
        (directory / "__init__.py").touch()


def _tree(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        want, have = _tree(fresh), _tree(GEN_DIR) if GEN_DIR.exists() else set()
        problems = [f"missing: gen/{p}" for p in sorted(want - have)]
        problems += [f"unexpected: gen/{p}" for p in sorted(have - want)]
        problems += [
            f"stale: gen/{p}"
            for p in sorted(want & have)
            if not filecmp.cmp(fresh / p, GEN_DIR / p, shallow=False)
        ]
    if problems:
        print("gen/ is stale; run `make generate` and commit the result:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print("gen/ is up to date")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GEN_DIR)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        return check()
    target: Path = args.out.resolve()
    if target == GEN_DIR and GEN_DIR.exists():
        shutil.rmtree(GEN_DIR)  # drop files of protos that were deleted
    generate(target)
    print(f"generated {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
