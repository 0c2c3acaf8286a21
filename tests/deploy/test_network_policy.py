"""NetworkPolicies allow exactly the listed paths and nothing else.

A small evaluator of the NetworkPolicy semantics (default allow for a pod no policy selects
in that direction; otherwise the union of the selecting policies' rules; a connection needs
both the source's egress and the destination's ingress) runs over every pair of endpoints
and port of interest, and the allowed set is compared with the expected one."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from tests.deploy.manifests import NAMESPACE, Obj, Rendered, label_selector_matches

SERVICES = ("order", "credit", "payment")
PORTS = [
    ("TCP", 50051),
    ("TCP", 50052),
    ("TCP", 50053),
    ("TCP", 8051),
    ("TCP", 8052),
    ("TCP", 8053),
    ("TCP", 4222),
    ("TCP", 6222),
    ("TCP", 5432),
    ("UDP", 53),
    ("TCP", 53),
    ("TCP", 443),
]
DATABASE_IP = "192.0.2.10"
# The client namespace of the manifests (base default; production names it explicitly).
CLIENT_NAMESPACE = "shop-clients"  # inside the production overlay's documented placeholder range


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str | None  # None: outside the cluster
    labels: dict[str, str] = field(default_factory=dict)
    ip: str | None = None

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace or ""}


def endpoints(rendered: Rendered) -> list[Endpoint]:
    found = []
    for obj, _ in rendered.workloads():
        labels = obj["spec"]["template"]["metadata"]["labels"]
        found.append(Endpoint(labels["app.kubernetes.io/name"], NAMESPACE, dict(labels)))
    found += [
        Endpoint("client", CLIENT_NAMESPACE, {"shop-mesh/client": "true"}),
        Endpoint("client-in-shop", NAMESPACE, {"shop-mesh/client": "true"}),
        # a pod that calls itself a client from any other namespace is a stranger
        Endpoint("client-elsewhere", "storefront", {"shop-mesh/client": "true"}),
        Endpoint("stranger", "other", {"app": "stranger"}),
        Endpoint("stranger-in-shop", NAMESPACE, {"app": "stranger"}),
        Endpoint("dns", "kube-system", {"k8s-app": "kube-dns"}),
        Endpoint("internet", None, ip="203.0.113.7"),
        # A kind node (Docker's kind network), where NodePort traffic from the host comes
        # from, and a pod with an address in cluster.yaml's pod subnet.
        Endpoint("node", None, ip="172.18.0.3"),
        Endpoint("stranger-with-ip", "other", {"app": "stranger"}, ip="10.244.1.7"),
    ]
    if rendered.find("StatefulSet", "postgres") is None:
        found.append(Endpoint("postgres", None, ip=DATABASE_IP))
    return found


def peer_matches(peer: Obj, policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False  # pod addresses are not what these policies select by
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        inside = address in ipaddress.ip_network(block["cidr"])
        return inside and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not label_selector_matches(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_ns:
        return False
    return label_selector_matches(peer.get("podSelector", {}), other.labels)


def port_matches(rule: Obj, protocol: str, port: int) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for p in ports:
        assert isinstance(p.get("port", 0), int), "use port numbers, not names"
        if p.get("protocol", "TCP") == protocol and p.get("port", port) <= port <= p.get(
            "endPort", p.get("port", port)
        ):
            return True
    return False


def allowed(
    policies: list[Obj], subject: Endpoint, other: Endpoint, direction: str, proto_port: Any
) -> bool:
    """Does `subject` allow traffic to/from `other` in `direction` (Ingress or Egress)?"""
    if subject.namespace != NAMESPACE:
        return True  # outside our namespace no policy of ours applies
    selecting = [
        p
        for p in policies
        if direction in p["spec"].get("policyTypes", ["Ingress"])
        and label_selector_matches(p["spec"]["podSelector"], subject.labels)
    ]
    if not selecting:
        return True
    key, peer_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peer_key)
            if not port_matches(rule, *proto_port):
                continue
            if peers is None or any(
                peer_matches(peer, policy["metadata"]["namespace"], other) for peer in peers
            ):
                return True
    return False


def allowed_paths(rendered: Rendered) -> set[tuple[str, str, str, int]]:
    """Every (source, destination, protocol, port) the policies let through, for pairs with
    at least one end in our namespace (the rest is not these policies' business)."""
    policies = rendered.of_kind("NetworkPolicy")
    everyone = endpoints(rendered)
    paths = set()
    for source in everyone:
        for target in everyone:
            if NAMESPACE not in (source.namespace, target.namespace):
                continue
            for proto_port in PORTS:
                if allowed(policies, source, target, "Egress", proto_port) and allowed(
                    policies, target, source, "Ingress", proto_port
                ):
                    paths.add((source.name, target.name, *proto_port))
    return paths


def expected_paths(rendered: Rendered) -> set[tuple[str, str, str, int]]:
    ports = {"order": 50051, "credit": 50052, "payment": 50053}
    http = {"order": 8051, "credit": 8052, "payment": 8053}  # the Connect door
    expected: set[tuple[str, str, str, int]] = set()
    # clients in the client namespace or in ours -> the three services, over gRPC and over
    # HTTP; none from elsewhere
    for client in ("client", "client-in-shop"):
        expected |= {(client, service, "TCP", ports[service]) for service in SERVICES}
        expected |= {(client, service, "TCP", http[service]) for service in SERVICES}
    expected |= {("payment", "order", "TCP", 50051), ("payment", "credit", "TCP", 50052)}
    for service in SERVICES:  # every service -> NATS and PostgreSQL
        expected |= {(service, "nats", "TCP", 4222), (service, "postgres", "TCP", 5432)}
    expected.add(("migrate", "postgres", "TCP", 5432))
    expected.add(("nats", "nats", "TCP", 6222))  # cluster routes between members
    if rendered.overlay == "kind":  # the host via the NodePorts (kind/node-ports-policy.yaml)
        expected |= {("node", service, "TCP", ports[service]) for service in SERVICES}
        expected |= {("node", service, "TCP", http[service]) for service in SERVICES}
    for pod in endpoints(rendered):  # DNS from every pod of the namespace
        if pod.namespace == NAMESPACE:
            expected |= {(pod.name, "dns", "UDP", 53), (pod.name, "dns", "TCP", 53)}
    return expected


def test_network_policies_allow_exactly_the_listed_paths(rendered: Rendered) -> None:
    actual = allowed_paths(rendered)
    expected = expected_paths(rendered)
    assert sorted(actual - expected) == [], "allowed but not listed"
    assert sorted(expected - actual) == [], "listed but not allowed"


def test_the_namespace_denies_by_default(rendered: Rendered) -> None:
    deny = rendered.get("NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_client_access_is_pinned_to_the_client_namespace(rendered: Rendered) -> None:
    """No policy admits pods from every namespace (`namespaceSelector: {}`)."""
    for policy in rendered.of_kind("NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "namespaceSelector" in peer:
                    assert peer["namespaceSelector"].get("matchLabels"), policy["metadata"]["name"]
