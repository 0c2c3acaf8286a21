"""Every kustomization builds with the pinned kubectl, and its output passes
kubernetes-validate --strict (unknown fields are errors) for the pinned Kubernetes version."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.manifests import K8S, NAMESPACE, OVERLAYS, Rendered, kustomize, validate_strict


@pytest.mark.parametrize("directory", ["base", *OVERLAYS])
def test_kustomization_builds(directory: str) -> None:
    assert "kind: Deployment" in kustomize(K8S / directory)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_output_passes_strict_schema_validation(overlay: str, tmp_path: Path) -> None:
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(kustomize(K8S / overlay))
    result = validate_strict(out)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The validator really checks: a misspelt field in a probe is refused."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
    - name: c
      image: x:1
      readinessProbe:
        grpc: {port: 50051, servce: shop.order.v1.OrderService}
"""
    )
    result = validate_strict(bad)
    assert result.returncode != 0
    assert "servce" in result.stdout + result.stderr


def test_every_namespaced_object_is_in_the_shop_namespace(rendered: Rendered) -> None:
    for obj in rendered.objects:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
            continue
        assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


def test_namespace_enforces_the_restricted_pod_security_standard(rendered: Rendered) -> None:
    labels = rendered.get("Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
