"""scripts/bench/overload.py against a real server on 127.0.0.1 (a synthetic bundle; no timing assertions)."""

from __future__ import annotations

import pytest
from live_server import free_port
from synthetic_bundle import build_bundle

from scripts.bench.overload import main


@pytest.mark.slow
def test_one_round_reports_the_costs_of_a_scored_and_a_refused_answer(tmp_path, capsys):
    bundle = build_bundle(tmp_path / "v1")
    args = ["--bundle", str(bundle.path), "--rows", "4", "--rounds", "1", "--seconds", "0.5"]
    args += ["--port", str(free_port())]
    assert main(args) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("round 1, 4 rows: ")]
    fields = dict(part.rsplit(" ", 1) for part in line.split(": ", 1)[1].split(", "))
    assert set(fields) == {"K", "3K goodput", "refused", "s_us", "r_us", "r/s", "goodput 3K/K", "per CPU s 3K/K"}
    assert float(fields["K"]) > 0 and float(fields["s_us"]) > 0
