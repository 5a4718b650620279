"""`apg bench`: --quick end to end against a real bundle (servers on 127.0.0.1), and its pure parts.

No timing assertions (shared, noisy machines): the checks are on the shape of the results, the ratios being
present and positive, and the files. (The bodies and the client: tests/clients/.)"""

from __future__ import annotations

import argparse

import orjson
import pytest

import service.metrics
from scripts.bench import harness
from scripts.bench.http_io import stage_means
from scripts.cli import main

PATHS = {"score-rows", "score-columns", "v2-json", "v2-binary", "thin-columns"}
SATURATED = ["score-rows", "score-columns", "v2-binary", "thin-columns"]
STAGES = set(service.metrics.STAGES)
PNG = b"\x89PNG\r\n\x1a\n"


def test_quick_bench_end_to_end(bundle_dir, trained_runs, tmp_path, capsys):
    out, md = tmp_path / "bench", tmp_path / "docs" / "PERF.md"
    argv = [
        "--quick",
        "--bundle",
        str(bundle_dir),
        "--out",
        str(out),
        "--markdown",
        str(md),
        "--run",
        str(trained_runs["self"]),
        "--whole-machine",
        "2",
    ]
    assert main(["bench", *argv]) == 0
    printed = capsys.readouterr().out
    for title in (
        "Throughput: ratio to the floor",
        "Stage breakdown",
        "knee ratio on/off",
        "torch eager",
        "Targets",
        "Ranking: one user",
        "Whole machine",
        "server saturated",
    ):
        assert title in printed
    doc = orjson.loads((out / "bench.json").read_bytes())
    sizes = {"1", "64"}
    assert doc["batch_sizes"] == [1, 64] and doc["quick"] is True and doc["threads"] == 1
    assert doc["server_env"]["APG_INTRA_OP_THREADS"] == "1" and doc["server_env"]["APG_BATCHING"] == "false"
    assert set(doc["floor"]) == sizes and all(c["rows_per_s"] > 0 and c["p50_ms"] > 0 for c in doc["floor"].values())
    # (b), (b'): every path at every batch size, as ratios to the floor (and to the thin app)
    assert set(doc["http"]) == PATHS
    for path, cells in doc["http"].items():
        assert set(cells) == sizes
        for cell in cells.values():
            assert cell["calls"] >= 5 and cell["p99_ms"] >= cell["p50_ms"] > 0 and cell["request_bytes"] > 0
            assert cell["ratio_to_floor"] > 0 and isinstance(cell["p50_overhead_ms"], float)
            assert path == "thin-columns" or cell["ratio_to_thin"] > 0
    # the stage breakdown from the service's own /metrics (the thin app has none)
    assert set(doc["stages"]) == PATHS - {"thin-columns"}
    for cells in doc["stages"].values():
        assert set(cells) == sizes
        for st in cells.values():
            assert set(st) == STAGES | {"request"} and st["inference"] > 0 and st["request"] >= st["inference"]
    # (c) micro-batching off vs on: the sweep ran and its knee ratios are there (None only when no rate met the SLO)
    sweep = doc["batching"]
    assert "knee_ratio_on_off" in sweep and (sweep["knee_ratio_on_off"] is None or sweep["knee_ratio_on_off"] > 0)
    for mode in ("off", "on"):
        s = sweep[mode]
        assert s["runs"] and s["runs"][0]["target_rate"] == 50 and s["runs"][0]["requests"] > 0
        assert "knee_ratio_to_floor" in s and (s["knee_rate"] is None) == (s["knee_ratio_to_floor"] is None)
        assert s["knee_ratio_to_floor"] is None or s["knee_ratio_to_floor"] > 0
        assert s["stages"]["request"] > 0
    # (d) torch eager on the same model: parity with onnxruntime, and its ratio
    assert set(doc["torch"]["by_batch"]) == sizes
    for cell in doc["torch"]["by_batch"].values():
        assert cell["ratio_to_floor"] > 0 and cell["max_abs_diff_vs_onnx"] < 1e-4
    assert {t["met"] for t in doc["targets"]} <= {True, False, None} and len(doc["targets"]) >= 5
    # batch 1 with the server saturated: every service path, the thin app, and the two raw ASGI references
    sat = doc["saturation"]
    assert sat["connections"] == 4 and list(sat["paths"]) == [*SATURATED, "bare-onnx", "bare"]
    assert all(c["requests"] > 0 and c["p99_ms"] >= c["p50_ms"] > 0 for c in sat["paths"].values())
    eight_k = next(t for t in doc["targets"] if "8000 requests/s" in t["target"])
    assert eight_k["measured"] == sat["paths"]["score-rows"]["requests_per_s"]
    # (e) ranking at --quick's 10 and 50 candidates: the three shapes gave the same scores, each has its cell
    ranking = doc["ranking"]
    assert doc["ranking_sizes"] == [10, 50] and set(ranking["by_n"]) == {"10", "50"} and "user_id" in ranking["context"]
    for cells in ranking["by_n"].values():
        assert cells["max_abs_diff"] <= 1e-6 and cells["floor"]["rows_per_s"] > 0
        for shape in ("rows", "columns", "ranking"):
            assert cells[shape]["calls"] >= 5 and cells[shape]["ratio_to_floor"] > 0
        assert (
            cells["ranking"]["request_bytes"] < cells["rows"]["request_bytes"] and cells["rows"]["bytes_vs_rows"] == 1
        )
    # (g) the whole machine: both floors, 2 workers with 2 connections, ratios to the better floor
    m = doc["whole_machine"]
    assert m["workers"] == 2 and m["batch"] == 1024 and m["pinned"] is False and m["floor"]["best"] in m["floor"]
    assert m["floor"]["sessions"]["threads"] == 2 and m["floor"]["intra_op"]["rows_per_s"] > 0
    for path in ("score-columns", "v2-binary"):
        assert m[path]["threads"] == 2 and m[path]["calls"] >= 10 and m[path]["ratio_to_floor"] > 0
        assert m[path]["connections_per_worker"] in (None, [2], [1, 1])
    assert (out / "logs" / "service-workers.log").exists()
    # the files
    for name in ("throughput", "latency", "stages", "batching", "ranking"):
        assert (out / f"{name}.png").read_bytes()[:8] == PNG
        assert (md.parent / "figures" / f"perf-{name}.png").read_bytes()[:8] == PNG
    text = md.read_text()
    assert "apg bench --quick --bundle" in text and "![throughput](figures/perf-throughput.png)" in text
    assert "| batch | floor rows/s |" in text and "### Targets of issue 6" in text
    assert (out / "logs" / "service.log").exists() and (out / "logs" / "thin.log").exists()


