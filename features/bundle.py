"""The bundle format's constants and checksum (docs/BUNDLE.md): what model/bundle.py writes and service/bundle.py reads.

FORMAT_VERSION, MANIFEST, GRAPH       # 2, "bundle.json", "model.onnx"; READABLE_VERSIONS (1, 2)
file_entry(path)                      # {"sha256": ..., "bytes": ...}, as the manifest lists each file
schema, name = read_schema(path)      # a bundle dir, its bundle.json, or a bare schema.json (the load tester)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from features.schema import Schema

FORMAT_VERSION = 2  # 2: fields may be hashed (`hash_buckets`, rule 6); a version-1 bundle is a version 2 without them
READABLE_VERSIONS = (1, 2)
MANIFEST = "bundle.json"
GRAPH = "model.onnx"
OPTIMISED_GRAPH = "model.opt.onnx"  # onnxruntime's offline basic optimisations (optional)
QUANTISED_GRAPH = "model.int8.onnx"  # dynamic int8 weights (optional)
OUTPUT_SPECS = [{"name": "score", "dtype": "float32", "shape": [-1]}]


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_of(path), "bytes": path.stat().st_size}


def read_schema(path: str | Path) -> tuple[Schema, str | None]:
    """(fitted schema, model name) from a bundle directory, its bundle.json, or a bare schema.json. No checksum is
    verified: this is for tools that only need to know what rows look like (service/bundle.py verifies)."""
    p = Path(path)
    p = p / MANIFEST if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"no bundle at {path} (need a bundle directory or its {MANIFEST}; see docs/BUNDLE.md)")
    doc = json.loads(p.read_bytes())
    if not isinstance(doc, dict):
        raise ValueError(f"{p} holds no feature schema")
    schema = doc.get("schema", doc)
    if not isinstance(schema, dict) or not isinstance(schema.get("fields"), list):
        raise ValueError(f"{p} holds no feature schema ('schema.fields')")
    return Schema.from_dict(schema), (doc.get("model") or {}).get("name")
