"""Every Prometheus metric of the service, declared once. Base units; `apg_` prefix.

Each metric's help text is its documentation: docs/METRICS.md is generated from a fresh `Metrics(CollectorRegistry())`
and the feedback store's metrics (`python -m scripts.docs`; a test fails when the two differ).

`model` is a served model's name, `arm` an experiment arm (`control`, `treatment`) or `none` (no experiment chose the
model): label values are bounded by the repository and the experiment.

Routes are path templates (`/v2/models/{name}/infer`); unmatched paths count as `unmatched`, so a scan of
random URLs cannot blow up the label set. gRPC calls (service/grpc) count in the same request metrics with `route` the
RPC's method (`/inference.GRPCInferenceService/ModelInfer`) and `code` the HTTP status of the same outcome. Latency
buckets run from 100 µs to 10 s, seven below 10 ms.

Several workers: when `PROMETHEUS_MULTIPROC_DIR` is set (service.server does it for `--workers > 1`, a temporary
folder) every worker writes its samples there and `/metrics` aggregates them with the multiprocess collector
(service/prometheus.py); gauges use `livesum`, so a dead worker's in-flight requests and model info drop out: a worker
that stops drops its own, and the supervisor of `apg serve --workers N` drops those of a worker that was killed as it
reaps it (service/workers.py), not each scrape. One process alone also exports prometheus_client's process, platform
and GC metrics (meaningless when aggregated). No counter or histogram exports a `_created` series.

The feedback store's metrics (service/feedback/prometheus.py) exist only with a feedback store: its counters per
process, like every other counter; the `apg_online_*` gauges describe the shared store, the same from any worker or
replica (aggregate replicas with `max`, not `sum`).
"""

from __future__ import annotations

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from features import OOV
from service.prometheus import StageTimer, aggregate, multiprocess_dir, observe_many

