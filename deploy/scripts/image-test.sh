#!/usr/bin/env bash
# `make image-test`: the CI-side wrapper that proves the Dockerfile's image really runs, on a
# machine with no Docker engine and no reachable container registry (docs/deploy.md,
# "make image-test"). Everything specific to such a machine lives here and in
# image_test.py, never in the Dockerfile:
#   - Debian's podman with the runc runtime (crun fails on cgroup v1 hosts like this one);
#   - explicit --ulimit values (the open-files limit cannot be raised here);
#   - a local Debian base image made with debootstrap from the mirror in the apt sources;
#   - the project's wheels downloaded beforehand with pip (no network inside the build).
# Usage: PYTHON=.venv/bin/python deploy/scripts/image-test.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
python="${PYTHON:-.venv/bin/python}"

missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing ${missing[*]} with apt-get (podman, runc, debootstrap)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends podman runc debootstrap >/dev/null
    else
        echo "error: make image-test needs ${missing[*]} (Debian: apt-get install podman runc" \
            "debootstrap) and root (rootful podman, debootstrap)" >&2
        exit 1
    fi
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: make image-test runs rootful podman and debootstrap: run it as root" >&2
    exit 1
fi
exec "$python" deploy/scripts/image_test.py "$@"
