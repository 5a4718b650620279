"""The cold-start test: the held-out-user split, the trained rare-user row (training and serving encode it alike),
the resumable store and the report, on synthetic tables and records; one tiny driver run (slow: it trains)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from features import OOV, STRICT, Encoder, Field, Schema, SchemaError
from model.data import DataError, Holdout, encode_table, fit_schema, hold_out_users, load_dataset, split_rows


def interactions(n_users: int = 60, rows: tuple[int, int] = (8, 30), seed: int = 0) -> tuple[np.ndarray, list]:
    """Users with rows[0]..rows[1] rows each, in a shuffled table, with random timestamps (some tied)."""
    rng = np.random.default_rng(seed)
    users = np.repeat([f"u{i}" for i in range(n_users)], rng.integers(rows[0], rows[1] + 1, n_users))
    order = rng.permutation(len(users))
    return users[order].astype(object), [str(t) for t in rng.integers(0, 500, len(users))]


def test_held_out_users_keep_only_their_earliest_k_rows_and_the_rest_is_cold():
    users, time = interactions()
    base = split_rows(len(users), "random", 0)
    h = Holdout(share=0.25, keep=5, seed=3)
    s = hold_out_users(base, users, time, h)
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(len(users)))  # a partition of the rows
    cold = set(users[s["cold"]])
    assert len(cold) == 15  # 25 % of 60 users
    for name in ("train", "valid", "test"):  # a warm row keeps its place in the usual split
        warm = [r for r in base[name] if users[r] not in cold]
        assert set(s[name]) >= set(warm) and (name == "train" or set(s[name]) == set(warm))
    t = np.array([float(v) for v in time])
    kept = Counter(users[s["train"]])
    for u in cold:
        mine = np.flatnonzero(users == u)
        train = [r for r in s["train"] if users[r] == u]
        assert 1 <= kept[u] <= 5 and not set(mine) & (set(s["valid"]) | set(s["test"]))
        assert t[train].max() <= t[[r for r in mine if r not in train]].min()  # the earliest, in time
    assert len(set(kept[u] for u in cold)) > 1  # k varies over users (1..keep)
    again = hold_out_users(base, users, time, h)
    assert all(np.array_equal(s[k], again[k]) for k in s)  # deterministic
    other = hold_out_users(base, users, time, Holdout(share=0.25, seed=4))
    assert set(users[other["cold"]]) != cold


def test_ties_in_time_keep_table_order():
    users = np.array(["a"] * 4 + ["b"] * 3, dtype=object)
    base = {"train": np.arange(7), "valid": np.array([], dtype=int), "test": np.array([], dtype=int)}
    s = hold_out_users(base, users, ["5", "5", "1", "5", "2", "2", "2"], Holdout(share=0.5, keep=1, seed=0))
    held = users[s["cold"][0]]
    assert s["train"].tolist()[-1] == (2 if held == "a" else 4)  # a: the row at time 1; b: the first of three ties


def test_rare_users_share_the_oov_row_in_training_and_serving():
    spec = Holdout(min_count=3).rare_users(
        Schema(
            "t",
            (
                Field("user_id", "categorical"),
                Field("act", "categorical", source="user_id", derive="count_bucket", edges=(2.0,)),
            ),
            user_column="user_id",
        )
    )
    assert spec.field("user_id").min_count == 3 and spec.field("act").min_count is None  # not on a derived field
    table = {"user_id": ["a", "a", "a", "b", "b", "c", "d", "d", "d"]}
    fitted = fit_schema(spec, table, np.arange(8))  # d's third row is not in training: d has 2 training rows
    assert fitted.field("user_id").vocab == ("a",)
    train = encode_table(fitted, table)["user_id"]
    assert train.tolist() == [2, 2, 2, OOV, OOV, OOV, OOV, OOV, OOV]  # rare users train the OOV row
    served = Schema.from_dict(json.loads(json.dumps(fitted.to_dict())))  # as a bundle's manifest carries it
    assert served == fitted and served.field("user_id").min_count == 3
    rows = [{"user_id": u} for u in ("a", "b", "never-seen", "d")]
    assert Encoder(served, STRICT).encode_rows(rows)["user_id"].tolist() == [2, OOV, OOV, OOV]
    assert encode_table(fitted, table)["act"].tolist() == [3, 3, 3, 3, 3, 2, 3, 3, 3]  # counts of every user


def test_a_served_bundle_maps_an_unseen_user_to_the_trained_rare_row(tmp_path):
    pytest.importorskip("onnx")
    from synthetic_bundle import SCHEMA, build_bundle, edit_manifest

    from service.bundle import load_bundle

    build_bundle(tmp_path)
    fields = [{**f, "min_count": 2} if f["name"] == "user_id" else f for f in SCHEMA["fields"]]
    edit_manifest(tmp_path, schema={**SCHEMA, "fields": fields})  # as a cold-start run's bundle carries it
    encoder = load_bundle(tmp_path).encoder
    assert encoder.schema.field("user_id").min_count == 2
    ids = encoder.encode_rows([{"user_id": u, "item_id": "242"} for u in ("196", "unseen-user")])["user_id"]
    assert ids.tolist() == [2, OOV]  # the row rare users trained


@pytest.mark.parametrize(
    "field",
    [
        {"name": "age", "kind": "numeric", "edges": [1], "min_count": 2},
        {"name": "act", "kind": "categorical", "derive": "count_bucket", "edges": [1], "min_count": 2},
        {"name": "u", "kind": "categorical", "min_count": 0},
        {"name": "u", "kind": "categorical", "min_count": 2.5},
    ],
)
def test_min_count_is_validated(field):
    with pytest.raises(SchemaError, match="min_count"):
        Field.from_dict(field)


def test_a_holdout_needs_a_user_field_time_and_sane_numbers():
    with pytest.raises(ValueError, match="0 <= share < 1"):
        Holdout(share=1.0)
    with pytest.raises(DataError, match="user_column"):
        Holdout().rare_users(Schema("t", (Field("x", "categorical"),)))


def write_table(tmp_path: Path) -> tuple[str, str]:
    users, time = interactions(80, rows=(20, 40))
    rng = np.random.default_rng(1)
    rows = ["user_id,item_id,ts,clicked"] + [
        f"{u},i{rng.integers(0, 40)},{t},{rng.integers(0, 2)}" for u, t in zip(users, time, strict=True)
    ]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    schema = {
        "name": "t",
        "label": {"column": "clicked"},
        "user_column": "user_id",
        "time_column": "ts",
        "fields": [
            {"name": "user_id", "kind": "categorical"},
            {"name": "item_id", "kind": "categorical"},
            {
                "name": "user_activity",
                "kind": "categorical",
                "source": "user_id",
                "derive": "count_bucket",
                "edges": [20],
            },
        ],
    }
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    return str(tmp_path / "t.csv"), str(tmp_path / "schema.json")


def test_loaded_dataset_has_cold_rows_on_the_trained_rare_row_and_activity_buckets(tmp_path):
    pytest.importorskip("torch")  # the driver's module is the training side's
    from scripts.experiments.coldstart import activity, bucket_labels, split_summary

    d = load_dataset(*write_table(tmp_path), holdout=Holdout(share=0.2))
    user = d.x["user_id"]
    assert len(d.splits["cold"]) > 0 and (user[d.splits["cold"]] == OOV).all()  # every cold user is rare
    n = activity(d)
    cold_train = np.isin(d.users[d.splits["train"]], d.users[d.splits["cold"]])
    assert (user[d.splits["train"]][cold_train] == OOV).all() and (user[d.splits["train"]][~cold_train] >= 2).all()
    assert set(n[d.splits["cold"]]) <= {1, 2, 3, 4, 5} and n[d.splits["test"]].min() >= 6
    assert set(bucket_labels(np.array([0, 1, 2, 3, 5, 6, 49, 50, 200]))) == {
        "0",
        "1",
        "2",
        "3-5",
        "6-49",
        "50-199",
        "200+",
    }
    summary = split_summary(d)
    assert summary["rare_rows"]["train"] == int(cold_train.sum()) and summary["rare_rows"]["cold"] > 0
    assert summary["user_vocab"] == 64  # the 80 − 16 warm users


def test_the_split_is_cached_with_the_encoded_data(tmp_path, monkeypatch):
    from model.data import cache_dir

    real = cache_dir() / "ml-100k"
    if not real.exists():
        pytest.skip("ML-100K is not in the data cache")
    monkeypatch.setenv("APG_CACHE_DIR", str(tmp_path))
    (tmp_path / "ml-100k").symlink_to(real)
    h = Holdout(share=0.2, seed=1)
    first = load_dataset("ml-100k", limit=5000, cache=True, holdout=h)
    cached = load_dataset("ml-100k", limit=5000, cache=True, holdout=h)
    assert first.table is not None and cached.table is None  # read back from the cache
    assert all(np.array_equal(first.splits[k], cached.splits[k]) for k in ("train", "valid", "test", "cold"))
    assert cached.schema == first.schema and cached.schema.field("user_id").min_count == 6
    plain = load_dataset("ml-100k", limit=5000, cache=True)
    assert "cold" not in plain.splits and len(list((tmp_path / "encoded").glob("*.npz"))) == 2


# ---------------------------------------------------------------- the driver, without training
def fake_record(plan, model: str, arm: str, seed: int) -> dict:
    """What execute returns, with AUCs that make self-wise APG better than the base on cold rows."""
    from scripts.experiments.study import run_key

    gain = {"base": 0.0, "group": 0.001, "self": 0.01}[arm] + 0.001 * seed * (arm == "self")
    by = {
        b: {"auc": 0.7 + gain + 0.01 * i, "rows": 100 * (i + 1), "users": 10} for i, b in enumerate(["1", "2", "3-5"])
    }
    by["50-199"] = {"auc": 0.8, "rows": 900, "users": 50}
    metrics = {"auc": 0.7 + gain, "logloss": 0.6, "gauc": 0.6, "ctr_ratio": 1.0, "rows": 300}
    adaptation = (
        None if arm == "base" else {"layers": [{"spread": 0.1, "distinct": 5}], "mean_s_cost": 0.002, "adaptive": True}
    )
    split = {
        "rows": {"train": 8000, "valid": 900, "test": 900, "cold": 300},
        "users": {"cold": 30, "test": 50},
        "rare_rows": {"train": 90, "cold": 300},
        "user_vocab": 50,
    }
    return {
        "key": run_key(plan, model, arm, seed),
        "model": model,
        "arm": arm,
        "seed": seed,
        "valid": metrics,
        "test": {**metrics, "auc": 0.8},
        "cold": metrics,
        "by_activity": by,
        "adaptation": adaptation,
        "epochs_run": 1,
        "wall_seconds": 0.1,
        "split": split,
        "budget": plan.budget(),
    }


def test_runs_resume_and_the_report_pairs_seeds_per_bucket(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from scripts.experiments import coldstart

    calls = []
    monkeypatch.setattr(coldstart, "execute", lambda *a: calls.append(a[1:]) or fake_record(*a))
    plan = coldstart.Plan(data="toy", models=("dnn",), seeds=(1, 2, 3))
    records = coldstart.run(plan, tmp_path)
    assert len(records) == 9 and len(calls) == 9
    assert coldstart.run(plan, tmp_path) == records and len(calls) == 9  # resumed: nothing trains twice
    other = coldstart.Plan(data="toy", models=("dnn",), seeds=(1,), holdout=Holdout(share=0.2))
    assert coldstart.stored(other, tmp_path) == []  # another holdout is another budget
    figure = tmp_path / "figures" / "coldstart-toy.png"
    text = coldstart.report(coldstart.stored(plan, tmp_path), plan, figure, tmp_path)
    assert figure.stat().st_size > 1000 and "](figures/coldstart-toy.png)" in text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert "| dnn | self | 71.20 ± 0.10 | +1.20 [+0.95, +1.45] (p 0.0023, n 3) |" in text
    assert rows["| 1"].endswith("| +0.10 [+0.10, +0.10] (p 0, n 3) | +1.20 [+0.95, +1.45] (p 0.0023, n 3) |")
    assert rows["| 50-199"].count("+0.00 [+0.00, +0.00] (p 1, n 3)") == 2 and "| all cold rows |" in text
    assert "Users with fewer than 6 training interactions share one trained user-id row" in text


def test_cli_registers_the_driver():
    pytest.importorskip("torch")
    from scripts.cli import build_parser

    args = build_parser().parse_args(["experiment", "cold-users", "report", "--limit", "9", "--share", "0.2"])
    assert args.what == "report" and args.limit == 9 and args.share == 0.2 and args.min_count == 6
    assert args.apg_handler.prog == "apg experiment cold-users"


# ---------------------------------------------------------------- one tiny real run
@pytest.mark.slow
def test_tiny_driver_run_trains_every_arm_and_reports(tmp_path):
    pytest.importorskip("torch")
    from scripts.cli import main

    args = [
        "--data",
        "ml-100k",
        "--limit",
        "20000",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--models",
        "dnn",
        "--share",
        "0.2",
        "--threads",
        "1",
        "--results",
        str(tmp_path),
        "--figures",
        str(tmp_path / "fig"),
    ]
    assert main(["experiment", "cold-users", "run", *args]) == 0
    records = [json.loads(line) for line in (tmp_path / "coldstart" / "ml-100k.jsonl").read_text().splitlines()]
    assert {r["arm"] for r in records} == {"base", "group", "self"} and len(records) == 3
    for r in records:
        assert r["cold"]["rows"] > 0 and r["split"]["rare_rows"]["train"] > 0
        assert r["split"]["rare_rows"]["cold"] == r["cold"]["rows"]  # every cold row is on the trained row
        assert {"1", "2", "3-5"} <= set(r["by_activity"]) and (r["adaptation"] is None) == (r["arm"] == "base")
    assert main(["experiment", "cold-users", "report", *args]) == 0
    text = (tmp_path / "coldstart-ml-100k.md").read_text()
    assert "| dnn | self |" in text and "| 3-5 |" in text and (tmp_path / "fig" / "coldstart-ml-100k.png").exists()
