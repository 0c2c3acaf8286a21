"""The rules for the three services' Deployments, their Services, HPAs, PDBs and the
migration Job, over every overlay's rendered output."""

from __future__ import annotations

import atexit
import functools
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from services.common.security_settings import SECURITY_VARIABLES
from tests.deploy.manifests import Obj, Rendered, label_selector_matches, quantity, selects
from tests.deploy.services_spec import SERVICES
from tests.security.certs import make_pki

PLACEHOLDER_DATABASE_URL = "postgresql://user:secret@db.example.internal:5432/shop"
# Stand-ins for what production's Secrets made outside the repository hold.
PLACEHOLDERS = {
    "DATABASE_URL": PLACEHOLDER_DATABASE_URL,
    "PAGE_TOKEN_KEY": "0" * 64,
    "NATS_PASSWORD": "a-password-made-outside",
}
IMAGE_USER = 10001  # the Dockerfile's USER (tests/deploy/test_dockerfile.py checks it)
DOCKER_ENTRYPOINT = "/opt/venv/bin/shop-entrypoint"  # the Dockerfile's ENTRYPOINT
# Where the production overlay mounts a service's certificate Secret (cert-manager's keys
# tls.crt, tls.key, ca.crt; tests/deploy/test_trust_boundaries.py checks the mount).
TLS_DIR = "/etc/shop/tls/"
PROBE_MODULE = "services.common.probe"


@functools.cache
def stand_in_tls(service: str) -> dict[str, str]:
    """Throwaway files standing in for the mounted Secret of `service`, so that the settings
    code validates the TLS variables as it would in the pod (the files must exist, be PEM,
    the key must match the certificate)."""
    folder = tempfile.TemporaryDirectory(prefix="stand-in-tls-")
    atexit.register(folder.cleanup)
    pki = make_pki(Path(folder.name))
    issued = pki.service(service)
    return {"tls.crt": str(issued.cert), "tls.key": str(issued.key), "ca.crt": str(pki.ca.cert)}


def deployment(rendered: Rendered, name: str) -> Obj:
    return rendered.get("Deployment", name)


def container(pod_spec: Obj, name: str) -> Obj:
    found: list[Obj] = [c for c in pod_spec["containers"] if c["name"] == name]
    assert len(found) == 1, f"no container {name}"
    return found[0]


def resolved_env(rendered: Rendered, c: Obj) -> dict[str, str]:
    """The container's environment with ConfigMap and Secret references resolved."""
    env: dict[str, str] = {}
    assert not c.get("envFrom"), "services take named keys only (no envFrom)"
    for item in c.get("env", []):
        name = item["name"]
        assert name not in env, f"{name} is set twice"
        if "value" in item:
            literal = str(item["value"])
            if literal.startswith(TLS_DIR):  # a file of the mounted certificate Secret
                literal = stand_in_tls(c["name"])[literal.removeprefix(TLS_DIR)]
            env[name] = literal
            continue
        source = item["valueFrom"]
        if "configMapKeyRef" in source:
            env[name] = rendered.config_value(source["configMapKeyRef"])
        elif "secretKeyRef" in source:
            value = rendered.secret_value(source["secretKeyRef"])
            # A Secret made outside the repository (production) gets a stand-in value.
            env[name] = PLACEHOLDERS[name] if value is None else value
        else:
            raise AssertionError(f"{name}: unsupported source {source}")
    return env


def service_containers(rendered: Rendered) -> list[tuple[str, Obj, Obj]]:
    """(service, container, owner) for each Deployment and each migration container."""
    found: list[tuple[str, Obj, Obj]] = []
    for name in SERVICES:
        d = deployment(rendered, name)
        found.append((name, container(d["spec"]["template"]["spec"], name), d))
    job = rendered.get("Job", "shop-migrate")
    for name in SERVICES:
        found.append((name, container(job["spec"]["template"]["spec"], f"migrate-{name}"), job))
    return found


# -- what is deployed ----------------------------------------------------------------------


def test_exactly_the_three_services_are_deployed(rendered: Rendered) -> None:
    names = {d["metadata"]["name"] for d in rendered.of_kind("Deployment")}
    assert names == set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_container_runs_the_service(rendered: Rendered, service: str) -> None:
    c = container(deployment(rendered, service)["spec"]["template"]["spec"], service)
    assert c["args"] == [service, "serve"]
    assert "command" not in c, "the image's ENTRYPOINT starts the service"


