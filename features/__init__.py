"""The feature contract, shared by both halves and the load tester: stdlib + numpy only (never torch, never fastapi).

schema.py    Field, Schema and their validation; reserved indices MISSING/OOV/FIRST; input_specs
rules.py     the encoding rules of docs/BUNDLE.md, one function each (normalise, number, multi values, prefix, id hash)
encoder.py   Encoder(schema, policy): raw values → int64 arrays (STRICT for requests, LENIENT for training data)
bundle.py    the bundle format's constants, checksums, and a schema reader for tools
sampler.py   RowSampler: realistic raw rows from a schema (warm-up, examples, load tests, tests)
errors.py    typed errors that carry their HTTP status
fit.py       SchemaFit: vocabularies and derived mappings from value counts, added a chunk at a time
metrics.py   AUC, logloss, gAUC, calibration: one definition offline and online
tables.py    read_table: a CSV/TSV or Parquet file as raw columns (CSV cells stay strings)
"""

from features.bundle import (
    FORMAT_VERSION,
    GRAPH,
    MANIFEST,
    OUTPUT_SPECS,
    READABLE_VERSIONS,
    file_entry,
    read_schema,
    sha256_of,
)
from features.encoder import LENIENT, STRICT, Encoder, FeatureInfo
from features.errors import BundleError, ContractError, FeatureError, SchemaError
from features.rules import normalise, number
from features.sampler import RowSampler, example_rows
from features.schema import FIRST, KINDS, MISSING, OOV, Field, Schema, input_specs

__all__ = [
    "FIRST",
    "FORMAT_VERSION",
    "GRAPH",
    "KINDS",
    "LENIENT",
    "MANIFEST",
    "MISSING",
    "OOV",
    "OUTPUT_SPECS",
    "READABLE_VERSIONS",
    "STRICT",
    "BundleError",
    "ContractError",
    "Encoder",
    "FeatureError",
    "FeatureInfo",
    "Field",
    "RowSampler",
    "Schema",
    "SchemaError",
    "example_rows",
    "file_entry",
    "input_specs",
    "normalise",
    "number",
    "read_schema",
    "sha256_of",
]
