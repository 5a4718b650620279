"""Service configuration: one typed object, read from `APG_*` environment variables.

Each field is the variable `APG_<FIELD>` (`max_rows` is `APG_MAX_ROWS`), and its `description` is its documentation:
docs/CONFIGURATION.md is generated from these fields, in their groups (`python -m scripts.docs`; a test fails when
the two differ). A list is a comma list; an empty value of a variable that may be unset is unset. Every variable is
read and checked once, before any worker starts (exit 2 with one line naming each wrong variable). `apg serve`'s
`--bundle`, `--models`, `--default-model`, `--experiment`, `--shadow`, `--item-store`, `--grpc-port` and
`--log-level` set the variables of the same names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """What one `apg serve` process serves and how; every worker reads the same variables."""

    model_config = SettingsConfigDict(env_prefix="APG_", extra="ignore")

    # What is served
    bundle: Path = Field(
        Path("bundles/default"), description="The bundle directory to serve (one model; `APG_MODELS` serves several)."
    )
    models: Path | None = Field(
        None,
        description="A model repository: every bundle in this directory (one sub-directory each) is served under its "
        "directory's name. Unset: `APG_BUNDLE` alone.",
    )
    default_model: str | None = Field(
        None,
        description="With `APG_MODELS`: the model of requests that name none, and of `/readyz`. Unset: the first name.",
    )
    experiment: str | None = Field(
        None,
        description='A sticky two-arm split, JSON or the path of a JSON file: `{"name", "control", "treatment", '
        '"share", "key"}` (service/experiment.py). Unset: no experiment.',
    )
    shadow: Annotated[list[str], NoDecode] = Field(
        [], description="Models (a comma list) that also score every scored request, off the answer's path."
    )
    shadow_queue: int = Field(
        256,
        ge=1,
        description="Shadow requests waiting at most; beyond, dropped and counted (`apg_shadow_requests_total`).",
    )
    # The click store (service/feedback)
    feedback: str = Field(
        "auto",
        description="The click store: `sqlite:///path/feedback.db`, `redis://host:6379/0` or `off`; `auto`: SQLite in "
        "`APG_DATA_DIR` while an experiment runs, off otherwise.",
    )
    data_dir: Path = Field(
        Path("var"),
        description="The service's own files (the SQLite feedback store); `/var/lib/apg`, a volume, in the images. It "
        "must be writable, or `/feedback` answers 503 while scoring goes on.",
    )
    feedback_max_age_s: float = Field(
        86_400.0,
        gt=0,
        description="Scored rows are kept this long for feedback to join; older ones are forgotten (their feedback: "
        "`unknown`).",
    )
    feedback_join_window_s: float = Field(
        3_600.0, gt=0, description="Feedback later than this after its score is answered `late` and not counted."
    )
    feedback_max_rows: int = Field(
        1_000_000, ge=1, description="Scored rows kept at most; beyond, the oldest requests are forgotten."
    )
    online_window_s: float = Field(
        3_600.0,
        gt=0,
        description="The sliding window of the `apg_online_*` gauges (per arm: impressions, CTR, calibration, AUC, "
        "logloss).",
    )
    # Ranking by id (service/items)
    item_store: str | None = Field(
        None,
        description="Ranking by id (`apg serve --item-store`): the item store `apg items sync` filled, `file://DIR` or "
        "`redis://host:port/db`, read by every model for its own contract checksum; or a JSON object "
        '`{"model": "URL"}` per model of a repository. Checked at start: `apg serve` exits 2 naming the sync to run '
        "when it holds no rows for a served bundle.",
    )
    item_miss: Literal["missing", "error"] = Field(
        "missing",
        description="A candidate id the store does not hold: `missing` scores it with its item features missing "
        "(counted in `apg_item_store_misses_total`); `error` refuses the request, 400 `unknown_items` naming the ids.",
    )
    item_store_timeout_s: float = Field(
        0.2,
        gt=0,
        description="The longest one Redis call of the item store may take (socket and connect); then 503 "
        "`item_store_unavailable` with `Retry-After: 1` for the requests that need the store.",
    )
    item_store_refresh_s: float = Field(
        5.0,
        gt=0,
        description="Each worker follows a newly published store version within this many seconds (a store that "
        "could not be opened is tried again every second).",
    )
    # onnxruntime
    providers: Literal["cpu", "cuda", "auto"] = Field(
        "auto",
        description="Execution provider: `auto` is CUDA when onnxruntime offers it, else CPU (logged, and in "
        "`apg_model_info`).",
    )
    cuda_tf32: bool = Field(
        False,
        description="Let CUDA use TF32 matrix products: scores moved by up to 6.6e-4 on an H200, no faster for this "
        "model (docs/GPU.md).",
    )
    intra_op_threads: int = Field(
        1, ge=0, description="onnxruntime intra-op threads per inference (0: onnxruntime decides)."
    )
    # Request limits
    max_rows: int = Field(4096, ge=1, description="Rows per request; more is a 413.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Body size limit (Content-Length and streamed size); more is a 413 and the connection is closed. "
        "Up to 64 MiB of a refused body is read and dropped first, so that clients which send the whole body before "
        "reading (urllib, `http.client`) get the 413 rather than a connection reset; a larger declared body is "
        "refused at once.",
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Request line + header fields, in bytes; more is a 431 and the connection is closed, checked as "
        "the bytes arrive (httptools itself has no limit).",
    )
    max_headers: int = Field(100, ge=8, description="Header fields per request; more is a 431.")
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a request body may take to arrive (it is read before admission); then 408 and the "
        "connection is closed.",
    )
    head_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a request head may take to arrive, from the accept and from the previous answer on a "
        "keep-alive connection; then the connection is closed (408 when part of a head came).",
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description="Open HTTP connections per worker (unset: 4096, or the open-file limit less 128; "
        "service/protocol.py); one more closes the connection waiting longest for a request head, or itself when "
        "every connection is in a request (`apg_connections_closed_total{reason}`).",
    )
    max_inflight_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Request-body bytes a worker holds at once (at least one `APG_MAX_BODY_BYTES` body); a body that "
        "would go past it is a 503 `overloaded` with `Retry-After: 1`, refused before it is read.",
    )
    # Admission (service/admission.py: the one back-pressure rule)
    max_concurrency: int = Field(4, ge=1, description="Inferences running at once; more wait for a slot.")
    max_queue: int = Field(
        64,
        ge=0,
        description="Scoring requests a worker takes beyond `APG_MAX_CONCURRENCY`; with both full the next one is a "
        "503 `overloaded` with `Retry-After: 1` (counted as soon as its body is in, so inline inference cannot hide a "
        "backlog). With micro-batching it also bounds a batch of one-row requests: raise it with "
        "`APG_BATCH_MAX_ROWS`.",
    )
    feedback_max_concurrency: int = Field(
        2, ge=1, description="`POST /feedback` calls on the click store at once, on threads of their own."
    )
    feedback_max_queue: int = Field(
        32,
        ge=0,
        description="`/feedback` requests a worker takes beyond those; then 503 `overloaded` (never scoring's places).",
    )
    feedback_timeout_s: float = Field(
        2.0,
        gt=0,
        description="The longest a `/feedback` request waits for the click store (lock, socket, write buffer); then "
        "503 `feedback_unavailable`.",
    )
    feedback_retry_s: float = Field(
        5.0,
        gt=0,
        description="While the click store cannot be opened: seconds between attempts (scoring serves; `/feedback` "
        "is a 503 with this `Retry-After`).",
    )
    # Micro-batching, the event loop, shutdown
    batching: bool = Field(
        False,
        description="Micro-batching: concurrent requests coalesced into one onnxruntime call. Leave it off on CPU: "
        "with this model it does not raise the batch-1 knee (1,600 requests/s with and without, docs/PERFORMANCE.md) "
        "and adds its collection delay to every request, because parsing and encoding, not the model, limit a CPU "
        "worker; it is meant for accelerators, where a call costs the same at 1 and 1,000 rows: on an H200 it "
        "doubled the batch-1 knee with inline CUDA calls (400 → 800 requests/s) and made no difference once CUDA "
        "calls moved to the pool (800 both; docs/GPU.md). Never mixes models in one call.",
    )
    batch_max_rows: int = Field(256, ge=1, description="The largest micro-batch, in rows.")
    batch_max_delay_ms: float = Field(
        2.0, ge=0.0, description="The longest a request waits for its micro-batch to fill."
    )
    inline_max_rows: int = Field(
        1024,
        ge=0,
        description="Inference calls of at most this many rows run on the event loop instead of the thread pool "
        "(saves the hand-off, −25 % latency at batch 64; docs/OPTIMISATIONS.md); larger calls, and every CUDA call "
        "(2× the batch-1 knee on an H200, docs/GPU.md), go to the pool; 0: always the pool.",
    )
    drain_grace_s: float = Field(
        5.0,
        ge=0.0,
        description="After SIGTERM, seconds during which `/readyz` (and `/v2/health/ready`) answer 503 while every "
        "request is still served, so load balancers stop sending first; then the graceful shutdown (in-flight "
        "requests finish, up to 30 s). A second SIGTERM skips the rest of the grace.",
    )
    # Access
    auth_token: SecretStr | None = Field(
        None,
        description="Bearer token for `/score`, `/v2/models/*/infer` and gRPC ModelInfer (health and metrics stay "
        "open; it never opens `/admin/*`). Unset: no token asked.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token for `/admin/*`, its own so that scoring clients cannot swap the model. Unset: the "
        "admin API is off (403) and only SIGHUP reloads.",
    )
    bundle_root: Path | None = Field(
        None,
        description="`/admin/reload` loads bundles only from inside this directory (symlinks resolved); any other "
        "path is a 403 that says nothing about whether it exists, and a symlinked `bundle.json` is refused. Unset: "
        "`APG_MODELS`, else the parent of `APG_BUNDLE`.",
    )
    # gRPC (service/grpc)
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Also serve KServe v2 over gRPC on this port (`apg serve --grpc-port`; 0: any free one). Unset: "
        "no gRPC.",
    )
    grpc_host: str = Field(
        "127.0.0.1", description="The address gRPC binds (`apg serve --grpc-port` sets it to `--host`)."
    )
    grpc_max_calls: int = Field(
        1000,
        ge=1,
        description="gRPC calls in progress per worker; one more is `UNAVAILABLE` (counted as a 503; probes never).",
    )
    # Logs, tracing, start-up
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="Level of the JSON log (any case)."
    )
    log_features: bool = Field(
        False,
        description="Also log raw feature values (debug only: they may be personal data). Off, a request's log line "
        "carries its request id, route, status, rows and duration.",
    )
    otel: bool = Field(
        False,
        description="FastAPI's built-in OpenTelemetry spans, metrics and logs (needs a configured provider); off, it "
        "costs nothing per request.",
    )
    warmup_batch_sizes: Annotated[list[int], NoDecode] = Field(
        [1, 8, 64, 256], description="Batch sizes run once before readiness turns green (each at least 1)."
    )

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
            raise ValueError(
                f"APG_ITEM_STORE: {url.partition('://')[0]!r} stores are not known: use file://DIR or "
                "redis://host:port/db"
            )
    return urls