def test_migration_job_runs_every_service_migration(rendered: Rendered) -> None:
    job = rendered.get("Job", "shop-migrate")
    pod = job["spec"]["template"]["spec"]
    assert {tuple(c["args"]) for c in pod["containers"]} == {(s, "migrate") for s in SERVICES}
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert job["spec"]["backoffLimit"] >= 1  # migrations are idempotent: retry is safe


# -- environment: exactly what the settings code reads -------------------------------------


@pytest.mark.parametrize("index", range(6))
def test_env_is_exactly_what_the_service_reads(rendered: Rendered, index: int) -> None:
    service, c, _ = service_containers(rendered)[index]
    spec = SERVICES[service]
    env = resolved_env(rendered, c)
    read, problems = spec.reads(env)
    assert not problems, f"{c['name']}: the settings refuse the manifest's env: {problems}"
    assert spec.required() <= set(env), f"{c['name']}: required variables missing"
    assert set(env) - read == set(), f"{c['name']}: set but read by no one"
    left_out = read - set(env) - SECURITY_VARIABLES  # TLS/credentials: off unless set
    assert left_out == set(), f"{c['name']}: read but left to its default"


def test_every_config_key_is_read_by_some_service(rendered: Rendered) -> None:
    referenced: set[str] = set()
    for _, c, _ in service_containers(rendered):
        referenced |= set(resolved_env(rendered, c))
    for _, c, _ in service_containers(rendered):
        for item in c.get("env", []):
            ref = item.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                keys = set(rendered.get("ConfigMap", ref["name"])["data"])
                assert keys <= referenced, f"unused settings keys: {keys - referenced}"


def test_database_url_comes_from_a_secret(rendered: Rendered) -> None:
    for _, c, _ in service_containers(rendered):
        (item,) = [e for e in c["env"] if e["name"] == "DATABASE_URL"]
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["key"] == "DATABASE_URL"
        if rendered.overlay == "production":
            # external: created by the operator or by hand (docs/deploy.md), never committed
            assert rendered.find("Secret", ref["name"]) is None
            assert ref["name"] == "shop-database"
        else:
            assert rendered.secret_value(ref) is not None


def test_page_token_key_comes_from_the_database_secret(rendered: Rendered) -> None:
    """One key for every replica (a token one pod issued is checked by another), kept secret."""
    for _, c, _ in service_containers(rendered):
        (item,) = [e for e in c["env"] if e["name"] == "PAGE_TOKEN_KEY"]
        ref = item["valueFrom"]["secretKeyRef"]
        (database,) = [e for e in c["env"] if e["name"] == "DATABASE_URL"]
        assert ref["name"] == database["valueFrom"]["secretKeyRef"]["name"]  # one Secret
        assert ref["key"] == "PAGE_TOKEN_KEY"
        if rendered.overlay != "production":
            assert len(rendered.secret_value(ref) or "") >= 32


def test_logs_are_json(rendered: Rendered) -> None:
    for _, c, _ in service_containers(rendered):
        assert resolved_env(rendered, c)["LOG_FORMAT"] == "json"


# -- ports, probes, Services ---------------------------------------------------------------


def http_port(rendered: Rendered, service: str) -> int:
    c = container(deployment(rendered, service)["spec"]["template"]["spec"], service)
    port: int = SERVICES[service].settings(resolved_env(rendered, c)).core.http_port
    return port


def grpc_port(rendered: Rendered, service: str) -> int:
    c = container(deployment(rendered, service)["spec"]["template"]["spec"], service)
    settings = SERVICES[service].settings(resolved_env(rendered, c))
    port: int = settings.core.port
    assert c["ports"] == [
        {"name": "grpc", "containerPort": port, "protocol": "TCP"},
        # /metrics and /healthz (docs/observability.md)
        {"name": "http", "containerPort": settings.core.http_port, "protocol": "TCP"},
    ]
    return port


@pytest.mark.parametrize("service", SERVICES)
def test_probes_check_grpc_health_of_the_service_name_and_port(
    rendered: Rendered, service: str
) -> None:
    """Native grpc probes on plaintext; with TLS (production) an exec probe of the same
    health check over mutual TLS, verifying the server by one of its certificate's names."""
    c = container(deployment(rendered, service)["spec"]["template"]["spec"], service)
    port = grpc_port(rendered, service)
    tls = "GRPC_TLS_CERT" in resolved_env(rendered, c)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        kinds = set(c[probe]) & {"grpc", "httpGet", "tcpSocket", "exec"}
        if not tls:
            assert kinds == {"grpc"}, probe
            assert c[probe]["grpc"] == {"port": port, "service": SERVICES[service].grpc_service}
            continue
        assert kinds == {"exec"}, probe
        python, flag, module, *args = c[probe]["exec"]["command"]
        assert (python, flag, module) == ("/opt/venv/bin/python", "-m", PROBE_MODULE), probe
        assert args[:2] == [str(port), SERVICES[service].grpc_service], probe
        assert args[2] == service, "the server name: a DNS name of the service's certificate"
        assert c[probe]["timeoutSeconds"] >= 3, "a Python start needs more than the 1 s default"


