"""`apg export --triton`: each layout's config.pbtxt against the bundle's tensor specs, the ONNX graph and the raw
features of the service's v2 metadata; the Python-backend folders carry the bundle's own encoder, byte for byte.
(tests/model/test_triton_server.py serves them on a real tritonserver.)"""

import filecmp
import json
import re
from pathlib import Path

import onnx
import pytest
from synthetic_bundle import build_bundle

import features
from features import Encoder
from scripts.cli import main
from scripts.triton import write_triton_repo
from scripts.triton.repository import BACKEND

NAME = "synthetic-apg"
V2_TYPES = {"BYTES": "TYPE_STRING", "FP64": "TYPE_FP64"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("bundle") / "v1").path


def parse_tensors(text: str, section: str) -> list[dict]:
    """The ``input [...]`` / ``output [...]`` blocks of a config.pbtxt as dicts."""
    body = re.search(rf"^{section} \[\n(.*?)\n\]$", text, re.S | re.M).group(1)
    out = []
    for block in re.findall(r"\{\n(.*?)\n\}", body, re.S):
        dims = re.search(r"dims: \[ ([-\d, ]*) \]", block).group(1)
        out.append(
            {
                "name": re.search(r'name: "(\w+)"', block).group(1),
                "data_type": re.search(r"data_type: (\w+)", block).group(1),
                "dims": [int(d) for d in dims.split(",") if d.strip()],
                "reshape": "reshape: { shape: [ ] }" in block,
                "optional": "optional: true" in block,
            }
        )
    return out


def v2_inputs(manifest: dict) -> list[dict]:
    """The raw-feature inputs as the service's v2 metadata declares them (service/routes/v2.py, _metadata)."""
    return [
        {
            "name": f.name,
            "data_type": V2_TYPES["FP64" if f.numeric else "BYTES"],
            "dims": [-1] if f.multi else [1],
            "reshape": False,
            "optional": not f.required,
        }
        for f in Encoder(manifest["schema"]).describe().values()
    ]


def assert_graph_config(folder: Path, manifest: dict, name: str) -> None:
    text = (folder / "config.pbtxt").read_text()
    assert f'name: "{name}"' in text and 'platform: "onnxruntime_onnx"' in text and "dynamic_batching" in text
    assert re.search(r"max_batch_size: (\d+)", text).group(1) == "4096"
    inputs, outputs = parse_tensors(text, "input"), parse_tensors(text, "output")
    assert [t["name"] for t in inputs] == [s["name"] for s in manifest["inputs"]]
    for t, spec in zip(inputs, manifest["inputs"], strict=True):
        assert t["data_type"] == "TYPE_INT64"
        assert t["dims"] == (spec["shape"][1:] or [1]) and t["reshape"] == (len(spec["shape"]) == 1)
    assert outputs == [{"name": "score", "data_type": "TYPE_FP32", "dims": [1], "reshape": True, "optional": False}]
    graph = onnx.load(str(folder / "1" / "model.onnx")).graph
    assert [i.name for i in graph.input] == [t["name"] for t in inputs]
    assert [o.name for o in graph.output] == ["score"]


def assert_carries_encoder(version: Path, bundle: Path) -> None:
    assert filecmp.cmp(version / "model.py", BACKEND, shallow=False)
    assert filecmp.cmp(version / "bundle.json", bundle / "bundle.json", shallow=False)
    source = Path(features.__file__).parent
    copied = sorted(p.name for p in (version / "features").iterdir())
    assert copied == sorted(p.name for p in source.glob("*.py"))
    assert all(filecmp.cmp(version / "features" / n, source / n, shallow=False) for n in copied)


def test_graph_layout_matches_bundle_and_graph(bundle, tmp_path):
    folder = write_triton_repo(bundle, tmp_path / "repo", layout="graph")
    assert folder == tmp_path / "repo" / NAME and sorted(p.name for p in (tmp_path / "repo").iterdir()) == [NAME]
    assert_graph_config(folder, json.loads((bundle / "bundle.json").read_text()), NAME)


