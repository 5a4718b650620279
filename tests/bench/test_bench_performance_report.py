"""performance_report and plots on a made-up bench.json with every optional section (MLServer, ranking, whole
machine): the ratios are computed from the cells, the tables and the markdown show them, the plots are written."""

from __future__ import annotations

import copy

import pytest

from scripts.bench import performance_report

PNG = b"\x89PNG\r\n\x1a\n"


def _cell(rows_per_s: float, p50: float = 1.0, rows: int = 1, **extra) -> dict:
    return {
        "calls": 10,
        "p50_ms": p50,
        "p99_ms": 2 * p50,
        "mean_ms": p50,
        "requests_per_s": rows_per_s / rows,
        "rows_per_s": rows_per_s,
        "request_bytes": 100 * rows,
        **extra,
    }


def _sweep_run(rate: float) -> dict:
    pct = {"p50": 1.0, "p99": 2.0}
    return {"target_rate": rate, "achieved_rate": rate, "latency_ms": pct, "dispatch_lag_ms": pct, "error_fraction": 0}


def _doc(mlserver: bool = True, ranking: bool = True, machine: bool = True) -> dict:
    """A bench.json before add_ratios: floor 1000 rows/s at batch 1 and 100000 at 1024, the service paths at
    fixed fractions of it, MLServer at a quarter (batch 1) and half (batch 1024) of v2-json."""
    doc = {
        "command": "apg bench --mlserver",
        "created_at": "2026-01-01T00:00:00Z",
        "wall_s": 1.0,
        "bundle": {"name": "m", "version": "1"},
        "threads": 1,
        "batch_sizes": [1, 1024],
        "machine": {
            "cpus": 2,
            "load_average_before": [0, 0, 0],
            "load_average_after": [0, 0, 0],
            "platform": "x",
            "python": "3.11",
            "onnxruntime": "1",
            "uvloop": True,
            "httptools": True,
        },
        "server_env": {"APG_INTRA_OP_THREADS": "1"},
        "floor": {"1": _cell(1000.0, 0.1), "1024": _cell(100_000.0, 10.0, 1024)},
        "http": {
            "score-columns": {"1": _cell(300.0), "1024": _cell(60_000.0, 17.0, 1024)},
            "v2-json": {"1": _cell(200.0), "1024": _cell(50_000.0, 20.0, 1024)},
            "thin-columns": {"1": _cell(400.0), "1024": _cell(70_000.0, 15.0, 1024)},
        },
        "stages": {"score-columns": {b: {"parse": 0.1, "inference": 0.2, "request": 0.5} for b in ("1", "1024")}},
        "batching": {
            "slo_ms": 10.0,
            "max_errors": 0.01,
            "rates": [50.0],
            "off": {"runs": [_sweep_run(50.0)], "knee_rate": 50.0, "knee_is_lower_bound": True, "stages": {}},
            "on": {"runs": [_sweep_run(50.0)], "knee_rate": 50.0, "knee_is_lower_bound": True, "stages": {}},
        },
        "torch": {"skipped": "no --run given"},
    }
    if mlserver:
        doc["http"]["mlserver-v2-json"] = {
            "1": _cell(50.0, max_abs_diff_vs_service=1e-8),
            "1024": _cell(25_000.0, 40.0, 1024, max_abs_diff_vs_service=2e-8),
        }
        doc["mlserver"] = {"versions": {"mlserver": "1.7.1", "uvloop": "0.21.0", "onnxruntime": "1"}}
    if ranking:
        by_n = {
            "100": {
                "floor": _cell(50_000.0, 2.0, 100),
                "max_abs_diff": 0.0,
                "rows": _cell(10_000.0, 10.0, 100),
                "columns": _cell(20_000.0, 5.0, 100),
                "ranking": _cell(25_000.0, 4.0, 100),
            }
        }
        by_n["100"]["columns"]["request_bytes"], by_n["100"]["ranking"]["request_bytes"] = 5000, 4000
        doc["ranking"] = {"context": ["user_id", "age"], "items": ["item_id"], "by_n": by_n}
    if machine:
        floor = {"sessions": _cell(180_000.0, 11.0, 1024, threads=2), "intra_op": _cell(150_000.0, 7.0, 1024)}
        doc["whole_machine"] = {
            "workers": 2,
            "batch": 1024,
            "cpus_usable": 2,
            "pinned": False,
            "floor": {**floor, "best": "sessions"},
            "score-columns": _cell(171_000.0, 12.0, 1024, connections_per_worker=[1, 1]),
            "v2-binary": _cell(90_000.0, 20.0, 1024, connections_per_worker=[1, 1]),
        }
    return doc


def _target(doc: dict, start: str) -> dict:
    return next(t for t in doc["targets"] if t["target"].startswith(start))


def test_service_over_mlserver_ratios_and_their_targets():
    doc = performance_report.add_ratios(_doc())
    http = doc["http"]
    assert http["v2-json"]["1"]["ratio_to_mlserver"] == 4.0 and http["v2-json"]["1024"]["ratio_to_mlserver"] == 2.0
    assert http["score-columns"]["1"]["ratio_to_mlserver"] == 6.0
    assert (
        "ratio_to_mlserver" not in http["thin-columns"]["1"]
        and "ratio_to_mlserver" not in http["mlserver-v2-json"]["1"]
    )
    assert http["mlserver-v2-json"]["1024"]["ratio_to_floor"] == 0.25
    text = "v2-json at batch 1: rows/s >= 2x MLServer's v2 endpoint (same requests)"
    assert _target(doc, "v2-json at batch 1: rows/s >= 2x MLServer") == {"target": text, "measured": 4.0, "met": True}
    assert _target(doc, "v2-json at batch 1024: rows/s >= 1.3x MLServer")["met"] is True
    slow = _doc()
    slow["http"]["mlserver-v2-json"]["1024"]["rows_per_s"] = 45_000.0  # v2-json only 1.11x
    slow = performance_report.add_ratios(slow)
    assert _target(slow, "v2-json at batch 1024: rows/s >= 1.3x MLServer")["met"] is False


