"""Service configuration: one typed object, read from `APG_*` environment variables.

| variable | default | meaning |
|---|---|---|
| `APG_BUNDLE` | `bundles/default` | bundle directory to serve |
| `APG_MODELS` | unset | a model repository: serve every bundle in this directory, each under its directory's name |
| `APG_DEFAULT_MODEL` | first name | with APG_MODELS: the model of requests that name none (and of /readyz) |
| `APG_EXPERIMENT` | unset | a sticky two-arm split, JSON or a JSON file: `{"control", "treatment", "share", "key"}` |
| `APG_SHADOW` | unset | models (comma list) that also score every scored request, off the hot path |
| `APG_SHADOW_QUEUE` | `256` | shadow requests waiting at most; more are dropped and counted |
| `APG_FEEDBACK` | `auto` | click store: `sqlite:///path`, `redis://host:port/db`, `off`; `auto`: SQLite if split |
| `APG_DATA_DIR` | `var` | the service's own files (the SQLite feedback store) |
| `APG_FEEDBACK_MAX_AGE_S` | `86400` | scored rows are kept this long for feedback to join (then: unknown) |
| `APG_FEEDBACK_JOIN_WINDOW_S` | `3600` | feedback later than this after its score is answered `late` and not counted |
| `APG_FEEDBACK_MAX_ROWS` | `1000000` | scored rows kept at most (the oldest requests go first) |
| `APG_ONLINE_WINDOW_S` | `3600` | the sliding window of the apg_online_* gauges (per arm AUC, CTR, calibration) |
| `APG_ITEM_STORE` | unset | ranking by id: `file://DIR` or `redis://host:port/db` (every model), or JSON {model: URL} |
| `APG_ITEM_MISS` | `missing` | an id the store lacks: `missing` (item features missing, counted) or `error` (400) |
| `APG_ITEM_STORE_TIMEOUT_S` | `0.2` | the longest one Redis call of the item store takes; then 503 |
| `APG_ITEM_STORE_REFRESH_S` | `5` | seconds between checks for a newly published version of the item store |
| `APG_PROVIDERS` | `auto` | `cpu`, `cuda`, or `auto` (CUDA when onnxruntime offers it, else CPU) |
| `APG_CUDA_TF32` | `false` | let CUDA use TF32 matrix products (faster on large batches, scores move by ~1e-4) |
| `APG_INTRA_OP_THREADS` | `1` | onnxruntime intra-op threads per inference (0 = onnxruntime decides) |
| `APG_MAX_ROWS` | `4096` | rows per request; above → 413 |
| `APG_MAX_BODY_BYTES` | `8388608` | request body size; above → 413 |
| `APG_MAX_HEADER_BYTES` | `16384` | request line + header fields, in bytes; above → 431 and the connection closed |
| `APG_MAX_HEADERS` | `100` | header fields per request; above → 431 |
| `APG_BODY_TIMEOUT_S` | `10` | seconds a request body may take to arrive, read before admission; after → 408 |
| `APG_HEAD_TIMEOUT_S` | `10` | seconds a request head may take, from accept and between keep-alive requests |
| `APG_MAX_CONNECTIONS` | unset | open HTTP connections per worker (default 4096, or the open-file limit less 128) |
| `APG_MAX_INFLIGHT_BODY_BYTES` | `67108864` | request-body bytes a worker holds at once; beyond → 503, unread |
| `APG_MAX_CONCURRENCY` | `4` | onnxruntime calls running at once (more wait for a slot) |
| `APG_MAX_QUEUE` | `64` | scoring requests a worker takes beyond MAX_CONCURRENCY, then 503 (service/admission.py) |
| `APG_FEEDBACK_MAX_CONCURRENCY` | `2` | POST /feedback calls on the click store at once (threads of their own) |
| `APG_FEEDBACK_MAX_QUEUE` | `32` | /feedback requests a worker takes beyond those, then 503 (their own admission) |
| `APG_FEEDBACK_TIMEOUT_S` | `2` | the longest a /feedback request waits for the click store; then 503 |
| `APG_FEEDBACK_RETRY_S` | `5` | seconds between attempts to open a click store that could not be (scoring serves) |
| `APG_BATCHING` | `false` | coalesce concurrent requests into one onnxruntime call |
| `APG_BATCH_MAX_ROWS` | `256` | micro-batch size limit (rows) |
| `APG_BATCH_MAX_DELAY_MS` | `2.0` | longest a request waits for others to join its batch |
| `APG_INLINE_MAX_ROWS` | `1024` | CPU calls of at most this many rows run on the event loop, not the pool (0 = never) |
| `APG_DRAIN_GRACE_S` | `5` | after SIGTERM: seconds /readyz says 503 while requests are still served, then shutdown |
| `APG_AUTH_TOKEN` | unset | bearer token for /score and /v2/models/*/infer; health and metrics stay open |
| `APG_ADMIN_TOKEN` | unset | bearer token for /admin/* (never APG_AUTH_TOKEN); unset: /admin/* is off (403) |
| `APG_BUNDLE_ROOT` | unset | where /admin/reload may load bundles (symlinks resolved); default: APG_BUNDLE's parent |
| `APG_GRPC_PORT` | unset | also serve KServe v2 over gRPC on this port (0: any free one); unset: no gRPC |
| `APG_GRPC_HOST` | `127.0.0.1` | the address gRPC binds (`apg serve --grpc-port` sets it to `--host`) |
| `APG_GRPC_MAX_CALLS` | `1000` | gRPC calls in progress per worker; beyond → UNAVAILABLE (counted as 503) |
| `APG_LOG_LEVEL` | `info` | log level of the JSON request log |
| `APG_LOG_FEATURES` | `false` | also log raw feature values (debug only: they may be personal data) |
| `APG_OTEL` | `false` | FastAPI's OpenTelemetry spans, metrics, logs (needs a provider); off saves a check a request |
| `APG_WARMUP_BATCH_SIZES` | `1,8,64,256` | batch sizes run once before the service reports ready (comma list or JSON) |
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APG_", extra="ignore")

    bundle: Path = Path("bundles/default")
    models: Path | None = None  # a model repository; None: serve APG_BUNDLE alone
    default_model: str | None = None
    experiment: str | None = None  # JSON text or a file: service/experiment.py
    shadow: Annotated[list[str], NoDecode] = []
    shadow_queue: int = Field(256, ge=1)
    feedback: str = "auto"
    data_dir: Path = Path("var")
    feedback_max_age_s: float = Field(86_400.0, gt=0)
    feedback_join_window_s: float = Field(3_600.0, gt=0)
    feedback_max_rows: int = Field(1_000_000, ge=1)
    online_window_s: float = Field(3_600.0, gt=0)
    item_store: str | None = None  # service/items: a URL for every model, or JSON {model: URL}
    item_miss: Literal["missing", "error"] = "missing"
    item_store_timeout_s: float = Field(0.2, gt=0)
    item_store_refresh_s: float = Field(5.0, gt=0)
    providers: Literal["cpu", "cuda", "auto"] = "auto"
    cuda_tf32: bool = False
    intra_op_threads: int = Field(1, ge=0)
    max_rows: int = Field(4096, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_header_bytes: int = Field(16 * 1024, ge=1024)
    max_headers: int = Field(100, ge=8)
    body_timeout_s: float = Field(10.0, gt=0)
    head_timeout_s: float = Field(10.0, gt=0)
    max_connections: int | None = Field(None, ge=1)  # None: service/protocol.py connection_cap
    max_inflight_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_concurrency: int = Field(4, ge=1)
    max_queue: int = Field(64, ge=0)
    feedback_max_concurrency: int = Field(2, ge=1)
    feedback_max_queue: int = Field(32, ge=0)
    feedback_timeout_s: float = Field(2.0, gt=0)
    feedback_retry_s: float = Field(5.0, gt=0)
    batching: bool = False
    batch_max_rows: int = Field(256, ge=1)
    batch_max_delay_ms: float = Field(2.0, ge=0.0)
    inline_max_rows: int = Field(1024, ge=0)
    drain_grace_s: float = Field(5.0, ge=0.0)
    auth_token: SecretStr | None = None
    admin_token: SecretStr | None = None  # /admin/*: this token; unset = admin API off
    bundle_root: Path | None = None  # /admin/reload loads only bundles inside it (default: APG_BUNDLE's parent)
    grpc_port: int | None = Field(None, ge=0, le=65535)  # KServe v2 over gRPC (service/grpc); None: off
    grpc_host: str = "127.0.0.1"
    grpc_max_calls: int = Field(1000, ge=1)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_features: bool = False
    otel: bool = False
    warmup_batch_sizes: Annotated[list[int], NoDecode] = [1, 8, 64, 256]

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("warmup_batch_sizes", mode="before")
    @classmethod
    def _int_list(cls, value: object) -> object:
        # "1,8,64" or "[1, 8, 64]" from the environment; a list from Python.
        if isinstance(value, str):
            return [int(v) for v in value.strip("[] ").split(",") if v.strip()]
        return value

    @field_validator("shadow", mode="before")
    @classmethod
    def _name_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("max_connections", mode="before")
    @classmethod
    def _unset_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("item_store")
    @classmethod
    def _item_store(cls, value: str | None) -> str | None:
        if value is not None:
            _item_store_urls(value)  # ValueError: malformed JSON, or a URL of another scheme
        return value

    @field_validator("models", "default_model", "experiment", "item_store", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("warmup_batch_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError("warm-up batch sizes must be >= 1")
        return value

    @field_validator("auth_token", "admin_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value == "" else value

    def token(self) -> str | None:
        return self.auth_token.get_secret_value() if self.auth_token else None

    def admin(self) -> str | None:
        """The bearer token of /admin/*: APG_ADMIN_TOKEN, else None (admin API off). Never APG_AUTH_TOKEN:
        a scoring client must not be able to swap the model."""
        return self.admin_token.get_secret_value() if self.admin_token else None

    def body_budget(self) -> int:
        """Request-body bytes a worker holds at once: APG_MAX_INFLIGHT_BODY_BYTES, but never less than one body of
        APG_MAX_BODY_BYTES (a body the size limit allows must be able to get in)."""
        return max(self.max_inflight_body_bytes, self.max_body_bytes)

    def bundles(self) -> Path:
        """The directory /admin/reload may load bundles from: APG_BUNDLE_ROOT, else the model repository, else the
        configured bundle's parent."""
        default = self.models.absolute() if self.models is not None else self.bundle.absolute().parent
        return (self.bundle_root or default).resolve()

    def item_store_url(self, model: str) -> str | None:
        """The item store of served model `model`: APG_ITEM_STORE's URL, or its entry for `model` when it is a JSON
        object (None: that model has none)."""
        if self.item_store is None:
            return None
        urls = _item_store_urls(self.item_store)
        return urls if isinstance(urls, str) else urls.get(model)

    def feedback_url(self) -> str | None:
        """The feedback store's URL, or None when off (APG_FEEDBACK=auto: SQLite with an experiment, else off)."""
        if self.feedback == "off" or (self.feedback == "auto" and self.experiment is None):
            return None
        if self.feedback == "auto":
            return f"sqlite://{(self.data_dir / 'feedback.db').absolute()}"  # sqlite:// + /abs/path
        return self.feedback


ITEM_STORE_SCHEMES = ("file://", "redis://", "rediss://", "unix://")


def _item_store_urls(value: str) -> str | dict[str, str]:
    """APG_ITEM_STORE read: one URL, or {model: URL}. ValueError when it is neither."""
    urls = value
    if value.lstrip().startswith("{"):
        try:
            urls = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"APG_ITEM_STORE: malformed JSON: {exc}") from None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in urls.items()):
            raise ValueError('APG_ITEM_STORE: a JSON object maps model names to URLs: {"deepfm": "file://items"}')
    for url in [urls] if isinstance(urls, str) else urls.values():
        if not url.startswith(ITEM_STORE_SCHEMES):
            raise ValueError(f"APG_ITEM_STORE: {url.partition('://')[0]!r} stores are not known: use file://DIR or "
                             "redis://host:port/db")  # fmt: skip
    return urls
