"""NATS JetStream and PostgreSQL as StatefulSets; image references pinned and consistent."""

from __future__ import annotations

import re
import tomllib

from tests.deploy.manifests import ROOT, Rendered

K8S_MK = ROOT / "deploy" / "k8s.mk"


def nats_conf(rendered: Rendered) -> str:
    statefulset = rendered.get("StatefulSet", "nats")
    (volume,) = [
        v for v in statefulset["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"
    ]
    text: str = rendered.get("ConfigMap", volume["configMap"]["name"])["data"]["nats.conf"]
    return text


def test_nats_is_a_jetstream_statefulset_on_a_volume(rendered: Rendered) -> None:
    statefulset = rendered.get("StatefulSet", "nats")
    conf = nats_conf(rendered)
    (c,) = statefulset["spec"]["template"]["spec"]["containers"]
    store = re.search(r"store_dir:\s*(\S+)", conf)
    assert store, "JetStream needs a store_dir"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert store.group(1).startswith(mounts[claim["metadata"]["name"]] + "/")
    assert re.search(r"sync_interval:\s*always", conf)
    assert rendered.find("Service", "nats") is not None
    headless = rendered.get("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_nats_is_one_node_in_kind_and_a_routed_cluster_of_three_in_production(
    rendered: Rendered,
) -> None:
    replicas = rendered.get("StatefulSet", "nats")["spec"]["replicas"]
    conf = nats_conf(rendered)
    if rendered.overlay == "kind":
        assert replicas == 1
        assert "cluster" not in conf
        return
    assert replicas == 3
    routes = set(re.findall(r"nats://(nats-\d+)\.nats-headless:6222", conf))
    assert routes == {f"nats-{i}" for i in range(replicas)}
    assert re.search(r"server_name:\s*\$SERVER_NAME", conf)


def test_postgres_is_a_statefulset_with_a_volume_in_kind_only(
    rendered_overlays: dict[str, Rendered],
) -> None:
    kind = rendered_overlays["kind"].get("StatefulSet", "postgres")
    (claim,) = kind["spec"]["volumeClaimTemplates"]
    (c,) = kind["spec"]["template"]["spec"]["containers"]
    assert claim["metadata"]["name"] in {m["name"] for m in c["volumeMounts"]}
    production = rendered_overlays["production"]
    assert production.find("StatefulSet", "postgres") is None
    assert production.find("Secret", "shop-database") is None  # never committed


def image_refs(rendered: Rendered) -> dict[str, str]:
    return {
        f"{obj['metadata']['name']}/{c['name']}": c["image"]
        for obj, pod in rendered.workloads()
        for c in [*pod.get("initContainers", []), *pod["containers"]]
    }


def test_images_are_pinned_and_the_services_share_one(rendered: Rendered) -> None:
    refs = image_refs(rendered)
    ours = {ref for where, ref in refs.items() if where.split("/")[0] in SHOP_WORKLOADS}
    assert len(ours) == 1, f"one image for the services and the Job, got {ours}"
    for where, ref in refs.items():
        name, _, tag = ref.rpartition(":")
        assert name, f"{where}: {ref} has no tag"
        assert "/" not in tag, f"{where}: {ref} has no tag"
        assert tag != "latest", f"{where}: {ref} is not pinned"
        assert re.search(r"\d|^dev$", tag), f"{where}: {ref} is not pinned"


SHOP_WORKLOADS = {"order", "credit", "payment", "shop-migrate"}


def make_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*\?=\s*(\S+)", K8S_MK.read_text(), re.MULTILINE)
    assert match, f"{name} ?= … not found in {K8S_MK.name}"
    return match.group(1)


def test_kind_runs_the_image_that_make_builds_and_loads(
    rendered_overlays: dict[str, Rendered],
) -> None:
    built = f"{make_variable('IMAGE')}:{make_variable('IMAGE_TAG')}"
    assert set(image_refs(rendered_overlays["kind"]).values()) >= {built}
    assert rendered_overlays["kind"].get("Deployment", "order")["spec"]["template"]["spec"][
        "containers"
    ][0]["imagePullPolicy"] in ("IfNotPresent", "Never")  # a loaded image is never pulled


def test_production_deploys_the_project_version(rendered_overlays: dict[str, Rendered]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    refs = image_refs(rendered_overlays["production"])
    assert refs["order/order"].endswith(f"/shop-mesh:{version}")
