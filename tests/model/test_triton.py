"""`apg export --triton`: the config.pbtxt matches the bundle's tensor specs and the ONNX graph."""

import json
import re

import onnx

from model.triton import write_triton_repo
from scripts.cli import main


def parse_tensors(text: str, section: str) -> list[dict]:
    """The ``input [...]`` / ``output [...]`` blocks of a config.pbtxt as dicts (name, data_type, dims, reshape)."""
    body = re.search(rf"^{section} \[\n(.*?)\n\]$", text, re.S | re.M).group(1)
    out = []
    for block in re.findall(r"\{\n(.*?)\n\}", body, re.S):
        dims = re.search(r"dims: \[ ([\d, ]*) \]", block).group(1)
        out.append(
            {
                "name": re.search(r'name: "(\w+)"', block).group(1),
                "data_type": re.search(r"data_type: (\w+)", block).group(1),
                "dims": [int(d) for d in dims.split(",") if d.strip()],
                "reshape": "reshape: { shape: [ ] }" in block,
            }
        )
    return out


def test_triton_repo_matches_bundle_and_graph(bundle_dir, tmp_path):
    folder = write_triton_repo(bundle_dir, tmp_path / "repo")
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    text = (folder / "config.pbtxt").read_text()
    assert folder.name == manifest["model"]["name"] and (folder / "1" / "model.onnx").exists()
    assert 'platform: "onnxruntime_onnx"' in text and "dynamic_batching" in text
    assert re.search(r"max_batch_size: (\d+)", text).group(1) == "4096"
    inputs, outputs = parse_tensors(text, "input"), parse_tensors(text, "output")
    assert [t["name"] for t in inputs] == [s["name"] for s in manifest["inputs"]]
    for t, spec in zip(inputs, manifest["inputs"], strict=True):
        assert t["data_type"] == "TYPE_INT64"
        assert t["dims"] == (spec["shape"][1:] or [1]) and t["reshape"] == (len(spec["shape"]) == 1)
    assert outputs == [{"name": "score", "data_type": "TYPE_FP32", "dims": [1], "reshape": True}]
    graph = onnx.load(str(folder / "1" / "model.onnx")).graph
    assert [i.name for i in graph.input] == [t["name"] for t in inputs]
    assert [o.name for o in graph.output] == ["score"]


def test_export_cli_writes_triton_repo(trained_runs, tmp_path, capsys):
    rc = main(
        [
            "export",
            str(trained_runs["group"]),
            "--out",
            str(tmp_path / "b"),
            "--triton",
            str(tmp_path / "t"),
            "--no-optimise",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parity"]["max_abs_diff"] <= 1e-5
    assert (tmp_path / "t" / "deepfm-apg-group" / "config.pbtxt").exists()
    assert report["triton"].endswith("deepfm-apg-group")
