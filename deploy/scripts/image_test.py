"""`make image-test`: build the Dockerfile's image with podman and run it for real.

1. a base image: Debian bookworm (CPython 3.11) made with debootstrap from the Debian mirror
   of this machine's apt sources, imported into podman (no registry is needed);
2. a wheelhouse: the project's dependencies downloaded with pip beforehand;
3. `podman build` of the unchanged Dockerfile with PYTHON_IMAGE set to that base, no network,
   pip pointed at the wheelhouse by a bind-mounted /etc/pip.conf;
4. embedded NATS (JetStream) and PostgreSQL on free ports; each service's `migrate` (twice:
   idempotent) and then each service from the image, `--read-only` (no tmpfs either), as the
   image's non-root user, on the host network: gRPC health must answer SERVING for the
   service's own name; the pods' preStop command (`drain`) must turn it NOT_SERVING while
   the server still answers; then SIGTERM must stop it cleanly (exit 0) within the grace.

Artefacts are cached in .cache/image-test/ (git-ignored): remove it for a clean run.
Run through deploy/scripts/image-test.sh (installs podman, runc and debootstrap when missing).
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.localmesh.embedded import EmbeddedNats, EmbeddedPostgres, find_free_port  # noqa: E402

CACHE = ROOT / ".cache" / "image-test"
SUITE = "bookworm"  # Debian 12: CPython 3.11, like the slim base and the wheels
BASE_PACKAGES = ("python3", "python3-venv")
BASE_IMAGE = f"localhost/shop-mesh-base:{SUITE}"
IMAGE = "localhost/shop-mesh:image-test"
SERVICES = {
    "order": "shop.order.v1.OrderService",
    "credit": "shop.credit.v1.CreditService",
    "payment": "shop.payment.v1.PaymentService",
}
GRACE_SECONDS = 20.0  # SHUTDOWN_GRACE_SECONDS of the manifests (base ConfigMap)
TERMINATION_SECONDS = 30  # terminationGracePeriodSeconds: SIGKILL after this
SERVING_DEADLINE = 180.0
UID = 10001
DRAIN = ["/opt/venv/bin/shop-entrypoint", "drain", "1"]  # the manifests' preStop (1 s, not 5)

STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[image-test {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def run(
    cmd: Sequence[str], *, timeout: float = 900, check: bool = True, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(cmd), text=True, capture_output=quiet, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        if quiet:
            sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"error: exit {result.returncode}: {' '.join(cmd)}")
    return result


def ulimits() -> list[str]:
    """Explicit limits, at or below the current ones: without CAP_SYS_RESOURCE (as here) runc
    cannot apply podman's defaults, nor even re-apply the current nproc limit."""
    flags = []
    for name, which, cap in (
        ("nofile", resource.RLIMIT_NOFILE, 16384),
        ("nproc", resource.RLIMIT_NPROC, 4096),
    ):
        soft, _ = resource.getrlimit(which)
        value = cap if soft == resource.RLIM_INFINITY else min(soft, cap)
        flags += ["--ulimit", f"{name}={value}:{value}"]
    return flags


def podman(*args: str) -> list[str]:
    return [
        "podman",
        "--root",
        str(CACHE / "storage"),
        "--runroot",
        str(CACHE / "run"),
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
        *args,
    ]


# ---- 1. base image --------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian mirror serving `SUITE` in this machine's apt sources (never hard-coded)."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    candidates: list[str] = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in Path(path).read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if (
                "deb" in fields.get("types", "").split()
                and SUITE in fields.get("suites", "").split()
                and fields.get("enabled", "yes") != "no"
            ):
                candidates += fields.get("uris", "").split()
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if not Path(path).exists():
            continue
        for line in Path(path).read_text().splitlines():
            words = [w for w in line.split() if not w.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                candidates.append(words[1])
    if not candidates:
        raise SystemExit(
            f"error: no apt source serves Debian {SUITE}; set DEBIAN_MIRROR to a Debian mirror URL"
        )
    return candidates[0]


def ensure_base_image() -> None:
    if run(podman("image", "exists", BASE_IMAGE), check=False).returncode == 0:
        say(f"base image {BASE_IMAGE}: cached")
        return
    tarball = CACHE / f"base-{SUITE}-{'-'.join(BASE_PACKAGES)}.tar"
    if not tarball.exists():
        mirror = debian_mirror()
        rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
        say(f"debootstrap {SUITE} (minbase + {', '.join(BASE_PACKAGES)}) from the apt mirror")
        try:
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    SUITE,
                    str(rootfs),
                    mirror,
                ],
                quiet=True,
            )
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log"):
                for entry in (rootfs / junk).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            partial = tarball.with_suffix(".partial")
            run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
            partial.rename(tarball)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
    say(f"importing {tarball.name} as {BASE_IMAGE}")
    run(
        podman("import", "--change", 'CMD ["python3"]', str(tarball), BASE_IMAGE),
        quiet=True,
    )


