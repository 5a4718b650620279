"""The encoder benchmark on the synthetic bundle: every field measured, the table printed, JSON written."""

import json

from synthetic_bundle import SCHEMA, build_bundle

from scripts.bench.encoder import main


def test_encoder_benchmark_reports_every_field(tmp_path, capsys):
    bundle = build_bundle(tmp_path / "b")
    out = tmp_path / "enc.json"
    assert (
        main(["--bundle", str(bundle.path), "--batch", "32", "--calls", "3", "--rounds", "1", "--json", str(out)]) == 0
    )
    r = json.loads(out.read_text())
    assert set(r["fields_us"]) == {f["name"] for f in SCHEMA["fields"]} and r["onnxruntime_us"] > 0
    assert r["rows_over_columns"] == r["encode_rows_us"] / r["encode_columns_us"]
    assert "per field (columns path)" in capsys.readouterr().out