def test_without_the_optional_sections_their_targets_are_not_measured():
    doc = performance_report.add_ratios(_doc(mlserver=False, ranking=False, machine=False))
    assert "ratio_to_mlserver" not in doc["http"]["v2-json"]["1"]
    for start in ("v2-json at batch 1: rows/s >= 2x MLServer", "whole machine, 2 workers, v2-binary"):
        assert _target(doc, start)["met"] is None and _target(doc, start)["measured"] is None
    text = performance_report.text_report(doc)
    assert "MLServer 1.7.1" not in text and "Ranking:" not in text and "Whole machine" not in text


def test_ranking_ratios_are_to_the_floor_at_n_and_bytes_to_the_rows_shape():
    cells = performance_report.add_ratios(_doc())["ranking"]["by_n"]["100"]
    assert [cells[s]["ratio_to_floor"] for s in ("rows", "columns", "ranking")] == [0.2, 0.4, 0.5]
    assert [cells[s]["bytes_vs_rows"] for s in ("rows", "columns", "ranking")] == [1.0, 0.5, 0.4]
    lines = performance_report.ranking_lines(performance_report.add_ratios(_doc())["ranking"])
    assert lines == [
        "ranking, 100 candidates: floor 50.0k rows/s; rows 0.20x (10.0 kB), columns 0.40x (5.0 kB), "
        "ranking 0.50x (4.0 kB)"
    ]


def test_whole_machine_ratios_are_to_the_better_floor():
    doc = performance_report.add_ratios(_doc())
    m = doc["whole_machine"]
    assert m["score-columns"]["ratio_to_floor"] == 0.95 and m["v2-binary"]["ratio_to_floor"] == 0.5
    assert _target(doc, "whole machine, 2 workers, score-columns")["met"] is True
    assert _target(doc, "whole machine, 2 workers, v2-binary")["met"] is False
    other = _doc()
    other["whole_machine"]["floor"]["best"] = "intra_op"  # as if one session with 2 threads had been faster
    assert performance_report.add_ratios(other)["whole_machine"]["v2-binary"]["ratio_to_floor"] == 0.6
    three = _doc()
    three["whole_machine"]["workers"] = 3  # the issue's target is for 2 workers
    assert _target(performance_report.add_ratios(three), "whole machine, 2 workers, v2-binary")["met"] is None


def test_the_tables_and_the_markdown_show_every_section(tmp_path):
    doc = performance_report.add_ratios(_doc())
    tables = {t[0].split(" ")[0] + " " + t[0].split(" ")[1]: t for t in performance_report.tables(doc)}
    _, head, rows = tables["MLServer 1.7.1"]
    assert head[:5] == [
        "batch",
        "mlserver rows/s",
        "mlserver / floor",
        "v2-json / mlserver",
        "score-columns / mlserver",
    ]
    assert rows[0][:5] == ["1", "50", "0.050", "4.00x", "6.00x"] and rows[1][3] == "2.00x" and rows[1][-1] == "2.0e-08"
    _, head, rows = tables["Ranking: one"]
    assert [r[1] for r in rows] == ["floor", "rows", "columns", "ranking"] and rows[3][2:4] == ["4,000", "0.400"]
    _, head, rows = tables["Whole machine"]
    assert [r[2] for r in rows] == ["1.000", "0.833", "0.950", "0.500"] and rows[2][-1] == "[1, 1]"
    assert "never pinned" in tables["Whole machine"][0]
    doc["files"] = {}
    plots = performance_report.write_plots(doc, tmp_path)
    assert set(plots) == {"throughput", "latency", "stages", "batching", "ranking"}
    assert all(p.read_bytes()[:8] == PNG for p in plots.values())
    md = tmp_path / "docs" / "PERF.md"
    performance_report.write_markdown(doc, plots, md)
    text = md.read_text()
    assert "| batch | floor rows/s | score-columns | v2-json | thin-columns | mlserver-v2-json |" in text
    assert "### MLServer 1.7.1 (uvloop 0.21.0) peer" in text and "- **mlserver-v2-json**: MLServer 1.7.1" in text
    assert "- **ranking**:" in text and "- **whole machine**: never pinned" in text
    assert "![ranking](figures/perf-ranking.png)" in text and (md.parent / "figures" / "perf-ranking.png").exists()


def test_without_ranking_there_is_no_ranking_plot(tmp_path):
    doc = performance_report.add_ratios(_doc(ranking=False))
    assert "ranking" not in performance_report.write_plots(doc, tmp_path)


@pytest.mark.parametrize("section", ["mlserver", "ranking", "machine"])
def test_a_report_without_one_section_still_renders(section):
    doc = performance_report.add_ratios(_doc(**{section: False}))
    assert "Targets of issue 6" in performance_report.text_report(copy.deepcopy(doc))