@pytest.mark.parametrize("service", SERVICES)
def test_startup_probe_outlasts_the_migration_wait(rendered: Rendered, service: str) -> None:
    from services.common.runtime import MIGRATION_WAIT_SECONDS

    c = container(deployment(rendered, service)["spec"]["template"]["spec"], service)
    probe = c["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] > MIGRATION_WAIT_SECONDS


@pytest.mark.parametrize("service", SERVICES)
def test_services_expose_the_named_grpc_and_http_ports(rendered: Rendered, service: str) -> None:
    d = deployment(rendered, service)
    pod_labels = d["spec"]["template"]["metadata"]["labels"]
    port = grpc_port(rendered, service)
    services = rendered.services_selecting(pod_labels)
    assert {s["metadata"]["name"] for s in services} == {service, f"{service}-headless"}
    for s in services:  # kind's ClusterIP Services are also NodePorts (test_kind_path.py)
        ports = [{k: v for k, v in p.items() if k != "nodePort"} for p in s["spec"]["ports"]]
        assert ports == [
            {
                "name": "grpc",
                "port": port,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "grpc",
            },
            {  # the Connect door (HTTP/JSON), /metrics, /healthz
                "name": "http",
                "port": http_port(rendered, service),
                "targetPort": "http",
                "protocol": "TCP",
                "appProtocol": "http",
            },
        ]
    headless = rendered.get("Service", f"{service}-headless")
    assert headless["spec"]["clusterIP"] == "None"


def test_payment_reaches_order_and_credit_through_their_headless_services(
    rendered: Rendered,
) -> None:
    c = container(deployment(rendered, "payment")["spec"]["template"]["spec"], "payment")
    settings = SERVICES["payment"].settings(resolved_env(rendered, c))
    for target, service in ((settings.order_target, "order"), (settings.credit_target, "credit")):
        match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", target)
        assert match, f"{target} is not a dns:/// target"
        host, port = match.group(1), int(match.group(2))
        assert host == f"{service}-headless"
        assert rendered.find("Service", host) is not None
        assert port == grpc_port(rendered, service)


def test_nats_url_names_the_nats_service_or_its_members(rendered: Rendered) -> None:
    nats = rendered.get("StatefulSet", "nats")
    c = container(deployment(rendered, "order")["spec"]["template"]["spec"], "order")
    urls = resolved_env(rendered, c)["NATS_URL"].split(",")
    for url in urls:
        parts = urlsplit(url)
        assert parts.scheme == "nats"
        assert parts.port == 4222
        host = parts.hostname or ""
        member = re.fullmatch(r"nats-(\d+)\.nats-headless", host)
        assert host == "nats" or (member and int(member.group(1)) < nats["spec"]["replicas"])
    if rendered.overlay == "production":
        assert len(urls) == nats["spec"]["replicas"]


def test_streams_have_one_copy_per_nats_member(rendered: Rendered) -> None:
    members = rendered.get("StatefulSet", "nats")["spec"]["replicas"]
    for name, c, _ in service_containers(rendered):
        settings = SERVICES[name].settings(resolved_env(rendered, c))
        # fewer copies: losing a member loses streams; more: the streams cannot be created
        assert settings.core.nats_stream_replicas == members, c["name"]


def test_database_url_points_at_the_in_cluster_postgres_in_kind(
    rendered_overlays: dict[str, Rendered],
) -> None:
    kind = rendered_overlays["kind"]
    c = container(deployment(kind, "order")["spec"]["template"]["spec"], "order")
    url = urlsplit(resolved_env(kind, c)["DATABASE_URL"])
    assert (url.hostname, url.port) == ("postgres", 5432)
    service = kind.get("Service", "postgres")
    statefulset = kind.get("StatefulSet", "postgres")
    assert selects(
        service["spec"]["selector"], statefulset["spec"]["template"]["metadata"]["labels"]
    )
    assert rendered_overlays["production"].find("StatefulSet", "postgres") is None


# -- shutdown ------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_grace_period_covers_prestop_and_the_server_grace(rendered: Rendered, service: str) -> None:
    pod = deployment(rendered, service)["spec"]["template"]["spec"]
    c = container(pod, service)
    grace = SERVICES[service].settings(resolved_env(rendered, c)).core.shutdown_grace_seconds
    # the image's `drain SECONDS`: health NOT_SERVING while still serving, then a wait
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == [DOCKER_ENTRYPOINT, "drain"], command
    pre_stop = int(command[2])
    margin = pod["terminationGracePeriodSeconds"] - pre_stop - grace
    # enough to close NATS and the pool after the grace; not so much that it means nothing
    assert 2 <= margin <= 10, (pod["terminationGracePeriodSeconds"], pre_stop, grace)
    assert pre_stop >= 2  # endpoints and clients see the pod leave before SIGTERM


# -- security, resources, accounts ---------------------------------------------------------


def test_every_container_is_locked_down(rendered: Rendered) -> None:
    for obj, pod in rendered.workloads():
        pod_ctx = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False, obj["metadata"]["name"]
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            ctx: dict[str, Any] = c.get("securityContext", {})
            where = f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}"
            assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, where
            assert ctx.get("runAsUser", pod_ctx.get("runAsUser", 1)) != 0, where
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("capabilities") == {"drop": ["ALL"]}, where
            assert ctx.get("privileged", False) is False, where
            seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile"))
            assert seccomp == {"type": "RuntimeDefault"}, where