def test_python_layout_takes_raw_features_and_scores_in_one_step(bundle, tmp_path):
    manifest = json.loads((bundle / "bundle.json").read_text())
    folder = write_triton_repo(bundle, tmp_path / "repo", layout="python")
    text = (folder / "config.pbtxt").read_text()
    assert 'backend: "python"' in text and "dynamic_batching" in text
    assert 'key: "apg_step" value: { string_value: "encode+score" }' in text
    assert parse_tensors(text, "input") == v2_inputs(manifest)
    assert [t["name"] for t in parse_tensors(text, "output")] == ["score"]
    assert filecmp.cmp(folder / "1" / "model.onnx", bundle / "model.onnx", shallow=False)
    assert_carries_encoder(folder / "1", bundle)


def test_ensemble_layout_wires_raw_features_through_encoder_to_graph(bundle, tmp_path):
    manifest = json.loads((bundle / "bundle.json").read_text())
    folder = write_triton_repo(bundle, tmp_path / "repo")
    repo = tmp_path / "repo"
    assert sorted(p.name for p in repo.iterdir()) == [NAME, f"{NAME}-onnx", f"{NAME}-preprocess"]
    ensemble = (folder / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in ensemble and parse_tensors(ensemble, "input") == v2_inputs(manifest)
    preprocess = (repo / f"{NAME}-preprocess" / "config.pbtxt").read_text()
    assert parse_tensors(preprocess, "input") == v2_inputs(manifest) and "dynamic_batching" in preprocess
    assert 'key: "apg_step" value: { string_value: "encode" }' in preprocess
    assert_carries_encoder(repo / f"{NAME}-preprocess" / "1", bundle)
    assert not (repo / f"{NAME}-preprocess" / "1" / "model.onnx").exists()
    assert_graph_config(repo / f"{NAME}-onnx", manifest, f"{NAME}-onnx")
    # step 1's outputs are exactly step 2's inputs, field by field, with the same dims
    encoded = {t["name"]: t["dims"] for t in parse_tensors(preprocess, "output")}
    graph = {t["name"]: t["dims"] for t in parse_tensors((repo / f"{NAME}-onnx" / "config.pbtxt").read_text(), "input")}
    step1, step2 = re.findall(r"    \{\n(.*?)\n    \}", ensemble, re.S)
    assert f'model_name: "{NAME}-preprocess"' in step1 and f'model_name: "{NAME}-onnx"' in step2
    maps = dict(re.findall(r'input_map \{ key: "(\w+)" value: "(\w+)" \}', step2))
    assert set(maps) == set(graph) and all(encoded[maps[k]] == graph[k] for k in graph)
    produced = dict(re.findall(r'output_map \{ key: "(\w+)" value: "(\w+)" \}', step1))
    assert set(produced.values()) == set(maps.values()) == set(encoded)


def test_dynamic_batching_can_be_turned_off(bundle, tmp_path):
    write_triton_repo(bundle, tmp_path / "repo", dynamic_batching=False)
    texts = [p.read_text() for p in (tmp_path / "repo").glob("*/config.pbtxt")]
    assert len(texts) == 3 and not any("dynamic_batching" in t for t in texts)
    with pytest.raises(ValueError, match="layout"):
        write_triton_repo(bundle, tmp_path / "x", layout="onnx")


def test_export_cli_writes_triton_repo(trained_runs, tmp_path, capsys):
    args = ["export", str(trained_runs["group"]), "--no-optimise"]
    assert main([*args, "--out", str(tmp_path / "b"), "--triton", str(tmp_path / "t")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parity"]["max_abs_diff"] <= 1e-5
    assert report["triton"].endswith("deepfm-apg-group")
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [
        "deepfm-apg-group",
        "deepfm-apg-group-onnx",
        "deepfm-apg-group-preprocess",
    ]
    assert (
        main([*args, "--out", str(tmp_path / "b2"), "--triton", str(tmp_path / "g"), "--triton-layout", "graph"]) == 0
    )
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["deepfm-apg-group"]
