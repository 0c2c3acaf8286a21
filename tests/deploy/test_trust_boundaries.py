"""Trust boundaries in the rendered manifests (docs/security.md): each service talks to NATS
as its own user, with a password from the Secret `shop-nats` that NATS reads too; clients
reach the services only from the client namespace; production runs mutual TLS with an
authorization policy whose identities are the certificates' names, the names Payment dials.
(tests/security/test_nats_permissions.py runs the NATS permissions on a real server.)"""

from __future__ import annotations

import os
import re
from pathlib import Path

from services.common.security_settings import AuthzPolicy
from shop.credit.v1 import credit_service_pb2
from shop.order.v1 import order_service_pb2
from shop.payment.v1 import payment_service_pb2
from tests.deploy.manifests import K8S, Obj, Rendered, kustomize, load_all, yaml
from tests.deploy.services_spec import SERVICES

NATS_SECRET = "shop-nats"


def pod_container(rendered: Rendered, kind: str, name: str, container: str) -> Obj:
    spec = rendered.get(kind, name)["spec"]["template"]["spec"]
    (found,) = [c for c in spec["containers"] if c["name"] == container]
    result: Obj = found
    return result


def env_items(c: Obj) -> dict[str, Obj]:
    return {item["name"]: item for item in c.get("env", [])}


def nats_password_ref(rendered: Rendered, item: Obj, key: str) -> Obj:
    """The Secret reference of `item`, checked to be `shop-nats` (in kind with the hash
    suffix of its secretGenerator) and `key`."""
    ref: Obj = item["valueFrom"]["secretKeyRef"]
    assert re.fullmatch(rf"{NATS_SECRET}(-[a-z0-9]{{10}})?", ref["name"]), ref
    assert ref["key"] == key, ref
    return ref


# -- NATS: a user per service ----------------------------------------------------------------


def test_each_service_connects_to_nats_as_its_own_user(rendered: Rendered) -> None:
    for service in SERVICES:
        env = env_items(pod_container(rendered, "Deployment", service, service))
        assert env["NATS_USER"] == {"name": "NATS_USER", "value": service}
        nats_password_ref(rendered, env["NATS_PASSWORD"], service)


def test_nats_reads_each_password_from_the_same_secret_for_its_user(rendered: Rendered) -> None:
    env = env_items(pod_container(rendered, "StatefulSet", "nats", "nats"))
    auth = (K8S / "base" / "nats-auth.conf").read_text()
    users = re.findall(r"^\s*user: (\w+)\n\s*password: \$(\w+)$", auth, re.MULTILINE)
    assert sorted(user for user, _ in users) == sorted(SERVICES), "one user per service"
    for user, variable in users:
        nats_password_ref(rendered, env[variable], user)


def test_the_nats_secret_is_kind_only_or_made_outside_the_repository(
    rendered: Rendered,
) -> None:
    for service in SERVICES:
        env = env_items(pod_container(rendered, "Deployment", service, service))
        ref = nats_password_ref(rendered, env["NATS_PASSWORD"], service)
        if rendered.overlay == "production":
            # never committed: made by hand or by a secrets operator (docs/security.md)
            assert rendered.find("Secret", ref["name"]) is None
        else:
            assert rendered.secret_value(ref), f"kind has no NATS password for {service}"


# -- production: mutual TLS, the authorization policy and the certificates' names ----------

TLS_DIR = "/etc/shop/tls"
HEALTH = ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch")
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
GRPC_SERVICES = {
    "order": order_service_pb2.DESCRIPTOR.services_by_name["OrderService"],
    "credit": credit_service_pb2.DESCRIPTOR.services_by_name["CreditService"],
    "payment": payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"],
}
# The trust model of docs/security.md: what each identity may call on each service.
PAYMENT_MAY_CALL = {
    "/shop.order.v1.OrderService/GetOrder",
    "/shop.credit.v1.CreditService/GetReservation",
}


