"""A real Prometheus server for the tests (Debian's `prometheus` package), scraping the
mesh's HTTP ports, and its HTTP query API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from services.localmesh.embedded import find_free_port

COMPONENT = Path(__file__).resolve().parents[2] / "deploy/k8s/components/observability"
ALERTS = COMPONENT / "alerts.yml"
DASHBOARD = COMPONENT / "dashboard-shop-mesh.json"

HOW_TO_INSTALL = (
    "needs Prometheus and promtool on PATH: Debian's `prometheus` package"
    " (`apt-get install -y --no-install-recommends prometheus`; .ci/run installs it)"
)


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not found: {HOW_TO_INSTALL}")
    return path


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's vector; raises on a query Prometheus rejects (HTTP 400)."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, expected: float, timeout: float = 30.0) -> float | None:
        deadline = time.monotonic() + timeout
        while True:
            value = self.value(promql)
            if value == expected or time.monotonic() > deadline:
                return value
            time.sleep(0.5)


@contextmanager
def running_prometheus(
    workdir: Path, targets: Mapping[str, str], rule_files: list[Path]
) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (service name → host:port) every second, with the
    service label the component's scrape config also gives each target."""
    binary = require("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": "shop",
                "static_configs": [
                    {"targets": [address], "labels": {"service": name}}
                    for name, address in targets.items()
                ],
            }
        ],
    }
    config_file = workdir / "prometheus.yml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    port, _ = find_free_port(0)
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "Prometheus did not start:\n" + (workdir / "prometheus.log").read_text()
                )
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
