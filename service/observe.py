"""What every request leaves behind, HTTP (service/middleware.py) and gRPC (service/grpc/server.py) alike: its request
id, the in-flight gauge, the request and per-model metrics, and one JSON access line.

    request_id, given = request_id_of(value)   # the client's X-Request-ID (or metadata) when sane, else a new one
    start = arrived(metrics, counted)           # the in-flight gauge up (unless a probe or a scrape)
    ...                                         # the request, its facts in a dict `state` (below)
    answered(metrics, start, counted, route, status, state, quiet, who)   # gauge down, metrics, access line

`state` holds what the request learnt: request_id, and where they apply rows, model and arm (a scoring request),
error_code and error_field (a refused one: service/errors.py `render` for HTTP), features (APG_LOG_FEATURES only).
`who` is the protocol's own part of the line: {"method": "POST"} for HTTP, {"protocol": "grpc", "model": ...} for
gRPC. The stages of a scoring request are timed by `Metrics.timed` (service/metrics.py), beside the scorer.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from service.metrics import Metrics

log = logging.getLogger("apg.access")
REQUEST_ID = "x-request-id"  # the header (HTTP) and the metadata key (gRPC), both ways
MAX_ID_LENGTH = 128  # characters of a request id the service echoes (and of ids, arms and models in feedback)


def valid_id(value: str) -> bool:
    """1 to MAX_ID_LENGTH visible ASCII characters: a client's request id the service echoes (else it makes one)."""
    return 0 < len(value) <= MAX_ID_LENGTH and value.isascii() and value.isprintable() and " " not in value


def request_id_of(given: str | None) -> tuple[str, bool]:
    """(the request's id, whether the client gave it): the client's id when `valid_id`, else a new uuid."""
    if given is not None and valid_id(given):
        return given, True
    return uuid.uuid4().hex, False


def arrived(metrics: Metrics, counted: bool) -> float:
    """A request begins: its start time; the in-flight gauge counts it when `counted` (a scrape must not count itself
    in flight, nor a probe)."""
    if counted:
        metrics.inflight.inc()
    return time.perf_counter()


def answered(
    metrics: Metrics,
    start: float,
    counted: bool,
    route: str,
    status: int,
    state: dict[str, Any],
    quiet: bool,
    who: dict[str, Any],
) -> None:
    """A request is over: the gauge down, apg_requests_total and apg_request_duration_seconds by `route` (its template,
    or the RPC's method) and `status` (for gRPC the HTTP status of the same outcome), the per-model metrics when it
    chose a model, and its access line (at debug level for a `quiet` route's success: probes)."""
    if counted:
        metrics.inflight.dec()
    elapsed = time.perf_counter() - start
    metrics.request_duration.labels(route).observe(elapsed)
    metrics.requests.labels(route, str(status)).inc()
    if "model" in state:  # a scoring request chose its model (service/routes/score.py, v2.py, grpc/server.py)
        metrics.observe_model_request(state["model"], state.get("arm"), status, elapsed)
    level = logging.DEBUG if quiet and status < 400 else logging.INFO
    if not log.isEnabledFor(level):
        return
    fields = {
        "request_id": state.get("request_id"),
        **who,
        "route": route,
        "status": status,
        "rows": state.get("rows"),
        "duration_s": round(elapsed, 6),
    }
    if "error_code" in state:  # a refused request: which error, and the feature it names (clipped, never a value)
        from service.errors import clipped  # (here: service.feedback reads `valid_id` without the web framework)

        field = state.get("error_field")
        fields["error"], fields["field"] = state["error_code"], clipped(field, 64) if isinstance(field, str) else None
    if "features" in state:  # only with APG_LOG_FEATURES=true
        fields["features"] = state["features"]
    access_line(level, fields)


def access_line(level: int, fields: dict[str, Any]) -> None:
    """Log one access record: "request" with `fields`, on the apg.access logger."""
    handler = _sole_handler()
    if handler is None:  # someone attached their own handlers: go through logging as usual
        log.log(level, "request", extra={"fields": fields})
        return
    # The service's own JSON handler is the only one: write the line it would write, without a LogRecord.
    # Through logging this cost ~34 µs a request in the running service, a seventh of all its work at batch 1
    # (docs/OPTIMISATIONS.md); the line and its flush are the same.
    line = {"ts": round(time.time(), 6), "level": logging.getLevelName(level).lower(), "logger": log.name}
    line.update(msg="request", **fields)
    text = orjson.dumps(line, default=str).decode() + "\n"
    try:
        with handler.lock:
            handler.stream.write(text)
            handler.stream.flush()
    except Exception:  # a closed or broken stream: logging's own error handling decides, as for any record
        log.log(level, "request", extra={"fields": fields})


def _sole_handler() -> logging.StreamHandler | None:
    """configure_logging's handler when it is the only one an access record would reach, else None."""
    if log.handlers or not log.propagate:
        return None
    parent = log.parent
    handlers = parent.handlers if parent is not None and parent.name == "apg" else ()
    if len(handlers) != 1 or not getattr(handlers[0], "_apg", False) or parent.propagate:
        return None
    handler = handlers[0]
    plain = type(handler.formatter) is JsonFormatter and handler.level <= logging.DEBUG
    return handler if plain and not handler.filters and not log.filters and not parent.filters else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the `apg` loggers (idempotent: one handler however many apps are built)."""
    logger = logging.getLogger("apg")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_apg", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        handler._apg = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
