"""Our exact ML-1M split in FuxiCTR's input format, for the reference-parity runs (scripts/experiments/reference.py).

Each split (train, valid, test: the study's rows, split seed 0) becomes one CSV whose columns are our *encoded*
indices: every field, categorical or bucketised numeric, as a categorical column of index strings, and a multi-valued
field as a sequence column of its non-padding indices joined by ``SEQ_SEP``. So both libraries see the same
information row for row: FuxiCTR re-indexes the strings (its own vocabulary from the training rows, every value
kept), an index our fit never saw in training (the OOV row) stays a value FuxiCTR never saw in training either.
``check`` reads the files back and compares them, value by value, with the encoded split they were written from.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from features import MISSING, Schema, sha256_of

SPLITS = ("train", "valid", "test")
LABEL = "label"
SEQ_SEP = "^"
MANIFEST = "export.json"


def columns(schema: Schema) -> list[str]:
    return [LABEL, *(f.name for f in schema.fields)]


def cell(values: np.ndarray) -> str:
    """One encoded value as FuxiCTR reads it: an index, or a multi-valued field's indices without the padding."""
    if values.ndim == 0:
        return str(int(values))
    return SEQ_SEP.join(str(int(v)) for v in values if v != MISSING)


def parse(text: str, width: int) -> np.ndarray:
    """``cell`` backwards: the index, or the indices padded with MISSING to the field's width."""
    if not width:
        return np.int64(int(text))
    values = [int(v) for v in text.split(SEQ_SEP) if v != ""]
    return np.array(values + [MISSING] * (width - len(values)), dtype=np.int64)


def export(data, out: Path) -> dict:
    """Write ``data`` (a model.data.Dataset) as out/{train,valid,test}.csv and a manifest (rows, sha256 per file,
    the schema's digest); returns the manifest. Unchanged data is not written twice."""
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    want = {"schema_sha256": data.schema.digest(), "rows": {s: len(data.splits[s]) for s in SPLITS}}
    if manifest_path.exists():
        have = json.loads(manifest_path.read_text())
        if {k: have.get(k) for k in want} == want and all((out / f"{s}.csv").exists() for s in SPLITS):
            return have
    names = columns(data.schema)
    files = {}
    for split in SPLITS:
        x, y = data.part(split)
        path = out / f"{split}.csv"
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(names)
            for i in range(len(y)):
                w.writerow([int(y[i]), *(cell(x[name][i]) for name in names[1:])])
        tmp.replace(path)
        files[split] = sha256_of(path)
    manifest = {**want, "files": files, "seq_sep": SEQ_SEP, "label": LABEL}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def check(data, out: Path) -> int:
    """Every exported value equals the encoded split's (same rows in the same order, same labels): the number of
    rows compared. ValueError naming the split, row and column of the first difference."""
    names = columns(data.schema)
    widths = {f.name: f.width for f in data.schema.fields}
    compared = 0
    for split in SPLITS:
        x, y = data.part(split)
        with (out / f"{split}.csv").open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            if header != names:
                raise ValueError(f"{out / split}.csv: columns {header}, expected {names}")
            n = 0
            for n, row in enumerate(reader, 1):
                i = n - 1
                if i >= len(y) or int(row[0]) != int(y[i]):
                    raise ValueError(f"{split}.csv row {n}: label {row[0]}, the encoded split has another row")
                for name, text in zip(names[1:], row[1:], strict=True):
                    if not np.array_equal(parse(text, widths[name]), x[name][i]):
                        raise ValueError(f"{split}.csv row {n} column {name}: {text!r} != {x[name][i]}")
            if n != len(y):
                raise ValueError(f"{split}.csv has {n} rows, the encoded {split} split {len(y)}")
        compared += n
    return compared


def dataset_config(schema: Schema, out: Path, dataset_id: str, data_root: Path) -> dict:
    """FuxiCTR's dataset config for the export (its dataset_config.yaml entry): every field a categorical column
    (a multi-valued one a sequence of at most its width), the label, CSV input; every training value kept
    (min_categr_count 1). FuxiCTR builds its own data under data_root/dataset_id."""
    cols = []
    for f in schema.fields:
        if f.width:
            cols.append(
                {
                    "name": f.name,
                    "active": True,
                    "dtype": "str",
                    "type": "sequence",
                    "splitter": SEQ_SEP,
                    "max_len": f.width,
                    "padding": "post",
                }
            )
        else:
            cols.append({"name": f.name, "active": True, "dtype": "str", "type": "categorical"})
    return {
        dataset_id: {
            "data_root": str(data_root),
            "data_format": "csv",
            "train_data": str(out / "train.csv"),
            "valid_data": str(out / "valid.csv"),
            "test_data": str(out / "test.csv"),
            "min_categr_count": 1,
            "feature_cols": cols,
            "label_col": {"name": LABEL, "dtype": "float"},
        }
    }
