"""The Open Inference Protocol (KServe v2) as this service speaks it, once for both adapters: service/routes/v2.py
(HTTP/JSON) and service/grpc/ (gRPC/protobuf) turn these bodies and rules into their own wire format.

    server_metadata_body()                      # GET /v2, ServerMetadata
    metadata_body(model)                        # GET /v2/models/{name}, ModelMetadata: one input per raw feature
    model = find_model(app, name, version)      # 404 naming the served ones, 503 while loading
    await server_ready(app); await model_ready(app, name, version)   # raise NotReady / ItemStoreMismatch when not
    columns, rows = decode(app, model, header, blobs)   # the request's tensors → raw feature columns (tensors.py)
    check_output(name); check_output_parameters(parameters)   # one output, `score`; no classification

`app` is the app's Services (service/services.py: settings, runtime, items, ...).
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

from service.errors import BadRequest, shown
from service.tensors import decode_inputs

if TYPE_CHECKING:
    from service.services import Services

OUTPUT = "score"  # the one output: a click probability per row
OUTPUT_DATATYPE = "FP32"
PLATFORM = "onnxruntime_onnx"


def server_metadata_body() -> dict[str, Any]:
    """The v2 server metadata."""
    try:
        version = metadata.version("apg-ctr")
    except metadata.PackageNotFoundError:
        version = "0"
    return {"name": "apg-ctr", "version": version, "extensions": ["binary_tensor_data"]}


def metadata_body(model: Any) -> dict[str, Any]:
    """A model's v2 metadata: one input per raw feature (BYTES, FP64 if numeric; [-1, -1] if multi-valued)."""
    inputs = [
        {"name": f.name, "datatype": "FP64" if f.numeric else "BYTES", "shape": [-1, -1] if f.multi else [-1]}
        for f in model.encoder.describe().values()
    ]
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": [{"name": OUTPUT, "datatype": OUTPUT_DATATYPE, "shape": [-1]}],
    }


def find_model(app: Services, name: str, version: str | None = None) -> Any:
    """The served model `name` (and `version` when given, not empty): NotFound names the served ones; NotReady while
    loading."""
    return app.runtime.get(name, version or None)


async def server_ready(app: Services) -> None:
    """Returns when the server is ready: the default model loaded and warm (NotReady while loading or draining), and
    its item store holding rows for its contract (ItemStoreMismatch naming the sync to run)."""
    model = app.runtime.readiness()
    if app.items is not None:
        await app.items.ready(model)


async def model_ready(app: Services, name: str, version: str | None = None) -> Any:
    """The model, once it is ready (find_model's errors; ItemStoreMismatch when its item store has no rows for it)."""
    model = find_model(app, name, version)
    if app.items is not None:
        await app.items.ready(model)
    return model


def decode(app: Services, model: Any, header: Any, blobs: bytes) -> tuple[dict[str, list], int]:
    """(raw feature columns, rows) of a request's input tensors, as the JSON header of the HTTP route and its binary
    data (service/tensors.py): at most APG_MAX_ROWS rows, the model's text features as BYTES."""
    return decode_inputs(header, blobs, app.settings.max_rows, model.text_features)


def check_output(name: Any) -> None:
    """A requested output is `score`, the only one (BadRequest naming the one asked for)."""
    if name != OUTPUT:
        raise BadRequest(f"unknown output {shown(name)}; this model has one output: {OUTPUT!r}", field="outputs")


def check_output_parameters(parameters: Any) -> None:
    """A requested output's parameters (a mapping) ask for no extension this service lacks."""
    if "classification" in parameters:
        raise BadRequest("the classification extension is not supported", field="outputs")