# fmt: off
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075,  # seven below 10 ms
                   0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# fmt: on
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 0.05 … 1.0
# fmt: off
LOOKUP_BUCKETS = (0.000025, 0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
                  0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# fmt: on
DIFF_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
NO_ARM = "none"  # the arm label of a request no experiment assigned
STAGES = ("receive", "parse", "preprocess", "queue", "inference", "serialise")


class Metrics:
    """The service's metrics on one registry (a fresh `CollectorRegistry` per app unless one is given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # no `_created` series beside every counter and histogram (a timestamp per child
        # that no dashboard reads; prometheus_client's switch is process-wide, and this is the service's process)
        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
            if not multiprocess_dir():  # process metrics of this one process; meaningless when aggregated
                for collector in (ProcessCollector, PlatformCollector, GCCollector):
                    collector(registry=registry)
        self.registry = registry
        r = registry
        self.request_duration = Histogram(
            "apg_request_duration_seconds",
            "HTTP request wall time by route template (gRPC: the RPC's method).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
            "apg_stage_duration_seconds",
            "Time spent per scoring stage: receive (reading the body: slow uploads show here), parse, preprocess, "
            "queue, inference, serialise.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "apg_requests",
            "HTTP requests by route template and status code (gRPC: the RPC's method and the HTTP status of the same "
            "outcome).",
            ["route", "code"],
            registry=r,
        )
        self.rows_scored = Counter(
            "apg_rows_scored", "Rows that received a score, by model and arm.", ["model", "arm"], registry=r
        )
        self.request_rows = Histogram("apg_request_rows", "Rows per scoring request.", buckets=ROW_BUCKETS, registry=r)
        self.batch_rows = Histogram(
            "apg_inference_batch_rows",
            "Rows per onnxruntime call (more than per request when micro-batching).",
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "apg_inflight_requests",
            "HTTP requests in flight, probes and scrapes excluded (summed over workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "apg_model_info",
            "The model each worker serves, and on which execution provider (value = workers serving it).",
            ["name", "version", "checksum", "provider"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.scores = Histogram(
            "apg_score",
            "Predicted click probabilities, by model and arm (drift monitoring).",
            ["model", "arm"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.model_requests = Counter(
            "apg_model_requests",
            "Scoring requests by the model that answered, its arm (none without an experiment) and status code.",
            ["model", "arm", "code"],
            registry=r,
        )
        self.model_request_duration = Histogram(
            "apg_model_request_duration_seconds",
            "Scoring request wall time by model and arm.",
            ["model", "arm"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_requests = Counter(
            "apg_shadow_requests",
            "Shadow scoring requests by shadow model and result: scored, dropped (its queue full), error.",
            ["shadow", "result"],
            registry=r,
        )
        self.shadow_diff = Histogram(
            "apg_shadow_abs_diff",
            "Per row: abs(shadow score - served score), by shadow model.",
            ["shadow"],
            buckets=DIFF_BUCKETS,
            registry=r,
        )
        self.shadow_duration = Histogram(
            "apg_shadow_duration_seconds",
            "A shadow model's encode + inference time per request.",
            ["shadow"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            "apg_model_reloads",
            "Hot reloads by result: ok, or error (the old model keeps serving).",
            ["result"],
            registry=r,
        )
        self.oov = Counter(
            "apg_oov_values",
            "Values encoded as out-of-vocabulary, per categorical or multi-valued feature field (an unknown genre, or "
            "a genres string with the wrong separator, shows here instead of scoring silently like a missing value).",
            ["feature"],
            registry=r,
        )
        self.clipped = Counter(
            "apg_clipped_values",
            "Numbers outside their field's declared range, clipped to it, by feature (docs/BUNDLE.md rule 5).",
            ["feature"],
            registry=r,
        )
        self.open_connections = Gauge(
            "apg_open_connections",
            "Open HTTP connections, summed over workers (service/connections.py).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_closed = Counter(
            "apg_connections_closed",
            "HTTP connections closed by the service, by reason: head_timeout, evicted (the cap reached), refused (the "
            "cap reached, every connection in a request).",
            ["reason"],
            registry=r,
        )
        self.item_lookup = Histogram(
            "apg_item_store_lookup_seconds",
            "One item store lookup of a request's candidate ids, by model.",
            ["model"],
            buckets=LOOKUP_BUCKETS,
            registry=r,
        )
        self.item_misses = Counter(
            "apg_item_store_misses", "Candidate ids the item store does not hold, by model.", ["model"], registry=r
        )
        self.item_errors = Counter(
            "apg_item_store_errors",
            "Requests that needed the item store and got a 503, by model and code: item_store_unavailable (down, "
            "slow), item_store_mismatch (no rows for the model's contract).",
            ["model", "code"],
            registry=r,
        )
        self.item_store_info = Gauge(
            "apg_item_store_info",
            "The item store version each model reads (value = its items).",
            ["model", "backend", "version", "checksum"],
            registry=r,
            multiprocess_mode="livemax",
        )
        for result in ("ok", "error"):  # exported at 0 from the start, so the first failure shows in a rate()
            self.reloads.labels(result)
        for reason in ("head_timeout", "evicted", "refused"):
            self.connections_closed.labels(reason)
        # every stage exported from the start (dashboards see zeros, not gaps); children cached for the hot path
        self._stages = {stage: self.stage_duration.labels(stage) for stage in STAGES}
        self._model_labels: dict[str, tuple[str, ...]] = {}
        self._item_store_labels: dict[str, tuple[str, ...]] = {}
        self._score_children: dict[tuple[str, str], tuple] = {}
        self._request_children: dict[tuple[str, str, int], tuple] = {}
        self._shared: list = []

    def stage(self, stage: str, seconds: float) -> None:
        self._stages[stage].observe(seconds)

    def timed(self, stage: str) -> StageTimer:
        """`with metrics.timed("parse"): ...`: the block's wall time recorded as `stage` (one of STAGES) when it
        completes; a block that raises records nothing (the request did not get through that stage)."""
        return StageTimer(self._stages[stage])

    def set_model(self, name: str, version: str, checksum: str, provider: str, slot: str = "") -> None:
        """Swap the model info series of `slot` (a repository's model name; "" when one bundle is served): its old
        label set goes to 0 (and away), the new one to 1."""
        old = self._model_labels.get(slot)
        if old is not None:
            self.model_info.labels(*old).set(0)
            self.model_info.remove(*old)
        self._model_labels[slot] = labels = (name, version, checksum, provider)
        self.model_info.labels(*labels).set(1)

    def set_item_store(self, model: str, backend: str = "", version: str = "", checksum: str = "", items: int = 0):
        """The item store version `model` reads (no backend: none, its series dropped), as set_model does."""
        labels = (model, backend, version, checksum)
        old = self._item_store_labels.get(model)
        if old == labels:
            return
        if old is not None:
            self.item_store_info.labels(*old).set(0)
            self.item_store_info.remove(*old)
            del self._item_store_labels[model]
        if backend:
            self._item_store_labels[model] = labels
            self.item_store_info.labels(*labels).set(items)

    def observe_scores(self, scores: np.ndarray, model: str = "", arm: str | None = None) -> None:
        """Record every score in one pass: O(buckets) metric updates per request instead of O(rows)."""
        key = (model, arm or NO_ARM)
        children = self._score_children.get(key)
        if children is None:  # labels() takes a lock and builds a tuple: once per (model, arm), not per request
            children = self._score_children[key] = (self.scores.labels(*key), self.rows_scored.labels(*key))
        observe_many(children[0], scores)
        children[1].inc(len(scores))
        self.request_rows.observe(len(scores))

    def observe_model_request(self, model: str, arm: str | None, code: int, seconds: float) -> None:
        """A finished scoring request, by the model that answered it (the middleware calls this)."""
        key = (model, arm or NO_ARM, code)
        children = self._request_children.get(key)
        if children is None:  # labels() takes a lock and builds a tuple: once per (model, arm, code)
            children = (self.model_requests.labels(*key[:2], str(code)), self.model_request_duration.labels(*key[:2]))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_oov(self, fields: tuple[str, ...], feeds: dict[str, np.ndarray]) -> None:
        """Count the OOV index in each of `fields` (the categorical and multi-valued inputs: in a numeric one, index
        1 is a bucket). A multi-valued field counts the elements the model sees (up to its max_len)."""
        for name in fields:
            ids = feeds[name]
            # small arrays (batch 1: ~0.5 µs a field) through a list; numpy's per-call cost pays off only on large ones
            n = ids.ravel().tolist().count(OOV) if ids.size <= 256 else int(np.count_nonzero(ids == OOV))
            if n:
                self.oov.labels(name).inc(n)

    def count_clipped(self, counts: dict[str, int]) -> None:
        """Numbers the encoder clipped to their field's declared range, {feature: count} of one request (a field
        whose rule is to clip; one whose rule is to refuse answers 400 naming the feature and the row instead)."""
        for feature, n in counts.items():
            if n:
                self.clipped.labels(feature).inc(n)

    def add_shared(self, collector) -> None:
        """A collector of state every worker shares (the feedback store's window): in multiprocess mode it joins the
        aggregate once, instead of being summed over workers."""
        self._shared.append(collector)
        if not multiprocess_dir():
            self.registry.register(collector)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) for GET /metrics; aggregates all workers in multiprocess mode."""
        if multiprocess_dir():
            return aggregate(self._shared), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
