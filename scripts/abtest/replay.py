"""The replay: each request POSTed to /score in turn (closed loop, one in flight), then its true labels to /feedback.

    result = replay(httpx.Client(base_url=url), requests, feedback_delay=0.2)
    result.answers      # what each arm answered: arm, model, version, request id, scores, labels, latency
    result.feedback     # the service's feedback outcomes summed: {"accepted": ..., "duplicate": ..., ...}

The client sets X-Request-ID; the answer's `request_id` (else its x-request-id header) is what the feedback names,
so the join uses the service's id. Labels are posted `feedback_delay` seconds after their answer (clicks come
later than impressions; several workers or replicas each write what they scored within their flush interval), in
batches of up to `feedback_batch` items. Latency is the /score round trip as the client saw it.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson
from tqdm import tqdm

from scripts.abtest.traffic import Request


@dataclass(frozen=True)
class Answer:
    request: int  # index of the replayed request
    user: str
    at: float  # the data's timestamp of the request's first row
    arm: str
    model: str
    version: str
    request_id: str
    scores: np.ndarray  # (rows,)
    labels: np.ndarray  # (rows,) bool
    latency_s: float


@dataclass
class Replay:
    run_id: str
    answers: list[Answer] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)  # /score requests without a usable answer, by reason
    feedback: Counter = field(default_factory=Counter)  # the service's outcomes, plus "error" for failed posts
    feedback_errors: Counter = field(default_factory=Counter)  # failed POST /feedback, by reason


class BadAnswer(ValueError):
    """A /score answer that breaks the response contract, or an error status."""


def replay(
    client: httpx.Client,
    requests: list[Request],
    feedback_delay: float = 0.2,
    feedback_batch: int = 500,
    progress: bool = True,
) -> Replay:
    result = Replay(run_id=uuid.uuid4().hex[:8])
    pending: deque[tuple[float, list[dict]]] = deque()  # (due, feedback items), in due order
    bar = tqdm(requests, desc="abtest", unit="req", disable=not (progress and sys.stderr.isatty()))  # (a log: no bar)
    for k, req in enumerate(bar):
        sent_id = f"abtest-{result.run_id}-{k}"
        body = orjson.dumps({"instances": req.rows})
        t0 = time.perf_counter()
        try:
            response = client.post("/score", content=body, headers={"x-request-id": sent_id})
            latency = time.perf_counter() - t0
            answer = read_answer(k, req, response, sent_id, latency)
        except (httpx.HTTPError, BadAnswer) as exc:
            result.failures[_reason(exc)] += 1
            continue
        result.answers.append(answer)
        items = [{"request_id": answer.request_id, "row": i, "clicked": bool(y)} for i, y in enumerate(req.labels)]
        pending.append((time.monotonic() + feedback_delay, items))
        _post_due(client, pending, feedback_batch, result, time.monotonic())
    if pending:
        time.sleep(max(0.0, pending[-1][0] - time.monotonic()))
    _post_due(client, pending, feedback_batch, result, float("inf"))
    return result


def read_answer(k: int, req: Request, response: httpx.Response, sent_id: str, latency: float) -> Answer:
    """The contract: {"scores": [...], "model": {"name", "version"}, "arm": str, "request_id": str}; an answer
    without an arm is the model's own arm."""
    if response.status_code != 200:
        raise BadAnswer(f"status {response.status_code}")
    try:
        body = orjson.loads(response.content)
        scores = np.asarray(body["scores"], dtype=np.float64)
        model = body.get("model") or {}
        name, version = str(model.get("name", "")), str(model.get("version", ""))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadAnswer("answer not as documented") from exc
    if scores.shape != (len(req.rows),):
        raise BadAnswer("wrong number of scores")
    arm = str(body.get("arm") or name or "default")
    request_id = str(body.get("request_id") or response.headers.get("x-request-id") or sent_id)
    return Answer(k, req.user, req.at, arm, name, version, request_id, scores, req.labels, latency)


def _post_due(client: httpx.Client, pending: deque, batch: int, result: Replay, now: float) -> None:
    items: list[dict] = []
    while pending and pending[0][0] <= now:
        items += pending.popleft()[1]
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        try:
            response = client.post("/feedback", content=orjson.dumps({"feedback": chunk}))
            if response.status_code != 200:
                raise BadAnswer(f"status {response.status_code}")
            result.feedback.update(orjson.loads(response.content)["counts"])
        except (httpx.HTTPError, BadAnswer, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            result.feedback["error"] += len(chunk)
            result.feedback_errors[_reason(exc)] += 1


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, BadAnswer) else type(exc).__name__
