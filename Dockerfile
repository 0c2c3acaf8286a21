# One image for the three services and their migrations:
#   docker run IMAGE order|credit|payment [serve|migrate]
# Configured only by the environment (README "Configuration"); see docs/deploy.md.
#
# PYTHON_IMAGE is the base for both stages; it must be a Debian-based CPython 3.11
# (the default is the official slim image).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the virtual environment with the project and its dependencies -----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/venv
# The project as a regular (non-editable) install of its wheel: the services, the code
# generated from proto/ (the `shop` and `buf` packages of gen/, see pyproject.toml) and the
# pinned dependency ranges.
COPY pyproject.toml README.md ./
COPY services/ services/
COPY gen/ gen/
RUN /opt/venv/bin/pip install .
COPY deploy/docker/entrypoint.sh /opt/venv/bin/shop-entrypoint
RUN purelib="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && chmod 0555 /opt/venv/bin/shop-entrypoint \
    && /opt/venv/bin/python -m pip uninstall --yes --quiet pip \
    && /opt/venv/bin/python -m compileall -q "$purelib"

# ---- runtime: the interpreter, the venv, a non-root user; no compilers, no pip -------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 shop \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin shop
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
EXPOSE 50051 50052 50053
ENTRYPOINT ["/opt/venv/bin/shop-entrypoint"]
CMD ["help"]
