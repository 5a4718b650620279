"""`apg data synth`: layout, schema, determinism, the teacher as documented, its Bayes metrics against the files."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from features.metrics import auc, logloss
from features.schema import Schema
from scripts.data import synth
from scripts.data.synth import SynthConfig, synthesize
from scripts.data.teacher import _ranks, build_teacher

CFG = SynthConfig(rows=80_000, shards=3, row_group_rows=8192, max_cardinality=50_000, users=5000, seed=7)


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "log"
    synthesize(CFG, out)
    return out


def files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def read(out: Path, split: str) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((out / split).glob("*.parquet")))


def test_layout_row_groups_and_types(log):
    names = [str(p.relative_to(log)) for p in files(log)]
    assert names == [
        "schema.json",
        "teacher.json",
        "test/part-00000.parquet",
        "train/part-00000.parquet",
        "train/part-00001.parquet",
        "train/part-00002.parquet",
        "valid/part-00000.parquet",
    ]
    for path in (log / "train").glob("*.parquet"):
        meta = pq.ParquetFile(path).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert sizes[:-1] == [8192] * (len(sizes) - 1) and 0 < sizes[-1] <= 8192
        c3 = [meta.row_group(0).column(i) for i in range(meta.num_columns) if meta.schema[i].name == "C3"][0]
        assert any("DICTIONARY" in e for e in c3.encodings)
    assert [read(log, s).num_rows for s in ("train", "valid", "test")] == [64_000, 8000, 8000]
    schema = pq.read_schema(log / "train" / "part-00000.parquet")
    types = {f.name: str(f.type) for f in schema}
    assert types["ts"] == "int64" and types["user"] == types["C1"] == types["C26"] == "string"
    assert types["I1"] == "int64" and types["click"] == "int8" and types["p_true"] == "double"
    assert types["context"] == "int8" and types["segment"] == "int16"
    ts = np.concatenate([read(log, s)["ts"].to_numpy() for s in ("train", "valid", "test")])
    assert np.all(np.diff(ts) >= 0) and ts[-1] > ts[0]  # time order: train, then valid, then test
    train = read(log, "train")
    assert train["I1"].null_count > 0 and train["C22"].null_count > 0 and train["C1"].null_count == 0
    assert all(len(v) == 8 for v in train["C3"].drop_null().to_pylist()[:100])  # Criteo-like hex ids


def test_schema_file_loads_and_reads_existing_columns(log):
    schema = Schema.load(log / "schema.json")
    columns = set(pq.read_schema(log / "test" / "part-00000.parquet").names)
    assert set(schema.sources) <= columns
    assert {schema.label["column"], schema.user_column, schema.time_column} <= columns
    assert "p_true" not in schema.sources
    by_name = {f.name: f for f in schema.fields}
    assert by_name["user"].hashed and by_name["C3"].hashed and by_name["C3"].hash_buckets == 2**16  # K = 50_000
    assert not by_name["C9"].hashed and by_name["context"].min_count == 1 and by_name["segment"].kind == "categorical"
    edges = [len(by_name[f"I{j}"].edges) for j in range(1, 14)]  # quantile floors: fewer for small counts
    assert min(edges) >= 3 and max(edges) >= 20


def test_same_arguments_same_bytes_and_layout_does_not_change_content(log, tmp_path):
    again = tmp_path / "again"
    synthesize(CFG, again)
    assert [p.read_bytes() for p in files(again)] == [p.read_bytes() for p in files(log)]
    relaid = tmp_path / "relaid"
    synthesize(replace(CFG, shards=5, row_group_rows=3000), relaid)
    assert len(list((relaid / "train").glob("*.parquet"))) == 5
    for split in ("train", "valid", "test"):
        assert read(relaid, split).equals(read(log, split))
    other = tmp_path / "other"
    synthesize(replace(CFG, seed=8), other)
    assert not read(other, "test").equals(read(log, "test"))


def test_cardinalities_from_3_to_over_10_thousand_with_zipf_skew(log):
    table = pa.concat_tables(read(log, s) for s in ("train", "valid", "test"))
    distinct = {c: pc.count_distinct(table[c]).as_py() for c in [f"C{k}" for k in range(1, 27)]}
    assert min(distinct.values()) == 3 and distinct["C9"] == 3
    assert max(distinct.values()) >= 10_000
    counts = np.array([v["counts"] for v in pc.value_counts(table["C3"].drop_null()).to_pylist()])
    assert counts.max() >= 100 * np.median(counts)  # a few ids take much of the traffic, most are rare
    top = pc.mode(table["context"]).to_pylist()[0]["mode"]
    assert pc.count_distinct(table["context"]).as_py() == 24 and top != 0  # popular ids are permuted
    users = table.select(["user", "segment"]).group_by("user").aggregate([("segment", "count_distinct")])
    assert users["segment_count_distinct"].to_numpy().max() == 1  # segment is a function of the user


def test_truth_is_a_probability_and_labels_follow_it(log):
    table = read(log, "train")
    p, y = table["p_true"].to_numpy(), table["click"].to_numpy()
    assert 0 < p.min() and p.max() < 1
    assert abs(y.mean() - p.mean()) < 4 * np.sqrt(p.mean() * (1 - p.mean()) / len(y))
    assert 0.2 < y.mean() < 0.3  # Criteo-like positive rate


def test_bayes_metrics_in_teacher_json_equal_recomputation(log):
    record = json.loads((log / "teacher.json").read_text())
    assert record["config"]["seed"] == 7 and record["teacher"]["heterogeneity"] == CFG.heterogeneity
    for split in ("train", "valid", "test"):
        table, m = read(log, split), record["splits"][split]
        y, p = table["click"].to_numpy(), table["p_true"].to_numpy()
        assert m["rows"] == m["auc_rows"] == len(y)
        assert m["bayes_auc"] == auc(y, p)
        assert m["bayes_logloss"] == pytest.approx(logloss(y, p), rel=1e-12)
        assert m["positive_rate"] == y.mean() and 0.75 < m["bayes_auc"] < 0.85


def test_a_long_split_measures_auc_on_every_kth_row(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "AUC_ROWS", 300)
    cfg = replace(CFG, rows=2000, max_cardinality=1000, users=100, shards=2, row_group_rows=97)
    synthesize(cfg, tmp_path / "log")
    m = json.loads((tmp_path / "log" / "teacher.json").read_text())["splits"]["train"]
    table = read(tmp_path / "log", "train")  # 1600 rows: k = 6, rows 0, 6, 12, ...
    assert m["auc_rows"] == 267
    assert m["bayes_auc"] == auc(table["click"].to_numpy()[::6], table["p_true"].to_numpy()[::6])


def test_heterogeneity_mixes_shared_and_group_weights_as_documented():
    small = replace(CFG, max_cardinality=1000, users=500, groups=4)
    t0, t1, th = (build_teacher(replace(small, heterogeneity=h)) for h in (0.0, 1.0, 0.36))
    assert all(np.array_equal(t0.a[g], t0.a[0]) and np.array_equal(t0.beta[g], t0.beta[0]) for g in range(4))
    assert not np.allclose(t1.a[1], t1.a[0]) and not np.allclose(t1.beta[1], t1.beta[0])
    shared, own = t0.a[0], t1.a  # a_g = sqrt(1-H) a_shared + sqrt(H) a_own_g, the same draws at every H
    np.testing.assert_allclose(th.a, 0.8 * shared[None] + 0.6 * own, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(th.beta, 0.8 * t0.beta[0][None] + 0.6 * t1.beta, rtol=1e-12)
    assert all(np.array_equal(a.w, b.w) and np.array_equal(a.v, b.v) for a, b in zip(t0.cats, t1.cats, strict=True))
    r0, r1 = t0.rows(100, 2100), t1.rows(100, 2100)
    assert all(np.array_equal(a, b) for a, b in zip(r0.ranks, r1.ranks, strict=True))  # same features
    assert not np.allclose(r0.p_true, r1.p_true)  # a different teacher
    for t in (t0, t1, th):  # calibrated: the same logit spread and positive rate at every H
        p = t.rows(0, 65_536).p_true
        logit = np.log(p) - np.log1p(-p)
        assert logit.std() == pytest.approx(1.35, rel=1e-6) and p.mean() == pytest.approx(0.25, abs=1e-9)


def test_guide_table_sampling_is_exactly_inverse_cdf():
    teacher = build_teacher(replace(CFG, max_cardinality=5000, users=300))
    u = np.random.default_rng(1).random(200_000)
    u[:4] = [0.0, np.nextafter(1.0, 0.0), 0.44, np.nextafter(0.44, 0.0)]
    for t in teacher.cats:
        q = np.clip((u - t.missing) / (1 - t.missing), 0.0, np.nextafter(1.0, 0.0))
        expected = np.where(u < t.missing, t.size, np.searchsorted(t.cdf, q, side="right"))
        np.testing.assert_array_equal(_ranks(t, u), expected, err_msg=t.name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rows": 999}, "--rows"),
        ({"heterogeneity": 1.5}, "--heterogeneity"),
        ({"heterogeneity": -0.1}, "--heterogeneity"),
        ({"shards": 0}, "--shards"),
        ({"row_group_rows": 0}, "--row-group-rows"),
        ({"groups": 0}, "--groups"),
        ({"max_cardinality": 10}, "--max-cardinality"),
        ({"users": 3, "groups": 4}, "--users"),
    ],
)
def test_bad_arguments_raise(change, message):
    with pytest.raises(ValueError, match=message):
        replace(CFG, **change)


def test_existing_out_is_refused_and_a_failed_run_leaves_nothing(tmp_path, monkeypatch):
    small = replace(CFG, rows=2000, max_cardinality=1000, users=100)
    out = tmp_path / "log"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        synthesize(small, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(synth, "write_shard", broken)
    with pytest.raises(OSError):
        synthesize(small, out, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["log"] and [p.name for p in out.iterdir()] == ["keep.txt"]
    monkeypatch.undo()
    synthesize(small, out, force=True)
    assert (out / "teacher.json").exists() and not (out / "keep.txt").exists()


def test_command_line(tmp_path, capsys):
    p = argparse.ArgumentParser()
    synth.add_arguments(p)
    args = p.parse_args(
        [
            "--rows",
            "2e3",
            "--out",
            str(tmp_path / "log"),
            "--max-cardinality",
            "1_000",
            "--users",
            "100",
            "--shards",
            "2",
            "--quiet",
        ]
    )
    assert synth.run_from_args(args) == 0
    assert "Bayes-optimal AUC" in capsys.readouterr().out
    assert len(list((tmp_path / "log" / "train").glob("*.parquet"))) == 2


def test_the_apg_data_subcommands(tmp_path, capsys):
    pytest.importorskip("torch")  # `apg data` is a training-side command (its options are TrainConfig's)
    from scripts.cli import main

    assert (
        main(
            [
                "data",
                "synth",
                "--rows",
                "5000",
                "--out",
                str(tmp_path / "log"),
                "--max-cardinality",
                "500",
                "--users",
                "300",
                "--quiet",
            ]
        )
        == 0
    )
    assert "Bayes-optimal AUC" in capsys.readouterr().out
    assert main(["data", "--data", str(tmp_path / "log")]) == 0  # described from its footers
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["train", "4,000", "rows"] and "Bayes-optimal AUC 0." in lines[1]
    assert main(["data", "synth", "--rows", "5000", "--out", str(tmp_path / "log"), "--quiet"]) == 2  # not empty
    assert "apg data synth: error:" in capsys.readouterr().err
