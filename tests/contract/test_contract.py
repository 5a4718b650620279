"""Both halves against one real bundle: no train/serve skew, score parity, refusal of bad bundles, the boundary."""

import pytest

pytest.importorskip("torch")  # training-side tests: skipped where torch is absent (a serving-only install)

import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort

from features import Schema
from model.data import encode_table
from model.evaluate import predict
from model.train import load_run
from service.bundle import BundleError, load_bundle


def typed_rows(table: dict[str, list], schema: Schema, rows: range) -> list[dict]:
    """Raw table rows as a client would send them: numbers for numeric sources, strings for the rest."""
    numeric = {f.source for f in schema.fields if f.kind == "numeric"}
    return [{s: (int(table[s][i]) if s in numeric else table[s][i]) for s in schema.sources} for i in rows]


@pytest.fixture(scope="module")
def real_rows(bundle_dir, ml100k_small):
    schema = Schema.from_dict(json.loads((bundle_dir / "bundle.json").read_text())["schema"])
    rows = typed_rows(ml100k_small.table, schema, range(0, 20_000, 40))  # 500 real rows, train and test alike
    rows += [
        {
            "user_id": "99999",
            "item_id": 424242,
            "age": 31,
            "gender": "X",
            "occupation": "astronaut",
            "zip_code": "Z9-999",
            "release_year": 2031,
            "genres": "Sci-Fi|Unknown-Genre",
        },  # unseen everything
        {"user_id": 196.0, "item_id": "242"},  # only the required features; an integral float id
        {
            "user_id": "1",
            "item_id": "1",
            "genres": ["Animation", "Children's", "Comedy", "Drama", "War", "Crime", "Horror"],
        },  # a list, longer than max_len
        {"user_id": "1", "item_id": "1", "genres": "", "zip_code": "", "age": None},  # empty/None values
    ]
    return schema, rows


def columns_of(rows: list[dict], sources: tuple[str, ...]) -> dict[str, list]:
    return {s: [r.get(s) for r in rows] for s in sources}


def test_training_and_serving_encoders_agree(bundle_dir, real_rows):
    schema, rows = real_rows
    offline = encode_table(schema, columns_of(rows, schema.sources))
    online = load_bundle(bundle_dir).encoder.encode_rows(rows)
    assert set(offline) == set(online)
    for name in offline:
        assert online[name].dtype == np.int64 and online[name].shape == offline[name].shape, name
        assert np.array_equal(offline[name], online[name]), name
    assert (
        online["item_id"][-4] == 1 and online["zip_prefix"][-4] == 1 and online["user_activity"][-4] == 2
    )  # OOV item; cold bucket "0"
    assert online["age"][-1] == 0 and not online["genres"][-1].any()  # missing → 0


def test_offline_and_online_scores_agree(bundle_dir, trained_runs, real_rows):
    schema, rows = real_rows
    model, run_schema, _ = load_run(trained_runs["self"])
    assert run_schema == schema
    torch_scores = predict(model, encode_table(schema, columns_of(rows, schema.sources)))
    bundle = load_bundle(bundle_dir)
    session = ort.InferenceSession(str(bundle.path / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_scores = session.run(["score"], bundle.encoder.encode_rows(rows))[0]
    assert np.max(np.abs(torch_scores - onnx_scores)) <= 1e-5
    cols = bundle.encoder.encode_columns(columns_of(rows[:500], schema.sources))
    assert np.array_equal(session.run(["score"], cols)[0], onnx_scores[:500])


def copy_bundle(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_tampered_graph_is_refused(bundle_dir, tmp_path):
    bad = copy_bundle(bundle_dir, tmp_path / "b")
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bad)


def test_unknown_format_version_is_refused(bundle_dir, tmp_path):
    bad = copy_bundle(bundle_dir, tmp_path / "b")
    manifest = json.loads((bad / "bundle.json").read_text())
    manifest["format_version"] = 99
    (bad / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format_version"):
        load_bundle(bad)


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_the_boundary_between_the_halves():
    contract = modules_after("import features, features.encoder, features.sampler, features.bundle")
    assert not {"torch", "fastapi", "starlette", "onnxruntime", "model", "service", "scripts"} & {
        m.split(".")[0] for m in contract
    }
    serving = modules_after(
        "import service.app, service.server, features, scripts.cli; scripts.cli.build_parser().parse_args(['serve'])"
    )
    assert "torch" not in serving and not any(m == "model" or m.startswith("model.") for m in serving)
    # a serve-only install (the container image) has no httpx: `apg serve` must still work there
    serve_only = modules_after(
        "import sys; sys.modules['httpx'] = None; import scripts.cli; scripts.cli.build_parser().parse_args(['serve'])"
    )
    assert "scripts.cli" in serve_only and "torch" not in serve_only
    training = modules_after("import model.train, model.export, model.bundle")
    assert not {"fastapi", "uvicorn", "service"} & training


def test_encoders_agree_on_a_synthetic_schema_and_odd_values():
    """Schema features ML-100K lacks: a multi field without separator, mapping without default, float ids."""
    from features import Encoder

    schema = Schema.from_dict(
        {
            "name": "odd",
            "fields": [
                {"name": "id", "kind": "categorical", "required": True, "vocab": ["7", "2.5", "true"]},
                {"name": "tags", "kind": "multi", "max_len": 3, "vocab": ["a b", "c", "5"]},
                {"name": "grp", "kind": "categorical", "source": "id", "mapping": {"7": "x"}, "vocab": ["x"]},
                {"name": "score", "kind": "numeric", "edges": [0.0, 1.5]},
            ],
        }
    )
    rows = [
        {"id": 7.0, "tags": "a b", "score": 1.5},
        {"id": "2.5", "tags": ["c", "a b", "zz", "c"], "score": -3},
        {"id": True, "tags": "", "score": " 0.5 "},
        {"id": " 7 ", "score": None},
        {"id": 2.5, "tags": ["c"]},
        {"id": 7, "tags": 5.0},  # a non-string scalar in a multi field: one value, normalised ("5")
        # numpy scalars (a Parquet column, a dataframe row) read as the Python values they equal
        {"id": np.int64(7), "tags": [np.str_("c"), np.float32(5.0)], "score": np.float32(1.5)},
        {"id": np.float32(2.5), "tags": np.str_("a b"), "score": np.int8(-3)},
        {"id": np.bool_(True), "score": np.float64(0.25)},
        # big ints, unicode and blank strings
        {"id": 2**80, "tags": ["\u3000c\u3000", "  "], "score": 10**30},
        {"id": "\u00a07\u2003", "tags": "\u00e9t\u00e9", "score": "  "},
        {"id": "   ", "tags": ["", None, "c"]},
    ]
    offline = encode_table(schema, columns_of(rows, schema.sources))
    online = Encoder(schema.to_dict()).encode_rows([r for r in rows if r["id"] != "   "] + [{"id": "7"}])
    for name in offline:
        assert np.array_equal(offline[name][:-1], online[name][:-1]), (name, offline[name], online[name])
    assert offline["id"].tolist() == [2, 3, 4, 2, 3, 2, 2, 3, 4, 1, 2, 0]  # numpy 7, 2.5, True as 7, "2.5", "true"
    assert offline["tags"][-1].tolist() == [3, 0, 0]
    assert offline["score"][-3:].tolist() == [3, 0, 0]  # 10**30 in the top bucket; blank and absent are missing