def methods_of(service: str) -> set[str]:
    described = GRPC_SERVICES[service]
    public = {f"/{described.full_name}/{m.name}" for m in described.methods}
    return public | set(HEALTH) | {REFLECTION}


def certificate_names(certificate: Obj) -> frozenset[str]:
    """What the servers read as the holder's verified identity: common name and DNS SANs."""
    spec = certificate["spec"]
    return frozenset([spec["commonName"], *spec.get("dnsNames", [])])


def production_policy(production: Rendered, service: str) -> AuthzPolicy:
    env = env_items(pod_container(production, "Deployment", service, service))
    policy, problems = AuthzPolicy.parse(env["GRPC_AUTHZ_RULES"]["value"])
    assert not problems, problems
    return policy


def mounted_certificate(production: Rendered, service: str) -> Obj:
    """The cert-manager Certificate whose Secret the service's TLS files come from."""
    spec = production.get("Deployment", service)["spec"]["template"]["spec"]
    c = pod_container(production, "Deployment", service, service)
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == TLS_DIR]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    secret_name = volume["secret"]["secretName"]
    (certificate,) = [
        cert
        for cert in production.of_kind("Certificate")
        if cert["spec"]["secretName"] == secret_name
    ]
    return certificate


def identities(production: Rendered) -> dict[str, frozenset[str]]:
    """Every leaf certificate issued by the mesh's CA, by common name."""
    leaves = [
        cert
        for cert in production.of_kind("Certificate")
        if not cert["spec"].get("isCA") and cert["spec"]["issuerRef"]["name"] == "shop-ca"
    ]
    return {cert["spec"]["commonName"]: certificate_names(cert) for cert in leaves}


def test_production_runs_mutual_tls_with_authorization_on_every_service(
    rendered_overlays: dict[str, Rendered],
) -> None:
    production = rendered_overlays["production"]
    for service in SERVICES:
        env = env_items(pod_container(production, "Deployment", service, service))
        assert env["GRPC_TLS_CERT"]["value"] == f"{TLS_DIR}/tls.crt"
        assert env["GRPC_TLS_KEY"]["value"] == f"{TLS_DIR}/tls.key"
        assert env["GRPC_TLS_CA"]["value"] == f"{TLS_DIR}/ca.crt"
        assert env["GRPC_TLS_CLIENT_AUTH"]["value"] == "require"
        assert production_policy(production, service).rules
        # The Secret is cert-manager's, from the mesh CA (whose ca.crt it carries).
        certificate = mounted_certificate(production, service)
        assert certificate["spec"]["commonName"] == service
        assert certificate["spec"]["issuerRef"]["name"] == "shop-ca"
        assert production.get("Issuer", "shop-ca")["spec"]["ca"]["secretName"] == "shop-ca"
        assert {"server auth", "client auth"} <= set(certificate["spec"]["usages"])
    # kind stays plaintext (the NetworkPolicies are its boundary)
    for service in SERVICES:
        env = env_items(pod_container(rendered_overlays["kind"], "Deployment", service, service))
        assert not {"GRPC_TLS_CERT", "GRPC_AUTHZ_RULES"} & set(env)


def test_every_identity_the_rules_name_is_a_certificate(
    rendered_overlays: dict[str, Rendered],
) -> None:
    production = rendered_overlays["production"]
    names = identities(production)
    assert set(names) == {"order", "credit", "payment", "client"}
    for service in SERVICES:
        for rule in production_policy(production, service).rules:
            for identity in rule.identities - {"*"}:
                holders = [cn for cn, held in names.items() if identity in held]
                assert holders == [identity], f"{service}: {rule.pattern} names {identity}"


