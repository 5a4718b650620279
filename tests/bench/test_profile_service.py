"""scripts/bench/profile_service.py: every body shape is answered 200 in process, and the report is printed."""

from __future__ import annotations

import re

import pytest

from scripts.bench import profile_service


@pytest.mark.parametrize("body", profile_service.BODIES)
def test_each_body_scores_in_process(bundle_dir, body, capsys):
    argv = ["--bundle", str(bundle_dir), "--batch", "5", "--body", body, "--requests", "3", "--rounds", "1"]
    assert profile_service.main(argv) == 0  # a non-200 answer raises
    line = capsys.readouterr().out.strip().splitlines()[0]
    assert re.fullmatch(rf"service, {body} body, batch 5: [\d.]+ µs per request in process \([\d,]+ rows/s\).*", line)


def test_profile_and_thin(bundle_dir, capsys):
    common = ["--bundle", str(bundle_dir), "--batch", "2", "--requests", "3", "--rounds", "1"]
    assert profile_service.main([*common, "--profile"]) == 0
    assert "tottime" in capsys.readouterr().out  # cProfile's table
    assert profile_service.main([*common, "--thin"]) == 0
    assert capsys.readouterr().out.startswith("thin reference, columns body")
    with pytest.raises(SystemExit):
        profile_service.main([*common, "--thin", "--body", "rows"])


def test_onnx_only(bundle_dir, capsys):
    assert profile_service.main(["--bundle", str(bundle_dir), "--onnx-only", "--requests", "20"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(re.fullmatch(r"session.run, batch 1, .+: [\d.]+ µs", line) for line in lines)


def test_encode_only(bundle_dir, capsys):
    assert profile_service.main(["--bundle", str(bundle_dir), "--encode-only", "--batch", "8", "--requests", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(re.fullmatch(r"encode_columns, batch 8, .+: [\d.]+ µs", line) for line in lines)