# ---- 2. wheelhouse --------------------------------------------------------------------------


def ensure_wheelhouse() -> Path:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    machine = platform.machine()
    key = hashlib.sha256(json.dumps([requirements, machine]).encode()).hexdigest()[:12]
    wheels = CACHE / f"wheels-{key}"
    if (wheels / ".complete").exists():
        say(f"wheelhouse {wheels.name}: cached")
        return wheels
    say(f"downloading {len(requirements)} requirements and their dependencies as wheels")
    shutil.rmtree(wheels, ignore_errors=True)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--dest",
            str(wheels),
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            # Debian bookworm has glibc 2.36: every manylinux tag up to it fits.
            *[f"--platform=manylinux_2_{minor}_{machine}" for minor in range(36, 16, -1)],
            f"--platform=manylinux2014_{machine}",
            *requirements,
        ],
        quiet=True,
    )
    (wheels / ".complete").touch()
    return wheels


# ---- 3. build -------------------------------------------------------------------------------


def build_image(wheels: Path) -> None:
    pip_conf = CACHE / "pip.conf"
    pip_conf.write_text("[global]\nno-index = true\nfind-links = /wheels\n")
    say(f"podman build {IMAGE} (PYTHON_IMAGE={BASE_IMAGE}, no network, wheels from the cache)")
    begun = time.monotonic()
    run(
        podman(
            "build",
            "--pull=never",
            "--network=none",
            *ulimits(),
            "--build-arg",
            f"PYTHON_IMAGE={BASE_IMAGE}",
            "--volume",
            f"{wheels}:/wheels:ro",
            "--volume",
            f"{pip_conf}:/etc/pip.conf:ro",
            "--tag",
            IMAGE,
            "--file",
            str(ROOT / "Dockerfile"),
            str(ROOT),
        ),
        quiet=True,
    )
    say(f"built in {time.monotonic() - begun:.1f}s")
    config = json.loads(run(podman("image", "inspect", IMAGE), quiet=True).stdout)[0]["Config"]
    user = config.get("User", "")
    if not user or user.split(":")[0] in ("0", "root"):
        raise SystemExit(f"error: the image runs as {user!r}, not as a non-root user")
    tools = ("gcc", "cc", "c++", "make", "pip", "pip3")
    probe = run(
        podman(
            "run",
            "--rm",
            *container_flags(),
            "--entrypoint",
            "sh",
            IMAGE,
            "-c",
            f"for t in {' '.join(tools)}; do command -v $t; done; echo probe-done",
        ),
        quiet=True,
    )
    found = probe.stdout.split()
    if found != ["probe-done"]:
        raise SystemExit(f"error: the runtime image contains build tools: {found[:-1]}")
    say(f"image user {user}; none of {', '.join(tools)} in the runtime image")


# ---- 4. run ---------------------------------------------------------------------------------


def container_flags() -> list[str]:
    return [
        "--read-only",
        "--read-only-tmpfs=false",
        "--network=host",
        *ulimits(),
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
    ]


