"""`buf breaking`: fail when proto/ changed in a wire- or source-incompatible way (buf.yaml's
FILE rules) compared with a git ref, by default the previous commit (HEAD~1).

    python scripts/check_breaking.py                # against HEAD~1 (what `make lint` runs)
    python scripts/check_breaking.py origin/main    # against any ref: a branch, tag or sha
    make breaking BREAKING_AGAINST=v1.2.0           # the same through make

The ref's tree is exported with `git archive`, so this works in a fresh clone and in a git
worktree alike. With the default ref and no previous commit (a first commit or a shallow
clone of depth 1), or a previous commit without a buf module, there is nothing to compare
with: it says so and passes. An explicitly named ref that does not exist is an error.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REF = "HEAD~1"


def git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=False)


def main(argv: list[str]) -> int:
    ref = argv[0] if argv and argv[0] else DEFAULT_REF
    explicit = ref != DEFAULT_REF
    buf = Path(sys.executable).parent / "buf"
    if git("rev-parse", "--is-inside-work-tree").returncode != 0:
        print("buf breaking: skipped: not a git checkout, no previous contract to compare with")
        return 0
    if git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        if explicit:
            print(f"buf breaking: no commit {ref!r} in this repository", file=sys.stderr)
            return 2
        print(
            f"buf breaking: skipped: no commit {ref} (first commit or shallow clone); "
            "run `make breaking BREAKING_AGAINST=<ref>` to compare with another ref"
        )
        return 0
    archive = git("archive", "--format=tar", ref)
    if archive.returncode != 0:
        sys.stderr.write(archive.stderr.decode())
        return 2
    with tempfile.TemporaryDirectory(prefix="contract-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        if not (Path(tmp) / "buf.yaml").exists():
            print(f"buf breaking: skipped: {ref} has no buf.yaml, so no contract to compare with")
            return 0
        result = subprocess.run([str(buf), "breaking", "--against", tmp], cwd=ROOT, check=False)
    if result.returncode == 0:
        print(f"buf breaking: proto/ is compatible with {ref}")
    else:
        print(
            f"buf breaking: proto/ breaks the contract of {ref} (see above); a breaking change "
            "needs a new package version (docs/contract.md)",
            file=sys.stderr,
        )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
