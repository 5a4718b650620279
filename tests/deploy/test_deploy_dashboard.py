"""The Grafana dashboard: Grafana's structure, the panels the issue asks for, and metric names that really exist."""

from __future__ import annotations

import json
import re

import pytest
from deploy_files import REPO, dashboard_targets, promql_metric_names
from live_server import http, score
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import Metrics

PANEL_TYPES = {"timeseries", "stat", "gauge", "heatmap", "table", "bargauge", "text", "row", "histogram", "piechart"}
# Families' sample suffixes in the text format (counters gain _total/_created, histograms _bucket/_sum/_count/_created)
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}
FROM_PROMETHEUS = {"up"}  # series Prometheus itself adds per target
# exported only by a service with a feedback store (an experiment, or APG_FEEDBACK): service/feedback/prometheus.py
WITH_FEEDBACK_STORE = {
    *(f"apg_online_{suffix}" for suffix in ("ctr", "predicted_ctr", "auc", "calibration_ratio", "logloss")),
    "apg_online_labelled",
    "apg_online_impressions",
    *(f"apg_feedback_{name}_total" for name in ("recorded_rows", "dropped_rows", "write_errors")),
    "apg_feedback_total",
    "apg_feedback_exit_dropped_rows_total",
    "apg_feedback_store_unavailable",
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((REPO / "deploy/grafana/dashboards/apg.json").read_text())


def used_metrics(dashboard: dict) -> set[str]:
    return {name for _, target in dashboard_targets(dashboard) for name in promql_metric_names(target["expr"])}


def test_dashboard_has_grafana_structure(dashboard):
    assert dashboard["uid"] and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES and panel["title"], panel
        assert panel["datasource"]["type"] == "prometheus"
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "xywh") and grid["x"] + grid["w"] <= 24, grid
        mine = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"])


def test_dashboard_variables_are_defined(dashboard):
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    text = json.dumps(dashboard["panels"])
    used = set(re.findall(r"\$\{?(\w+)", text)) - {"__rate_interval", "__interval", "__range"}
    assert used <= defined, f"undefined dashboard variables: {used - defined}"


def test_dashboard_covers_the_issue_panels(dashboard):
    exprs = [t["expr"] for _, t in dashboard_targets(dashboard)]
    joined = "\n".join(exprs)
    for phi in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({phi}, sum by (le) (rate(apg_request_duration_seconds_bucket" in joined, phi
    assert re.search(
        r"histogram_quantile\(0\.99, sum by \(le, stage\) \(rate\(apg_stage_duration_seconds_bucket", joined
    )
    assert "rate(apg_rows_scored_total" in joined
    assert "apg_inference_batch_rows_sum" in joined and "apg_request_rows_sum" in joined
    assert re.search(r'apg_requests_total\{[^}]*code!~"2\.\."', joined), "errors by code"
    assert "apg_inflight_requests" in joined
    heatmaps = [t for p in dashboard["panels"] if p["type"] == "heatmap" for t in p["targets"]]
    assert any("apg_score_bucket" in t["expr"] and t.get("format") == "heatmap" for t in heatmaps)
    assert "apg_model_info" in joined


def test_dashboard_shows_every_metric_the_service_declares(dashboard):
    families = {m.name for m in Metrics(CollectorRegistry()).registry.collect() if m.name.startswith("apg_")}
    used = used_metrics(dashboard)
    missing = {f for f in families if not any(u == f or u.startswith(f + "_") for u in used)}
    assert not missing, f"service/metrics.py declares metrics the dashboard never shows: {sorted(missing)}"


def test_promql_name_extraction():
    expr = 'histogram_quantile(0.99, sum by (le, stage) (rate(apg_x_bucket{job=~"$job", a="b{c}"}[$__rate_interval])))'
    assert promql_metric_names(expr) == {"apg_x_bucket"}
    assert promql_metric_names('(sum(rate(a_total[1m])) or vector(0)) / sum(up{job="x"}) * 1e3') == {"a_total", "up"}


def test_dashboard_metrics_exist_in_a_live_scrape(dashboard, apg_server):
    """Every metric name in an expr appears in GET /metrics of a real `apg serve` (histogram suffixes count)."""
    assert score(apg_server) == 200
    status, body = http("GET", f"{apg_server.url}/metrics")
    assert status == 200
    exposed = set()
    for family in text_string_to_metric_families(body.decode()):
        exposed |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        exposed |= {sample.name for sample in family.samples}
    missing = used_metrics(dashboard) - exposed - FROM_PROMETHEUS - WITH_FEEDBACK_STORE
    assert not missing, f"the dashboard queries metrics that /metrics does not expose: {sorted(missing)}"


def test_dashboard_online_metrics_are_the_feedback_stores(dashboard, tmp_path):
    """The apg_online_* names the dashboard queries are gauges a feedback store's collector really exports, and the
    feedback counters it queries exist."""
    from service.feedback import FeedbackConfig, open_store
    from service.feedback.prometheus import FeedbackMetrics, WindowCollector

    registry = CollectorRegistry()
    store = open_store(FeedbackConfig(f"sqlite://{tmp_path}/feedback.db"), FeedbackMetrics(registry))
    try:
        store.record("r1", "control", "base", "v1", [0.2, 0.7])
        store.feedback(
            [{"request_id": "r1", "row": 0, "clicked": False}, {"request_id": "r1", "row": 1, "clicked": True}]
        )
        collector = WindowCollector(store, 3600)
        collector.refresh()
        registry.register(collector)
        exposed = set()
        for family in registry.collect():
            exposed |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    finally:
        store.close()
    feedback_names = {n for n in used_metrics(dashboard) if n.startswith(("apg_online_", "apg_feedback_"))}
    assert WITH_FEEDBACK_STORE <= feedback_names and feedback_names <= exposed, feedback_names - exposed
