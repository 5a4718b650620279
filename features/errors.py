"""Typed errors of the feature contract. Each carries its HTTP status, so the service maps them to responses in one
place (service/errors.py) without the encoder knowing HTTP exists; stdlib only.

    raise UnknownFeature("unknown feature 'agee'", field="agee", row=3)   # → 400 {"error": {"code": ...}}
"""

from __future__ import annotations


class ContractError(Exception):
    """Base class: `status` is the HTTP status, `code` a stable machine-readable name."""

    status = 500
    code = "internal"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        row: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.row = row
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "field": self.field, "row": self.row}}


class BadRequest(ContractError):
    status, code = 400, "bad_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidShape(BadRequest):
    """The JSON parsed, but its top-level structure is not one the route accepts."""

    code = "invalid_shape"


class FeatureError(BadRequest):
    """A feature value could not be encoded; `field` names the feature and `row` the row."""

    code = "invalid_feature"


class UnknownFeature(FeatureError):
    code = "unknown_feature"


class MissingFeature(FeatureError):
    code = "missing_feature"


class InvalidType(FeatureError):
    code = "invalid_type"


class NonFinite(FeatureError):
    code = "non_finite"


class OutOfRange(FeatureError):
    code = "out_of_range"


class RaggedColumns(FeatureError):
    code = "ragged_columns"


class EmptyBatch(FeatureError):
    code = "empty_batch"


class BundleError(ContractError):
    """A bundle that cannot be served (docs/BUNDLE.md, loading rules). 422 when an admin asked for it."""

    status, code = 422, "invalid_bundle"


class SchemaError(BundleError, ValueError):
    """A malformed feature schema (a spec a user wrote, or the fitted schema inside a bundle)."""
