"""deploy/k8s: the manifests parse, agree with each other and the image, and probe routes the app really serves."""

from __future__ import annotations

import pytest
import yaml
from deploy_files import REPO, parse_dockerfile
from live_server import http

from service.app import create_app
from service.settings import Settings

K8S = REPO / "deploy/k8s"


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    """kind -> document, over every YAML file of deploy/k8s."""
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert {"apiVersion", "kind"} <= doc.keys(), f"{path.name}: not a Kubernetes object"
            assert doc["kind"] not in out, f"two {doc['kind']} objects"
            out[doc["kind"]] = doc
    return out


@pytest.fixture(scope="module")
def pod(docs) -> dict:
    return docs["Deployment"]["spec"]["template"]


@pytest.fixture(scope="module")
def apg(pod) -> dict:
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "apg"]
    return container


@pytest.fixture(scope="module")
def routes(tmp_path_factory) -> set[str]:
    """The app's GET routes, from its OpenAPI schema (create_app wires routes; the bundle loads in the lifespan)."""
    app = create_app(Settings(bundle=tmp_path_factory.mktemp("no-bundle"), log_level="warning"))
    return {path for path, methods in app.openapi()["paths"].items() if "get" in methods}


def probes(container: dict) -> dict[str, dict]:
    return {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in container}


def test_manifests_parse(docs):
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodMonitor", "Kustomization"} <= docs.keys()
    for name in docs["Kustomization"]["resources"]:
        assert (K8S / name).is_file(), name


def test_probes_point_at_served_routes(apg, routes):
    found = probes(apg)
    assert found["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert found["livenessProbe"]["httpGet"]["path"] == "/livez"
    ports = {p["name"]: p["containerPort"] for p in apg["ports"]}
    for name, probe in found.items():
        assert probe["httpGet"]["path"] in routes, f"{name}: {probe['httpGet']['path']} is not a route of the app"
        assert probe["httpGet"]["port"] in ports, f"{name}: port {probe['httpGet']['port']} is not a container port"


def test_probes_answer_200_on_a_live_server(apg, apg_server):
    for name, probe in probes(apg).items():
        status, body = http("GET", apg_server.url + probe["httpGet"]["path"])
        assert status == 200, f"{name}: {status} {body[:200]!r}"


def test_container_matches_the_image(apg, pod):
    dockerfile = parse_dockerfile((REPO / "Dockerfile").read_text())
    serve = dockerfile.stage("serve")
    assert [p["containerPort"] for p in apg["ports"]] == [int(serve.last("EXPOSE").args)]
    uid = int(serve.last("USER").args.split(":")[0])
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == uid
    assert apg["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(m["mountPath"] == "/tmp" for m in apg["volumeMounts"]), "a writable /tmp under a read-only root"


def test_intra_op_threads_follow_the_cpu_limit(apg):
    env = {e["name"]: e for e in apg["env"]}
    ref = env["APG_INTRA_OP_THREADS"]["valueFrom"]["resourceFieldRef"]
    assert ref["resource"] == "limits.cpu" and ref["containerName"] == apg["name"] and str(ref["divisor"]) == "1"
    assert env["APG_MAX_CONCURRENCY"]["value"] == "1", "threads x concurrent inferences = the CPU limit"
    resources = apg["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[kind].keys(), kind


def test_bundle_comes_from_a_read_only_volume_filled_by_the_init_container(apg, pod):
    env = {e["name"]: e.get("value") for e in apg["env"]}
    (mount,) = [m for m in apg["volumeMounts"] if m["mountPath"] == env["APG_BUNDLE"]]
    assert mount["readOnly"] is True
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume
    if "emptyDir" in volume:
        (init,) = pod["spec"]["initContainers"]
        assert any(m["name"] == mount["name"] for m in init["volumeMounts"]), "the initContainer must fill it"


def test_data_dir_is_a_writable_volume_and_matches_the_image(apg, pod):
    # issue 25: readOnlyRootFilesystem and no volume at APG_DATA_DIR: an experiment's click store could not open
    env = {e["name"]: e.get("value") for e in apg["env"]}
    image = parse_dockerfile((REPO / "Dockerfile").read_text()).stage("serve").env()["APG_DATA_DIR"]
    assert env.get("APG_DATA_DIR", image) == image
    (mount,) = [m for m in apg["volumeMounts"] if m["mountPath"] == image]
    assert not mount.get("readOnly", False)
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume


def test_scrape_annotations_and_pod_monitor_match_the_container(docs, apg, pod, routes):
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == apg["ports"][0]["containerPort"]
    assert annotations["prometheus.io/path"] == "/metrics" in routes
    monitor = docs["PodMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["port"] in {p["name"] for p in apg["ports"]} and endpoint["path"] == "/metrics"


def test_service_and_autoscaler_select_the_deployment(docs, apg, pod):
    deployment = docs["Deployment"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = docs["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] in {p["name"] for p in apg["ports"]}
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert hpa["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["maxReplicas"]
