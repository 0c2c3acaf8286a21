"""Trust boundaries in the rendered manifests (docs/security.md): each service talks to NATS
as its own user, with a password from the Secret `shop-nats` that NATS reads too; clients
reach the services only from the client namespace; production runs mutual TLS with an
authorization policy whose identities are the certificates' names, the names Payment dials.
(tests/security/test_nats_permissions.py runs the NATS permissions on a real server.)"""

from __future__ import annotations

import re

from tests.deploy.manifests import K8S, Obj, Rendered
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
