"""docker-compose.yml (+ the GPU override), the Prometheus scrape config and Grafana provisioning agree."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from deploy_files import REPO, expand, parse_dockerfile


def load(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load("docker-compose.yml")


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def container_port(service: dict) -> int:
    """The container side of the first published port ("8000:8000", "127.0.0.1:9090:9090")."""
    return int(str(service["ports"][0]).split(":")[-1].split("/")[0])


def bind_mounts(service: dict) -> list[dict]:
    """Long-syntax bind mounts with `${VAR:-default}` sources resolved to their defaults."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict) and volume.get("type") == "bind":
            mounts.append({**volume, "source": expand(volume["source"], {})})
    return mounts


def test_compose_has_the_three_services(services):
    assert {"apg", "prometheus", "grafana"} <= services.keys()
    for name in ("prometheus", "grafana"):
        image, _, tag = services[name]["image"].partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), (
            f"{name}: pin the image tag ({services[name]['image']})"
        )


def test_apg_builds_the_serving_stage_and_publishes_its_port(services):
    apg = services["apg"]
    dockerfile = parse_dockerfile((REPO / "Dockerfile").read_text())
    assert apg["build"]["context"] == "."
    stage = dockerfile.stage(apg["build"]["target"])
    assert stage.name == "serve"
    exposed = int(stage.last("EXPOSE").args.split("/")[0])
    assert "8000:8000" in [str(p) for p in apg["ports"]]
    assert container_port(apg) == exposed == 8000


def test_bundle_is_mounted_read_only_where_apg_reads_it(services):
    apg = services["apg"]
    (bundle,) = [m for m in bind_mounts(apg) if m["target"] == apg["environment"]["APG_BUNDLE"]]
    assert bundle["read_only"] is True
    assert bundle["source"] == "./bundles/default"
    makefile = (REPO / "Makefile").read_text()
    m = re.search(r"^BUNDLE\s*\?=\s*(\S+)", makefile, re.M)
    if m:  # where `make bundle` writes is where compose mounts from
        assert bundle["source"] == f"./{m.group(1)}"


def test_prometheus_scrapes_the_apg_service_by_name_and_port(services):
    prometheus = services["prometheus"]
    (config,) = [m for m in bind_mounts(prometheus) if m["target"] == "/etc/prometheus/prometheus.yml"]
    assert config["source"] == "./deploy/prometheus/prometheus.yml" and config["read_only"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    scrape = load("deploy/prometheus/prometheus.yml")
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "apg"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"apg:{container_port(services['apg'])}"]
    assert job["scrape_interval"] == "5s"
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_grafana_provisioning_paths_exist_and_point_at_prometheus(services):
    grafana = services["grafana"]
    mounts = {m["target"]: m for m in bind_mounts(grafana)}
    for mount in mounts.values():
        assert (REPO / mount["source"]).is_dir(), f"{mount['source']} is missing in the repo"
        assert mount["read_only"]
    provisioning = REPO / mounts["/etc/grafana/provisioning"]["source"]
    datasources = sorted((provisioning / "datasources").glob("*.yml"))
    providers = sorted((provisioning / "dashboards").glob("*.yml"))
    assert datasources and providers

    (datasource,) = [d for f in datasources for d in yaml.safe_load(f.read_text())["datasources"]]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == f"http://prometheus:{container_port(services['prometheus'])}"

    (provider,) = [p for f in providers for p in yaml.safe_load(f.read_text())["providers"]]
    folder = provider["options"]["path"]
    assert folder in mounts, f"the dashboards provider reads {folder}, which compose does not mount"
    dashboards = REPO / mounts[folder]["source"]
    dashboard = json.loads((dashboards / "apg.json").read_text())
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{folder}/apg.json"

    ds_variable = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert ds_variable["current"]["value"] == datasource["uid"], "the dashboard's default datasource is provisioned"


def test_gpu_override_targets_the_gpu_stage_with_an_nvidia_reservation():
    override = load("docker-compose.gpu.yml")
    assert set(override["services"]) == {"apg"}, "the override changes the apg service only (same name, same target)"
    apg = override["services"]["apg"]
    dockerfile = parse_dockerfile((REPO / "Dockerfile").read_text())
    assert dockerfile.stage(apg["build"]["target"]).base.startswith("nvidia/cuda:")
    assert apg["environment"]["APG_PROVIDERS"] == "cuda"
    (device,) = apg["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_loadtest_profile_drives_the_apg_service(services):
    lt = services["loadtest"]
    assert lt["profiles"] == ["loadtest"] and lt["build"]["target"] == "loadtest"
    args = lt["command"]
    assert args[args.index("--url") + 1] == f"http://apg:{container_port(services['apg'])}"
    assert "--allow-remote" in args, "apg:8000 is not loopback; the generator refuses it without the flag"
    bundle = next(m for m in bind_mounts(lt) if m["target"] == args[args.index("--bundle") + 1])
    assert bundle["read_only"] is True
    assert lt["depends_on"]["apg"]["condition"] == "service_healthy"