def test_service_pods_run_as_the_image_user(rendered: Rendered) -> None:
    for _, c, owner in service_containers(rendered):
        pod_ctx = owner["spec"]["template"]["spec"]["securityContext"]
        assert c.get("securityContext", {}).get("runAsUser", pod_ctx["runAsUser"]) == IMAGE_USER


def test_every_container_has_requests_and_limits(rendered: Rendered) -> None:
    for obj, pod in rendered.workloads():
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            where = f"{obj['metadata']['name']}/{c['name']}"
            resources = c.get("resources", {})
            for resource in ("cpu", "memory"):
                request = quantity(resources["requests"][resource])
                limit = quantity(resources["limits"][resource])
                assert 0 < request <= limit, f"{where} {resource}"


def test_every_pod_has_its_own_service_account_without_a_token(rendered: Rendered) -> None:
    for obj, pod in rendered.workloads():
        account = pod.get("serviceAccountName")
        assert account, obj["metadata"]["name"]
        assert account != "default", obj["metadata"]["name"]
        assert rendered.get("ServiceAccount", account)["automountServiceAccountToken"] is False


# -- availability and scaling --------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_hpa_owns_the_replicas(rendered: Rendered, service: str) -> None:
    d = deployment(rendered, service)
    assert "replicas" not in d["spec"], "an apply would reset what the HPA chose"
    hpas = [
        h
        for h in rendered.of_kind("HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]
        == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service}
    ]
    assert len(hpas) == 1
    hpa = hpas[0]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    if rendered.overlay == "production":
        assert hpa["spec"]["minReplicas"] >= 2  # a PDB with one replica blocks every drain
    metrics = hpa["spec"]["metrics"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics)


@pytest.mark.parametrize("service", SERVICES)
def test_rolling_update_never_drops_below_the_wanted_replicas(
    rendered: Rendered, service: str
) -> None:
    strategy = deployment(rendered, service)["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_every_workload_has_a_disruption_budget(rendered: Rendered) -> None:
    pdbs = rendered.of_kind("PodDisruptionBudget")
    for obj in [*rendered.of_kind("Deployment"), *rendered.of_kind("StatefulSet")]:
        labels = obj["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if label_selector_matches(p["spec"]["selector"], labels)]
        assert len(matching) == 1, obj["metadata"]["name"]
        assert matching[0]["apiVersion"] == "policy/v1"


def test_database_connections_fit_the_in_cluster_postgres(
    rendered_overlays: dict[str, Rendered],
) -> None:
    kind = rendered_overlays["kind"]
    args = container(kind.get("StatefulSet", "postgres")["spec"]["template"]["spec"], "postgres")[
        "args"
    ]
    max_connections = int(next(a.split("=")[1] for a in args if a.startswith("max_connections=")))
    needed = 0
    for _, c, owner in service_containers(kind):
        pool = SERVICES[c["args"][0]].settings(resolved_env(kind, c)).core.db_pool_size
        if owner["kind"] == "Deployment":
            hpa = kind.get("HorizontalPodAutoscaler", owner["metadata"]["name"])
            needed += hpa["spec"]["maxReplicas"] * pool * 2  # pool + as many overflow
        else:
            needed += 1
    assert needed + 10 <= max_connections  # room for an operator's psql
