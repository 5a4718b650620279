"""`apg bench training` end to end on tiny logs: each part writes its numbers, the table and the plot render."""

from __future__ import annotations

import json

import pytest

from scripts.bench.training import plot, table
from scripts.cli import main


@pytest.mark.slow
def test_every_part_but_the_long_one_runs_and_writes_its_numbers(tmp_path):
    out = tmp_path / "out"
    argv = [
        "bench",
        "training",
        "--parts",
        "gen,fit,stream,rss,hashed",
        "--rows",
        "3000",
        "--big-rows",
        "6000",
        "--batch-size",
        "256",
        "--out",
        str(out),
        "--work",
        str(tmp_path),
    ]
    assert main(argv) == 0
    r = json.loads((out / "training.json").read_text())
    assert r["gen"]["rows"] == 3000 and r["gen"]["rows_per_second"] > 0 and r["fit"]["rows_per_second"] > 0
    assert r["stream"]["rows"] == 2400 and r["stream"]["rows_per_second"] > 0  # the train split, every row once
    assert r["rss"]["3000"]["train_rows"] > 2000 and r["rss"]["ratio"] > 0
    vocab, hashed = r["hashed"]["vocabulary"], r["hashed"]["hashed"]
    assert vocab["bundle_json_bytes"] > 10**7 > 10**3 > hashed["bundle_json_bytes"]  # 10^6 ids vs no vocabulary
    assert vocab["serving_rss_growth_mb"] > 10 * max(hashed["serving_rss_growth_mb"], 1)


TRAINERS = (("in-memory", 1, 30_000), ("streamed --nproc 2", 2, 50_000))


def test_the_table_and_plot_of_the_train_part(tmp_path):
    runs = {
        f"{m} {t}": {
            "model": m.split("+")[0],
            "apg": m.split("+")[1],
            "trainer": t,
            "processes": p,
            "rows_per_second": rps,
            "rows_per_second_per_process": rps // p,
            "peak_rss_mb": 900.0,
        }
        for m in ("dnn+none", "deepfm+self")
        for t, p, rps in TRAINERS
    }
    text = table({"train": runs, "machine": {"cpus": 2}})
    assert "| deepfm+self | streamed --nproc 2 | 2 | 50,000 | 25,000 | 900.0 |" in text
    plot({"train": runs, "machine": {"cpus": 2}}, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 10_000


def test_unknown_parts_are_refused(tmp_path, capsys):
    assert main(["bench", "training", "--parts", "gen,nope", "--out", str(tmp_path)]) == 2
    assert "unknown parts ['nope']" in capsys.readouterr().err