def test_each_certificate_may_call_exactly_what_the_trust_model_says(
    rendered_overlays: dict[str, Rendered],
) -> None:
    """Every name on every certificate counts as an identity: none may widen its holder's
    rights (an order certificate with a SAN `client` would be the public API)."""
    production = rendered_overlays["production"]
    for holder, names in identities(production).items():
        for service in SERVICES:
            policy = production_policy(production, service)
            for method in methods_of(service):
                if method in HEALTH:
                    expected = True  # any verified identity: probes and load balancers
                elif holder == "client":
                    expected = True  # the public API and reflection
                elif holder == "payment":
                    expected = method in PAYMENT_MAY_CALL
                else:
                    expected = False  # order and credit call nobody over gRPC
                assert policy.allowed(method, names) is expected, (holder, service, method)
    # Without a certificate nothing is allowed (refused before the policy, and by it).
    for service in SERVICES:
        assert not production_policy(production, service).allowed(HEALTH[0], frozenset())


def test_servers_certificates_carry_the_names_callers_dial(
    rendered_overlays: dict[str, Rendered],
) -> None:
    """Payment verifies Order and Credit by the host of ORDER_TARGET / CREDIT_TARGET; clients
    by the Service names; the probes by the service's name."""
    production = rendered_overlays["production"]
    payment = pod_container(production, "Deployment", "payment", "payment")
    for variable, service in (("ORDER_TARGET", "order"), ("CREDIT_TARGET", "credit")):
        target = production.config_value(
            env_items(payment)[variable]["valueFrom"]["configMapKeyRef"]
        )
        host = re.fullmatch(r"dns:///([a-z0-9.-]+):\d+", target)
        assert host, target
        assert host.group(1) in mounted_certificate(production, service)["spec"]["dnsNames"]
    for service in SERVICES:
        dns_names = mounted_certificate(production, service)["spec"]["dnsNames"]
        assert {service, f"{service}.shop.svc.cluster.local", f"{service}-headless"} <= set(
            dns_names
        )


def test_docs_list_the_production_rules(rendered_overlays: dict[str, Rendered]) -> None:
    production = rendered_overlays["production"]
    docs = (K8S.parents[1] / "docs" / "security.md").read_text()
    documented = dict(re.findall(r"^(order|credit|payment):\s+(\S+)$", docs, re.MULTILINE))
    for service in SERVICES:
        env = env_items(pod_container(production, "Deployment", service, service))
        assert documented[service] == env["GRPC_AUTHZ_RULES"]["value"], service


# -- the client namespace ----------------------------------------------------------------------

CLIENT_INGRESS = ("order-ingress", "credit-ingress", "payment-ingress")


def client_namespaces(rendered: Rendered) -> set[str]:
    found = set()
    for name in CLIENT_INGRESS:
        peers = rendered.get("NetworkPolicy", name)["spec"]["ingress"][0]["from"]
        for peer in peers:
            if "namespaceSelector" in peer:
                assert peer["podSelector"] == {"matchLabels": {"shop-mesh/client": "true"}}
                labels = peer["namespaceSelector"]["matchLabels"]
                assert set(labels) == {"kubernetes.io/metadata.name"}, labels
                found.add(labels["kubernetes.io/metadata.name"])
    return found


def test_clients_come_from_one_named_namespace(rendered: Rendered) -> None:
    assert client_namespaces(rendered) == {"shop-clients"}


def test_the_client_namespace_is_replaced_by_the_documented_patch(tmp_path: Path) -> None:
    """The patch of production/kustomization.yaml, with another namespace, in an overlay of
    its own: every client ingress policy follows."""
    production = yaml.safe_load((K8S / "production" / "kustomization.yaml").read_text())
    (patch,) = [p for p in production["patches"] if "namespaceSelector" in p.get("patch", "")]
    patch["patch"] = patch["patch"].replace("shop-clients", "storefront-gateway")
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "base", tmp_path)],  # kustomize wants relative
        "patches": [patch],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    rendered = Rendered("custom", load_all(kustomize(tmp_path)))
    assert client_namespaces(rendered) == {"storefront-gateway"}
