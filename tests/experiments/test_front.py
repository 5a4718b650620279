"""The efficiency front's driver: points, the store, latency ratios, the best base's interval and the cheapest APG
point inside it; a tiny real run (train, export, time) that resumes."""

from __future__ import annotations

import json

import pytest

from scripts.experiments import front
from scripts.experiments.front import Point, latency_path, read_store, store_path, summarise


def test_points_parse_and_name():
    assert Point.parse("256x128") == Point((256, 128), 0) and Point.parse("256x128").name == "base 256x128"
    assert Point.parse("1024x512:16").name == "APG 1024x512 K=16" and Point.parse("64x32:4").slug == "APG-64x32-K4"
    with pytest.raises(ValueError, match="WIDTHS or WIDTHS:K"):
        Point.parse("wide")


def write(tmp_path, records, seconds):
    path = store_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    latency_path(tmp_path).write_text(json.dumps({"seconds": seconds}))


def record(point: Point, seed: int, auc: float, params: int = 100) -> dict:
    return {
        "point": point.name,
        "hidden": list(point.hidden),
        "rank": point.rank,
        "seed": seed,
        "test": {"auc": auc},
        "params": params,
        "bundle_bytes": 4096,
    }


def test_cheapest_apg_within_the_best_bases_interval(tmp_path):
    base, wide = Point((256, 128)), Point((1024, 512))
    small, big = Point((1024, 512), 4), Point((1024, 512), 32)
    records = [record(base, s, 0.81 + 0.001 * s) for s in (1, 2, 3)]
    records += [record(wide, s, 0.815 + 0.001 * s, 900) for s in (1, 2, 3)]  # the best base: 81.70 [81.45, 81.95]
    records += [record(small, 1, 0.8120), record(big, 1, 0.8175)]
    seconds = {
        base.name: {"1": 1e-4, "1024": 2e-3},
        wide.name: {"1": 3e-4, "1024": 1e-2},
        small.name: {"1": 2e-4, "1024": 4e-3},  # cheaper, but 81.20 is outside the interval
        big.name: {"1": 3e-4, "1024": 6e-3},
    }
    write(tmp_path, records, seconds)
    s = summarise(tmp_path)
    assert s["best_base"] == wide.name
    assert s["cheapest_apg"] == big.name and s["cheapest_ratio"] == pytest.approx(0.6)
    assert s["points"][wide.name]["ratio"][1024] == pytest.approx(5.0)  # to the study's base tower
    assert s["dominated"] == [small.name]  # the study's base tower is as accurate (81.20) and faster
    text = front.report(tmp_path, tmp_path / "front.png")
    assert "| APG 1024x512 K=32 | 1 | 81.75 |" in text and "at 0.60× the best base's latency" in text
    assert (tmp_path / "front.png").stat().st_size > 10_000


def test_a_best_base_on_one_seed_names_no_apg_point(tmp_path):
    write(tmp_path, [record(Point((256, 128)), 1, 0.81), record(Point((256, 128), 8), 1, 0.82)], {})
    s = summarise(tmp_path)
    assert s["best_base"] == "base 256x128" and s["cheapest_apg"] is None


@pytest.mark.slow
def test_a_tiny_front_trains_exports_times_and_resumes(tmp_path):
    points = [Point((16,)), Point((16,), 4)]
    said = []
    kwargs = {"say": said.append, "data": "ml-100k", "limit": 3000}
    front.run(points, (1,), tmp_path, tmp_path / "runs", **kwargs)
    front.run(points, (1,), tmp_path, tmp_path / "runs", **kwargs)
    assert [s for s in said if s.startswith("front:")] == ["front: base 16 seed 1", "front: APG 16 K=4 seed 1"]
    stored = read_store(store_path(tmp_path))
    assert set(stored) == {("base 16", 1), ("APG 16 K=4", 1)}
    assert all(r["bundle_bytes"] > r["graph_bytes"] > 0 for r in stored.values())
    assert stored[("APG 16 K=4", 1)]["adaptation"]["layers"] and stored[("base 16", 1)]["adaptation"] is None
    rows = {line.split(" | ")[0]: line for line in front.report(tmp_path, tmp_path / "front.png").splitlines()}
    assert "–" not in rows["| APG 16 K=4"].split(" | ")[-2] + rows["| APG 16 K=4"].split(" | ")[-1]  # spread, cost
    assert rows["| base 16"].endswith("| – | – |")  # a base tower has no S
    out = front.measure(tmp_path, rounds=2, repeats=3, say=said.append)
    assert set(out["seconds"]) == {"base 16", "APG 16 K=4"} and all(v["1024"] > 0 for v in out["seconds"].values())
