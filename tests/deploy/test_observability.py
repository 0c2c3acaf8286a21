"""The observability component (deploy/k8s/components/observability), rendered with the kind
overlay as `kind-observability`: it validates strictly, its Prometheus configuration passes
promtool, it scrapes the three services where they serve /metrics and NATS through its
exporter, the services export traces to the collector, and its pods meet the namespace's
restricted Pod Security Standard."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import K8S, Rendered, kustomize, load_all, validate_strict, yaml
from tests.observability.prometheus import ALERTS, DASHBOARD, require

OVERLAY = K8S / "kind-observability"
HTTP_PORTS = {"order": 8051, "credit": 8052, "payment": 8053}
OBSERVABILITY = ("prometheus", "nats-exporter", "grafana", "otel-collector", "jaeger")


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return Rendered("kind-observability", load_all(kustomize(OVERLAY)))


def config_map(rendered: Rendered, prefix: str) -> dict[str, str]:
    found = [
        obj
        for obj in rendered.of_kind("ConfigMap")
        if obj["metadata"]["name"].rsplit("-", 1)[0] == prefix
    ]
    assert len(found) == 1, prefix
    data: dict[str, str] = found[0]["data"]
    return data


def test_it_passes_strict_schema_validation(tmp_path: Path) -> None:
    out = tmp_path / "kind-observability.yaml"
    out.write_text(kustomize(OVERLAY))
    result = validate_strict(out)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_configuration_passes_promtool(rendered: Rendered, tmp_path: Path) -> None:
    files = config_map(rendered, "prometheus-config")
    assert files["alerts.yml"] == ALERTS.read_text()  # the rules promtool unit tests
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    config = yaml.safe_load(files["prometheus.yml"])
    config["rule_files"] = [str(tmp_path / "alerts.yml")]  # /etc/prometheus/ in the pod
    # Debian's Prometheus is built without Kubernetes discovery (the image has it): check
    # everything else of the job, its relabelling included, on a static target instead.
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["order:8051"]}]
    (tmp_path / "checked.yml").write_text(json.dumps(config))
    result = subprocess.run(
        [require("promtool"), "check", "config", str(tmp_path / "checked.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_are_scraped_on_their_http_port_and_send_traces(rendered: Rendered) -> None:
    settings = config_map(rendered, "shop-config")
    endpoint = settings["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == "http://otel-collector:4317"
    assert settings["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    collector = rendered.get("Service", "otel-collector")
    assert 4317 in {port["port"] for port in collector["spec"]["ports"]}
    for name, port in HTTP_PORTS.items():
        pod = rendered.get("Deployment", name)["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"
        container = pod["spec"]["containers"][0]
        assert {"name": "http", "containerPort": port, "protocol": "TCP"} in container["ports"]
        env = {
            e["name"]: e.get("valueFrom", {}).get("configMapKeyRef", {}) for e in container["env"]
        }
        for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            assert env[key]["key"] == key
            assert env[key]["name"].startswith("shop-config")


def test_prometheus_scrapes_the_services_and_nats(rendered: Rendered) -> None:
    config = yaml.safe_load(config_map(rendered, "prometheus-config")["prometheus.yml"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"shop", "nats"}
    assert jobs["nats"]["static_configs"][0]["targets"] == ["nats-exporter:7777"]
    exporter = rendered.get("Deployment", "nats-exporter")["spec"]["template"]["spec"]
    assert "http://nats:8222" in exporter["containers"][0]["args"]
    nats_ports = {p["name"]: p["port"] for p in rendered.get("Service", "nats")["spec"]["ports"]}
    assert nats_ports["monitor"] == 8222
    role = rendered.get("Role", "prometheus-discovery")
    assert {"pods"} <= set(role["rules"][0]["resources"])


def test_grafana_has_the_dashboard_and_its_data_source(rendered: Rendered) -> None:
    dashboards = config_map(rendered, "grafana-dashboard-shop-mesh")
    assert json.loads(dashboards["dashboard-shop-mesh.json"]) == json.loads(DASHBOARD.read_text())
    sources = yaml.safe_load(
        config_map(rendered, "grafana-provisioning")["grafana-datasources.yaml"]
    )
    uids = {source["uid"] for source in sources["datasources"]}
    used = {
        target["datasource"]["uid"]
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel["targets"]
    }
    assert used <= uids


def test_network_policies_let_the_observability_traffic_through(rendered: Rendered) -> None:
    policies = {p["metadata"]["name"]: p for p in rendered.of_kind("NetworkPolicy")}
    scraped = policies["services-metrics-and-traces"]["spec"]
    assert {p["port"] for p in scraped["ingress"][0]["ports"]} == set(HTTP_PORTS.values())
    assert scraped["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    ]
    assert {p["port"] for p in scraped["egress"][0]["ports"]} == {4317, 4318}


@pytest.mark.parametrize("name", OBSERVABILITY)
def test_observability_pods_meet_the_restricted_standard(rendered: Rendered, name: str) -> None:
    pod: dict[str, Any] = rendered.get("Deployment", name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["limits"]["memory"]
        assert ":" in container["image"]
        assert not container["image"].endswith(":latest")