def health(target: str, service: str) -> str:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2.0
            )
        except grpc.RpcError as error:
            return f"unavailable ({error.code().name})"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def create_database(admin_url: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute('DROP DATABASE IF EXISTS "image_test"')
        await conn.execute('CREATE DATABASE "image_test"')
    finally:
        await conn.close()
    return admin_url.rpartition("/")[0] + "/image_test"


async def schema_tables(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_schema, count(*) AS n FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            " GROUP BY table_schema"
        )
    finally:
        await conn.close()
    return {row["table_schema"]: row["n"] for row in rows}


def run_services(database_url: str, nats_url: str) -> None:
    ports = {name: find_free_port(0)[0] for name in SERVICES}
    env = {
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "LOG_FORMAT": "text",
        "SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "ORDER_TARGET": f"127.0.0.1:{ports['order']}",
        "CREDIT_TARGET": f"127.0.0.1:{ports['credit']}",
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    env_flags = [flag for name, value in env.items() for flag in ("--env", f"{name}={value}")]

    for attempt in (1, 2):
        for name in SERVICES:
            begun = time.monotonic()
            run(
                podman("run", "--rm", *container_flags(), *env_flags, IMAGE, name, "migrate"),
                quiet=True,
                timeout=300,
            )
            say(f"{name} migrate (run {attempt}): exit 0 in {time.monotonic() - begun:.1f}s")
    tables = asyncio.run(schema_tables(database_url))
    say(f"tables per schema after the migrations: {tables}")
    if len(tables) < len(SERVICES):
        raise SystemExit("error: the migrate command did not create each service's schema")

    containers = {name: f"shop-image-test-{name}-{os.getpid()}" for name in SERVICES}
    try:
        for name, container in containers.items():
            run(
                podman(
                    "run",
                    "--detach",
                    "--name",
                    container,
                    *container_flags(),
                    *env_flags,
                    IMAGE,
                    name,
                ),
                quiet=True,
            )
        for name, container in containers.items():
            target = f"127.0.0.1:{ports[name]}"
            deadline = time.monotonic() + SERVING_DEADLINE
            status = ""
            while time.monotonic() < deadline:
                status = health(target, SERVICES[name])
                if status == "SERVING":
                    break
                state = podman_state(container)
                if state.get("Status") != "running":
                    dump_logs(container)
                    raise SystemExit(f"error: {name} container is {state.get('Status')}")
                time.sleep(1.0)
            if status != "SERVING":
                dump_logs(container)
                raise SystemExit(f"error: {name} health is {status} at {target}")
            uid = run(
                podman("exec", container, "python", "-c", "import os; print(os.getuid())"),
                quiet=True,
            ).stdout.strip()
            if uid != str(UID):
                raise SystemExit(f"error: {name} runs as uid {uid}, expected {UID}")
            say(f"{name}: health SERVING for {SERVICES[name]} at {target}, uid {uid}")

        for name, container in containers.items():
            # the pods' preStop hook: NOT_SERVING while the server still answers
            run(podman("exec", container, *DRAIN), quiet=True, timeout=60)
            deadline = time.monotonic() + 30
            status = health(f"127.0.0.1:{ports[name]}", SERVICES[name])
            while status != "NOT_SERVING" and time.monotonic() < deadline:
                time.sleep(0.2)
                status = health(f"127.0.0.1:{ports[name]}", SERVICES[name])
            if status != "NOT_SERVING":
                dump_logs(container)
                raise SystemExit(f"error: after `{' '.join(DRAIN)}` {name}'s health is {status}")
            say(f"{name}: preStop `{' '.join(DRAIN)}` -> health NOT_SERVING, still answering")
            begun = time.monotonic()
            run(
                podman("stop", "--time", str(TERMINATION_SECONDS), container),
                quiet=True,
                timeout=TERMINATION_SECONDS + 60,
            )
            elapsed = time.monotonic() - begun
            state = podman_state(container)
            code = state.get("ExitCode")
            logs = run(podman("logs", container), quiet=True).stdout
            logs += run(podman("logs", container), quiet=True).stderr
            if code != 0 or "shutting down" not in logs or elapsed > GRACE_SECONDS:
                dump_logs(container)
                raise SystemExit(
                    f"error: {name} did not stop cleanly on SIGTERM: exit {code} after"
                    f" {elapsed:.1f}s (grace {GRACE_SECONDS:.0f}s)"
                )
            say(f"{name}: SIGTERM -> exit 0 in {elapsed:.1f}s (grace {GRACE_SECONDS:.0f}s)")
    finally:
        for container in containers.values():
            run(podman("rm", "--force", "--time", "0", container), check=False, quiet=True)


def podman_state(container: str) -> dict[str, object]:
    out = run(podman("inspect", container), check=False, quiet=True).stdout
    try:
        state: dict[str, object] = json.loads(out)[0]["State"]
    except (ValueError, IndexError, KeyError):
        return {}
    return state


def dump_logs(container: str) -> None:
    logs = run(podman("logs", "--tail", "40", container), check=False, quiet=True)
    sys.stderr.write(f"--- logs of {container} ---\n{logs.stdout}{logs.stderr}\n")


def main() -> int:
    CACHE.mkdir(parents=True, exist_ok=True)
    for leftover in CACHE.glob("rootfs-*"):  # an interrupted debootstrap
        shutil.rmtree(leftover, ignore_errors=True)
    ensure_base_image()
    wheels = ensure_wheelhouse()
    build_image(wheels)
    with tempfile.TemporaryDirectory(prefix="image-test-") as scratch:
        nats = EmbeddedNats(Path(scratch) / "nats", preferred_port=0)
        postgres = EmbeddedPostgres(Path(scratch) / "postgres", preferred_port=0)
        try:
            nats.start()
            postgres.start()
            say(f"NATS at {nats.url}, PostgreSQL on port {postgres.port}")
            database_url = asyncio.run(create_database(postgres.url))
            run_services(database_url, nats.url)
        finally:
            nats.stop()
            postgres.stop()
    say("image test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
