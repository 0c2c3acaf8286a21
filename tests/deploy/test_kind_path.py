"""The kind path as a user on a laptop meets it (docs/deploy.md), checked offline: the smoke
script's health matching and grpcurl choice, the image name podman tags and saves, IMAGE and
IMAGE_TAG reaching the manifests, `make deploy` (with a stand-in kubectl that records what it
is asked and renders what it applies), the documented production steps' reference order, and
the NodePorts that make the cluster reachable like `make run`."""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from services.localmesh.embedded import find_free_port
from tests.deploy.manifests import (
    K8S,
    KUBECTL,
    ROOT,
    Obj,
    Rendered,
    load_all,
    render,
)

SMOKE = ROOT / "deploy" / "scripts" / "smoke.sh"
K8S_MK = ROOT / "deploy" / "k8s.mk"
DOCS = ROOT / "docs" / "deploy.md"
CLUSTER = K8S / "kind" / "cluster.yaml"
SERVICE_PORTS = {"order": 50051, "credit": 50052, "payment": 50053}
HTTP_PORTS = {"order": 8051, "credit": 8052, "payment": 8053}  # Connect, /metrics, /healthz


def tool(directory: Path, name: str, body: str) -> Path:
    """A small stand-in program (Python) at directory/name."""
    path = directory / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def make(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# --- 3. smoke: the exact health status; 1. a grpcurl that runs ---------------------------

# Answers the health check with the status its file is named after (grpcurl-NOT_SERVING).
FAKE_GRPCURL = """
import os, sys
if "-version" in sys.argv:
    print("grpcurl v1.9.1"); sys.exit(0)
print('{\\n  "status": "%s"\\n}' % os.path.realpath(sys.argv[0]).rsplit("-", 1)[-1])
"""


def run_smoke(
    tmp_path: Path, grpcurl: str | None, path: Iterable[Path] = ()
) -> subprocess.CompletedProcess[str]:
    venv = tmp_path / "venv"
    venv.mkdir(exist_ok=True)
    python = tool(venv, "python", "import sys; print('demo ran', sys.argv[1:])")
    env = {
        "PATH": os.pathsep.join([*map(str, path), "/usr/bin", "/bin"]),
        "PYTHON": str(python),
        "SMOKE_ATTEMPTS": "2",
        "SMOKE_INTERVAL": "0",
    }
    if grpcurl is not None:
        env["GRPCURL"] = grpcurl
    return subprocess.run(
        ["bash", str(SMOKE), "127.0.0.1:30051", "127.0.0.1:30052", "127.0.0.1:30053"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_smoke_fails_on_not_serving(tmp_path: Path) -> None:
    grpcurl = tool(tmp_path, "grpcurl-NOT_SERVING", FAKE_GRPCURL)
    result = run_smoke(tmp_path, str(grpcurl))
    assert result.returncode != 0, result.stdout
    assert "demo ran" not in result.stdout
    assert "not SERVING" in result.stderr
    assert "NOT_SERVING" in result.stderr  # the last answer is shown


def test_smoke_runs_the_demo_against_the_node_ports_when_serving(tmp_path: Path) -> None:
    grpcurl = tool(tmp_path, "grpcurl-SERVING", FAKE_GRPCURL)
    result = run_smoke(tmp_path, str(grpcurl))
    assert result.returncode == 0, result.stderr
    assert "demo ran ['scripts/demo.py']" in result.stdout
    assert "smoke test passed" in result.stdout


def test_smoke_falls_back_to_a_grpcurl_on_path(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    tool(venv, "grpcurl", "import sys; sys.exit('exec format error')")  # a foreign binary
    on_path = tmp_path / "bin"
    on_path.mkdir()
    serving = tool(tmp_path, "grpcurl-SERVING", FAKE_GRPCURL)
    (on_path / "grpcurl").symlink_to(serving)
    result = run_smoke(tmp_path, None, [on_path])
    assert result.returncode == 0, result.stderr
    assert f"grpcurl: {on_path / 'grpcurl'}" in result.stdout


@pytest.mark.skipif(
    shutil.which("grpcurl", path="/usr/bin:/bin") is not None, reason="a system grpcurl exists"
)
def test_smoke_says_what_to_install_when_no_grpcurl_runs(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    tool(venv, "grpcurl", "import sys; sys.exit('cannot execute binary file')")
    result = run_smoke(tmp_path, None)
    assert result.returncode != 0
    assert "cannot execute binary file" in result.stderr  # the cause, not hidden
    assert "brew install grpcurl" in result.stderr
    assert "GRPCURL=" in result.stderr


def test_demo_takes_grpcurl_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import demo  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    working = tool(tmp_path, "grpcurl-SERVING", FAKE_GRPCURL)
    monkeypatch.setenv("GRPCURL", str(working))
    demo.find_grpcurl.cache_clear()
    assert demo.find_grpcurl() == str(working)
    broken = tool(tmp_path, "broken", "import sys; sys.exit('exec format error')")
    monkeypatch.setenv("GRPCURL", str(broken))
    demo.find_grpcurl.cache_clear()
    with pytest.raises(demo.DemoError, match="exec format error"):
        demo.find_grpcurl()


# --- 2. the image name: what podman tags and saves is what the pods ask for ----------------


def normalized(reference: str) -> str:
    """What containerd (kind's nodes) makes of an image reference."""
    first, _, rest = reference.partition("/")
    if not rest:
        return f"docker.io/library/{reference}"
    if "." in first or ":" in first or first == "localhost":
        return reference
    return f"docker.io/{reference}"


def kind_service_images(rendered: Rendered) -> set[str]:
    return {
        c["image"]
        for obj, pod in rendered.workloads()
        if obj["metadata"]["name"] in ("order", "credit", "payment", "shop-migrate")
        for c in pod["containers"]
    }


@pytest.mark.parametrize(
    "overrides",
    [(), ("IMAGE=registry.example.com:5000/team/shop", "IMAGE_TAG=1.2.3"), ("IMAGE=team/shop",)],
)
def test_podman_tags_and_saves_the_name_the_pods_ask_for(overrides: tuple[str, ...]) -> None:
    build = make("-n", "image", "kind-load", "CONTAINER_ENGINE=podman", *overrides)
    image = dict(o.split("=", 1) for o in overrides)
    wanted = normalized(f"{image.get('IMAGE', 'shop-mesh')}:{image.get('IMAGE_TAG', 'dev')}")
    tags = re.findall(r"podman build --tag (\S+)", build)
    saved = re.findall(r"podman save --format docker-archive -o \S+ ([^\s;]+)", build)
    assert tags == [wanted], build
    assert saved == [wanted], build
    if not overrides:  # and it is the name the kind overlay's pods use
        assert {normalized(i) for i in kind_service_images(render("kind"))} == {wanted}


@pytest.mark.parametrize(
    "setting", ["KIND_EXPERIMENTAL_PROVIDER=podman", "CONTAINER_ENGINE=podman"]
)
def test_either_podman_setting_puts_kind_and_the_image_on_podman(setting: str) -> None:
    """A podman-only laptop sets one of the two; kind's nodes and the image must both use it
    (kind-up checks the engine, kind-load hands kind the provider)."""
    checks = make("-n", "kind-up", setting)
    assert "command -v podman" in checks, checks
    assert "command -v docker" not in checks, checks
    show = "--eval=show-provider: ; @echo provider=$${KIND_EXPERIMENTAL_PROVIDER-}"
    assert make(show, "show-provider", setting).strip() == "provider=podman"
    assert make(show, "show-provider").strip() == "provider="  # docker: kind's default


# --- 6, 7, 8, 3: make deploy with a stand-in kubectl ---------------------------------------

FAKE_KUBECTL = f"""
import os, subprocess, sys
args = sys.argv[1:]
log = os.environ["FAKE_LOG"]
with open(log, "a") as f:
    f.write(" ".join(args) + "\\n")
words = [a for a in args if not a.startswith("-")]
if "apply" in args and "-k" in args:
    directory = args[args.index("-k") + 1]
    out = subprocess.run([{str(KUBECTL)!r}, "kustomize", directory], capture_output=True,
                         text=True, check=True).stdout
    with open(log + ".applied", "a") as f:
        f.write(out + "\\n---\\n")
elif "get" in words and "deployment" in words:
    print(os.environ.get("FAKE_EXISTING", ""))
elif "get" in words and "job" in words:
    print(os.environ.get("FAKE_JOB", "Complete"))
elif "get" in words and "pods" in words:
    print(os.environ.get("FAKE_TERMINATING", ""))
elif "logs" in words:
    print("migrate-order: relation already exists (the migration's own error)")
"""


def run_deploy(tmp_path: Path, *overrides: str, **fake: str) -> tuple[int, str, list[str]]:
    kubectl = tool(tmp_path, "kubectl", FAKE_KUBECTL)
    log = tmp_path / "kubectl.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    env.update({"FAKE_LOG": str(log), **{f"FAKE_{k.upper()}": v for k, v in fake.items()}})
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "deploy",
            f"KUBECTL={kubectl}",
            "ROLLOUT_TIMEOUT=6",
            *overrides,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result.returncode, result.stdout + result.stderr, calls


def test_deploy_applies_image_and_tag_overrides(tmp_path: Path) -> None:
    code, output, _ = run_deploy(
        tmp_path, "IMAGE=registry.example.com/team/shop-mesh", "IMAGE_TAG=0.9.1"
    )
    assert code == 0, output
    applied = load_all((tmp_path / "kubectl.log.applied").read_text())
    images = kind_service_images(Rendered("kind", applied))
    assert images == {"registry.example.com/team/shop-mesh:0.9.1"}


def test_first_deploy_restarts_nothing(tmp_path: Path) -> None:
    code, output, calls = run_deploy(tmp_path)
    assert code == 0, output
    assert not [c for c in calls if "rollout restart" in c]


def test_later_deploys_restart_only_what_existed(tmp_path: Path) -> None:
    code, output, calls = run_deploy(tmp_path, existing="deployment.apps/order")
    assert code == 0, output
    (restart,) = [c for c in calls if "rollout restart" in c]
    assert restart.endswith("rollout restart deployment.apps/order")


def test_a_failed_migration_stops_at_once_with_its_logs(tmp_path: Path) -> None:
    started = time.monotonic()
    code, output, calls = run_deploy(tmp_path, "ROLLOUT_TIMEOUT=300", job="Failed")
    assert code != 0
    assert time.monotonic() - started < 30  # not the whole timeout
    assert "relation already exists" in output
    assert not [c for c in calls if "component=grpc-service" in c and "apply" in c]


def test_deploy_waits_for_terminating_pods_to_be_gone(tmp_path: Path) -> None:
    code, output, calls = run_deploy(tmp_path, terminating="pod/order-old-1\npod/credit-old-2")
    assert code == 0, output
    waits = [c for c in calls if "wait" in c.split() and "--for=delete" in c]
    assert waits
    assert "pod/order-old-1" in waits[-1]
    assert "pod/credit-old-2" in waits[-1]
    assert calls.index(waits[-1]) > max(i for i, c in enumerate(calls) if "rollout status" in c)


# --- 4. every step's references are applied by then ----------------------------------------


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """kubectl's label selector syntax: key=value, key!=value, key in (…), key notin (…)."""
    for term in re.findall(r"[^,()]+(?:\([^)]*\))?", selector):
        term = term.strip()
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", term):
            values = {v.strip() for v in m.group(3).split(",")}
            inside = labels.get(m.group(1)) in values
            if inside != (m.group(2) == "in"):
                return False
        elif m := re.fullmatch(r"(\S+?)\s*(!=|==|=)\s*(\S+)", term):
            if (labels.get(m.group(1)) == m.group(3)) != (m.group(2) != "!="):
                return False
        else:
            raise AssertionError(f"selector term not understood: {term!r}")
    return True


def references(obj: Obj) -> set[tuple[str, str]]:
    refs: set[tuple[str, str]] = set()
    if obj["metadata"].get("namespace"):
        refs.add(("Namespace", obj["metadata"]["namespace"]))
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        pod = obj["spec"]["template"]["spec"]
        if pod.get("serviceAccountName"):
            refs.add(("ServiceAccount", pod["serviceAccountName"]))
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            for e in c.get("env", []):
                source = e.get("valueFrom", {})
                if "configMapKeyRef" in source:
                    refs.add(("ConfigMap", source["configMapKeyRef"]["name"]))
                if "secretKeyRef" in source:
                    refs.add(("Secret", source["secretKeyRef"]["name"]))
            for e in c.get("envFrom", []):
                if "configMapRef" in e:
                    refs.add(("ConfigMap", e["configMapRef"]["name"]))
                if "secretRef" in e:
                    refs.add(("Secret", e["secretRef"]["name"]))
        for v in pod.get("volumes", []):
            if "configMap" in v:
                refs.add(("ConfigMap", v["configMap"]["name"]))
            if "secret" in v:
                refs.add(("Secret", v["secret"]["secretName"]))
        if obj["kind"] == "StatefulSet":
            refs.add(("Service", obj["spec"]["serviceName"]))
    return refs


def check_steps(
    rendered: Rendered, selectors: list[str | None], outside: set[tuple[str, str]]
) -> None:
    """Each step applies the objects its selector picks; what they reference must have been
    applied by an earlier step or the same one (or be created outside, documented)."""
    applied = set(outside)
    for number, selector in enumerate(selectors, 1):
        step = [
            o
            for o in rendered.objects
            if selector is None or selector_matches(selector, o["metadata"].get("labels", {}))
        ]
        assert step, f"step {number} ({selector}) applies nothing"
        applied |= {(o["kind"], o["metadata"]["name"]) for o in step}
        # cert-manager writes each Certificate's Secret (pods wait for it to appear)
        applied |= {("Secret", o["spec"]["secretName"]) for o in step if o["kind"] == "Certificate"}
        for o in step:
            missing = references(o) - applied
            assert not missing, (
                f"step {number} ({selector}): {o['kind']} {o['metadata']['name']} "
                f"needs {sorted(missing)}, not applied yet"
            )
    assert applied >= {(o["kind"], o["metadata"]["name"]) for o in rendered.objects}


def apply_selectors(commands: Iterable[list[str]]) -> list[str | None]:
    found: list[str | None] = []
    for words in commands:
        if "apply" not in words:
            continue
        selector = None
        for flag in ("-l", "--selector"):
            if flag in words:
                selector = words[words.index(flag) + 1]
        found.append(selector)
    return found


def documented_rollout() -> list[list[str]]:
    text = DOCS.read_text()
    section = text.split("## Rolling out a new version", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            commands.append(shlex.split(line))
    return commands


def deploy_script_commands() -> list[list[str]]:
    """Every kubectl command of deploy.sh, in order (also those inside $(…))."""
    text = (ROOT / "deploy" / "scripts" / "deploy.sh").read_text()
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.lstrip().startswith(("#", "k=(")):
            continue
        for m in re.finditer(r'"\$\{(?:kubectl|k)\[@\]\}"\s+(.*?)(?:\)"|$)', line):
            command = re.sub(r"\s*(2>/dev/null|>&2)?\s*\|\|\s*true\s*$", "", m.group(1))
            commands.append(shlex.split(command))
    return commands


# Created before the first apply ("Production: a managed or operator-run PostgreSQL").
# Made before the rollout, outside the repository (docs/deploy.md, docs/security.md).
PRODUCTION_OUTSIDE = {("Namespace", "shop"), ("Secret", "shop-database"), ("Secret", "shop-nats")}


def test_documented_production_rollout_applies_references_first() -> None:
    commands = documented_rollout()
    production = render("production")
    for words in commands:
        if "apply" in words:
            assert words[words.index("-k") + 1] == "deploy/k8s/production"
    check_steps(production, apply_selectors(commands), outside=PRODUCTION_OUTSIDE)


def test_make_deploy_applies_references_first() -> None:
    check_steps(render("kind"), apply_selectors(deploy_script_commands()), outside=set())


def test_documented_rollout_is_what_make_deploy_runs() -> None:
    """Line for line: the same kubectl verbs, resources and selectors in the same order."""

    def shape(commands: Iterable[list[str]]) -> list[list[str]]:
        """Without what differs by design: the namespace flag, the overlay (docs: production,
        the script: its generated one), timeouts, and the names found at run time."""
        keep = []
        for words in commands:
            if "--timeout" in words:
                at = words.index("--timeout")
                words = words[:at] + words[at + 2 :]
            words = [w for w in words if w not in ("kubectl", "-n", "shop", "--namespace", "-k")]
            words = [
                w
                for w in words
                if "$" not in w
                and w != "deploy/k8s/production"
                and not w.startswith(("pod/", "deployment.apps/"))
            ]
            keep.append(words)
        return keep

    assert shape(documented_rollout()) == shape(deploy_script_commands())


def test_the_old_order_is_rejected() -> None:
    """The check above sees the broken order of the old docs: the Job before its ConfigMap."""
    with pytest.raises(AssertionError, match="ConfigMap"):
        check_steps(
            render("production"),
            ["app.kubernetes.io/component=migration", None],
            outside=PRODUCTION_OUTSIDE,
        )


# --- 5. kind and its node image; the NodePorts ---------------------------------------------


def cluster() -> Obj:
    (config,) = load_all(CLUSTER.read_text())
    return config


def test_node_image_is_pinned_by_digest_and_documented() -> None:
    images = {node.get("image") for node in cluster()["nodes"]}
    assert len(images) == 1
    (image,) = images
    assert image
    assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", image), image
    docs = DOCS.read_text()
    version = re.search(r"kind (v0\.\d+)\.\d+", docs)
    assert version
    assert int(version.group(1).split(".")[1]) >= 25, "kind 0.25+ (policy DNS fix)"
    assert image.split("@")[0].split(":")[1] in docs


def test_node_ports_are_mapped_to_the_host_and_smoke_uses_them() -> None:
    kind = render("kind")
    node_ports, http_node_ports = {}, {}
    for name, port in SERVICE_PORTS.items():
        grpc, http = kind.get("Service", name)["spec"]["ports"]
        assert kind.get("Service", name)["spec"]["type"] == "NodePort"
        assert (grpc["name"], grpc["port"]) == ("grpc", port)
        assert (http["name"], http["port"]) == ("http", HTTP_PORTS[name])
        node_ports[name], http_node_ports[name] = grpc["nodePort"], http["nodePort"]
    (control_plane,) = [n for n in cluster()["nodes"] if n["role"] == "control-plane"]
    mappings = control_plane["extraPortMappings"]
    assert {m["containerPort"] for m in mappings} == {
        *node_ports.values(),
        *http_node_ports.values(),
    }
    for m in mappings:
        assert m["hostPort"] == m["containerPort"]
        assert m["listenAddress"] == "127.0.0.1"  # only this machine, not the network
        assert m.get("protocol", "TCP") == "TCP"
    make_ports = re.search(r"^KIND_PORTS\s*\?=\s*(.+)$", K8S_MK.read_text(), re.MULTILINE)
    assert make_ports
    assert [int(p) for p in make_ports.group(1).split()] == [
        node_ports[s] for s in ("order", "credit", "payment")
    ]
    assert render("production").get("Service", "order")["spec"]["type"] == "ClusterIP"


def test_node_port_policies_exclude_the_pod_network() -> None:
    subnet = ipaddress.ip_network(cluster()["networking"]["podSubnet"])
    kind = render("kind")
    for name, port in SERVICE_PORTS.items():
        policy = kind.get("NetworkPolicy", f"{name}-node-port")["spec"]
        assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": name}}
        (rule,) = policy["ingress"]
        assert rule["ports"] == [
            {"protocol": "TCP", "port": port},
            {"protocol": "TCP", "port": HTTP_PORTS[name]},
        ]
        for peer in rule["from"]:
            block = ipaddress.ip_network(peer["ipBlock"]["cidr"])
            if subnet.subnet_of(block):  # type: ignore[arg-type]
                assert str(subnet) in peer["ipBlock"].get("except", [])


# --- 9. a StatefulSet's serviceName is a headless Service ----------------------------------


def test_every_statefulset_names_a_headless_service(rendered: Rendered) -> None:
    for statefulset in rendered.of_kind("StatefulSet"):
        service = rendered.get("Service", statefulset["spec"]["serviceName"])
        assert service["spec"].get("clusterIP") == "None", statefulset["metadata"]["name"]
        pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
        assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())


# --- 8. SIGUSR1 while a service starts does not kill it ------------------------------------


def free_port() -> int:
    return find_free_port(0)[0]


def test_drain_signal_during_start_does_not_kill_the_service(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens: the service waits for its database
    env = {
        **os.environ,
        "ORDER_PORT": str(free_port()),
        "GRPC_HOST": "127.0.0.1",
        "DATABASE_URL": f"postgresql://shop:x@127.0.0.1:{closed}/shop",
        "NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "LOG_FORMAT": "text",
    }
    log = tmp_path / "order.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.order", "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "not reachable yet" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        process.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        assert process.poll() is None, f"died on SIGUSR1 ({process.returncode}):\n{log.read_text()}"
        assert "drain requested" in log.read_text()
    finally:
        process.kill()
        process.wait(timeout=10)


# --- docs/deploy.md's quick start says what each make target runs ---------------------------


def test_quick_start_commands_are_what_make_runs() -> None:
    text = DOCS.read_text()
    section = text.split("## From a fresh laptop", 1)[1]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)[:1]
    lines = [line for line in block.splitlines() if line.startswith("make ")]
    assert [line.split()[1] for line in lines] == [
        "kind-up",
        "image",
        "kind-load",
        "deploy",
        "smoke",
        "kind-down",
    ]
    for line in lines:
        target, command = line.split()[1], line.split("#", 1)[1].strip()
        command = command.split(":", 1)[0] if target in ("deploy",) else command
        ran = re.sub(r"\s+", " ", make("-n", target).replace("\\\n", " "))
        assert command in ran, f"make {target} does not run `{command}`"
