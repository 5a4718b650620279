"""`apg bench`'s ranking-by-id section (scripts/bench/ranking_ids.py): its catalogue and bodies, its report, and
`apg bench --only-by-id` end to end on the synthetic bundle (servers and a redis-server on 127.0.0.1). No timing
assertions: the shapes of the results, the answers agreeing, the section written once into a markdown file."""

from __future__ import annotations

import shutil

import orjson
import pytest
from synthetic_bundle import build_bundle

from scripts.bench import ranking_ids, ranking_ids_report
from scripts.cli import main
from service.bundle import load_bundle


@pytest.fixture
def synthetic(tmp_path):
    return build_bundle(tmp_path / "bundle")


def test_the_catalogue_and_the_bodies(synthetic):
    catalogue = ranking_ids.build_catalogue(load_bundle(synthetic.path), items=50)
    assert catalogue.items == ["item_id", "genres"] and catalogue.context[0] == "user_id"
    assert catalogue.ids[:5] == ["242", "302", "377", "51", "346"] and len(set(catalogue.ids)) == 50
    reqs = ranking_ids.requests(catalogue, n=7, pool=3, seed=1)
    full = orjson.loads(reqs["bodies"]["full"][0].split(b"\r\n\r\n", 1)[1])
    by_id = orjson.loads(reqs["bodies"]["ids"][0].split(b"\r\n\r\n", 1)[1])
    assert by_id["context"] == full["context"] and by_id["candidates"] == [c["item_id"] for c in full["candidates"]]
    genres = dict(zip(catalogue.ids, catalogue.table["genres"], strict=True))
    assert all(c["genres"] == genres[c["item_id"]] for c in full["candidates"])  # each item's one set of features
    assert [{**full["context"], **c} for c in full["candidates"]] == reqs["rows"][0]


def test_report_targets_and_the_section_replaced_in_place(tmp_path):
    cell = {"rows_per_s": 100.0, "p50_ms": 1.0, "p99_ms": 2.0, "request_bytes": 1000, "calls": 9}
    by_n = {
        "1000": ranking_ids.add_ratios(
            {
                "floor": {**cell, "rows_per_s": 200.0},
                "full": cell,
                "full-stages": {"request": 1.0},
                "id-file": {**cell, "rows_per_s": 180.0, "request_bytes": 200},
                "id-file-stages": {"request": 0.5, "lookup": 0.1},
            }
        )
    }
    doc = {"context": ["user_id"], "items": ["item_id"], "catalogue_items": 10, "by_n": by_n}
    lookup = {"file": {"p50_ms": 0.2, "p99_ms": 0.4}}
    c = by_n["1000"]["id-file"]
    assert (c["ratio_to_floor"], c["ratio_to_full"], c["bytes_vs_full"], c["lookup_share"]) == (0.9, 1.8, 0.2, 0.2)
    met = {t: ok for t, _, ok in ranking_ids_report.targets(doc, lookup)}
    assert met["id-file, 1,000 candidates: rows/s >= 0.8x the floor"] is True
    assert met["lookup of 1,000 ids, local Redis: p50 <= 2 ms"] is None  # not measured
    assert met["request bytes by id, 1,000 candidates: <= 25 % of the full-feature body"] is True
    page = tmp_path / "PERF.md"
    page.write_text("# Performance\n\nbefore\n")
    run = {
        "command": "apg bench --only-by-id",
        "wall_s": 1.0,
        "threads": 1,
        "bundle": {"name": "b", "version": "v"},
        "machine": {"cpus": 2, "load_average_before": [1], "load_average_after": [1]},
        "lookup": lookup,
        "ranking_ids": doc,
    }
    for _ in range(2):
        ranking_ids_report.write_section(page, ranking_ids_report.section(run))
    text = page.read_text()
    assert text.startswith("# Performance\n\nbefore\n") and text.count(ranking_ids_report.SECTION_BEGIN) == 1
    assert "| 1000 | id-file | 200 | 0.200 |" in text and "0.100 (20.0 %)" in text


@pytest.mark.slow  # starts three `apg serve` and a redis-server
def test_only_by_id_end_to_end(synthetic, tmp_path, capsys):
    stores = "file,redis" if shutil.which("redis-server") else "file"
    md = tmp_path / "PERF.md"
    argv = [
        "bench",
        "--only-by-id",
        "--bundle",
        str(synthetic.path),
        "--out",
        str(tmp_path / "out"),
        "--ranking",
        "5,40",
        "--by-id",
        stores,
        "--catalogue-items",
        "300",
        "--duration",
        "0.2",
        "--iterations",
        "30",
        "--markdown",
        str(md),
    ]
    assert main(argv) == 0
    doc = orjson.loads((tmp_path / "out" / "bench-ranking-ids.json").read_bytes())
    paths = ["full"] + [f"id-{s}" for s in stores.split(",")]
    for n in ("5", "40"):
        cell = doc["ranking_ids"]["by_n"][n]
        assert cell["max_abs_diff"] <= 1e-6
        for path in paths:
            assert cell[path]["ratio_to_floor"] > 0 and cell[path]["calls"] >= 5
        for path in paths[1:]:
            assert cell[path]["lookup_ms"] > 0 and 0 < cell[path]["lookup_share"] < 1
            assert cell[path]["bytes_vs_full"] < 1
    assert set(doc["lookup"]) == set(stores.split(",")) and doc["ranking_ids"]["catalogue_items"] == 300
    for kind in doc["lookup"].values():  # the lookup alone, and what it costs the event loop inline and on a thread
        assert kind["p50_ms"] > 0 and set(kind["event_loop"]) == {"inline", "thread"}
        assert all(way["lookup_p50_ms"] > 0 and way["loop_gap_p99_ms"] > 0 for way in kind["event_loop"].values())
    assert "Where a request's time goes at 40 candidates" in md.read_text()
    assert "## Ranking by item id" in md.read_text() and "Targets of issue 23" in capsys.readouterr().out


def test_by_id_options(synthetic):
    import argparse

    from scripts.bench import harness

    def cfg(*argv: str):
        p = argparse.ArgumentParser()
        harness.add_arguments(p)
        return harness.config_from_args(p.parse_args(["--bundle", str(synthetic.path), *argv]), "cmd")

    full, quick = cfg(), cfg("--quick")
    assert (full.by_id, full.catalogue_items, full.only_by_id) == (("file", "redis"), 100_000, False)
    assert (quick.by_id, quick.catalogue_items) == (("file",), 2_000)
    assert cfg("--by-id", "off").by_id == () and cfg("--ranking", "off").by_id == ()
    assert cfg("--by-id", "redis", "--only-by-id").by_id == ("redis",)
    with pytest.raises(SystemExit):
        cfg("--by-id", "s3")
    with pytest.raises(ValueError, match="--only-by-id measures ranking by id"):
        cfg("--only-by-id", "--ranking", "off")