def test_without_a_run_torch_is_skipped_with_a_note(capsys):
    cfg = argparse.Namespace(run=None)
    assert harness._torch(cfg, {}, {}, None) == {"skipped": "no --run given"}
    assert "skipped" in capsys.readouterr().out


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    harness.add_arguments(p)
    return p.parse_args(list(argv))


def test_quick_replaces_defaults_but_not_given_values(bundle_json):
    cfg = harness.config_from_args(_args("--bundle", str(bundle_json), "--quick", "--duration", "0.5"), "cmd")
    assert cfg.batch_sizes == (1, 64) and cfg.rates == (50.0, 100.0) and cfg.budget.duration == 0.5 and cfg.quick
    assert cfg.ranking == (10, 50) and cfg.mlserver is None and cfg.whole_machine == 0
    full = harness.config_from_args(_args("--bundle", str(bundle_json), "--batch-sizes", "4,2"), "cmd")
    assert full.batch_sizes == (4, 2) and full.rates == harness.FULL["rates"] and full.budget.iterations == 20_000
    assert full.run is None and full.markdown is None and full.threads == 1 and full.ranking == (100, 300, 1000)
    off = harness.config_from_args(_args("--bundle", str(bundle_json), "--quick", "--ranking", "off"), "cmd")
    assert off.ranking == ()
    given = harness.config_from_args(
        _args("--bundle", str(bundle_json), "--quick", "--ranking", "7", "--whole-machine", "3"), "c"
    )
    assert given.ranking == (7,) and given.whole_machine == 3


def test_bad_options_and_a_missing_bundle_are_clear_errors(tmp_path, capsys):
    assert main(["bench", "--bundle", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "no bundle at" in capsys.readouterr().err
    for bad in (["--batch-sizes", "0,8"], ["--rates", "fast"], ["--ranking", "10,x"], ["--whole-machine", "two"]):
        with pytest.raises(SystemExit) as exc:
            main(["bench", *bad])
        assert exc.value.code == 2
    assert main(["bench", "--bundle", str(tmp_path), "--whole-machine", "1"]) == 2  # (the bundle is checked later)
    assert "--whole-machine needs 2 or more workers" in capsys.readouterr().err


def test_stage_means_are_deltas_per_observation_of_one_route():
    before = {("stage", "parse"): (1.0, 10.0), ("route", "/score"): (2.0, 10.0), ("route", "/metrics"): (0.5, 3.0)}
    after = {
        ("stage", "parse"): (1.5, 20.0),
        ("stage", "queue"): (0.0, 0.0),
        ("route", "/score"): (3.0, 20.0),
        ("route", "/metrics"): (0.9, 4.0),
    }
    assert stage_means(before, after, "/score") == {"parse": 50.0, "request": 100.0}
