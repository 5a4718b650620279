"""service/bundle.py and the loading half of service/runtime.py: every refusal names its problem."""

from __future__ import annotations

import hashlib
import json
import shutil

import onnx
import onnxruntime
import pytest
from service_testing import make_settings
from synthetic_bundle import build_bundle, edit_manifest

from service.bundle import load_bundle
from service.errors import BundleError, ConfigError
from service.runtime import load_model, provider_options, resolve_providers


def test_loads_valid_bundle(bundle):
    b = load_bundle(bundle.path)
    assert (b.name, b.version) == ("synthetic-apg", "v1")
    assert b.checksum == json.loads((bundle.path / "bundle.json").read_text())["files"]["model.onnx"]["sha256"]
    assert [s.name for s in b.inputs][:2] == ["user_id", "item_id"]
    assert b.graph_path(optimised=True).name == "model.onnx"  # no model.opt.onnx listed


def test_load_model_warms_up_and_reports_provider(bundle):
    model = load_model(bundle.path, make_settings(bundle.path))
    assert model.provider == "CPUExecutionProvider"
    assert model.run(model.encoder.encode_rows(model.encoder.example_rows(3))).shape == (3,)


@pytest.fixture
def copy(bundle, tmp_path):
    return shutil.copytree(bundle.path, tmp_path / "copy")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda p: (p / "bundle.json").unlink(), "missing bundle.json"),
        (lambda p: (p / "model.onnx").unlink(), "missing file 'model.onnx'"),
        (lambda p: edit_manifest(p, format_version=3), "unknown format_version 3"),
        (lambda p: (p / "model.onnx").write_bytes((p / "model.onnx").read_bytes() + b"x"), "sha256 mismatch"),
        (lambda p: (p / "bundle.json").write_text("{not json"), "not valid JSON"),
        (lambda p: edit_manifest(p, files={}), "does not list model.onnx"),
        (lambda p: edit_manifest(p, files={"../x": {"sha256": "0"}, "model.onnx": {"sha256": "0"}}), "outside"),
        (lambda p: edit_manifest(p, outputs=[{"name": "prob", "dtype": "float32", "shape": [-1]}]), "'score'"),
        (
            lambda p: edit_manifest(p, inputs=[{"name": "user_id", "dtype": "int64", "shape": [-1]}]),
            "differ from the schema",
        ),
        (lambda p: shutil.rmtree(p), "does not exist"),
    ],
)
def test_refuses_broken_bundles(copy, breakage, message):
    breakage(copy)
    with pytest.raises(BundleError, match=message):
        load_bundle(copy)


def test_refuses_graph_that_differs_from_manifest(tmp_path):
    # Manifest and schema agree on a renamed field; the graph still calls it "gender".
    b = build_bundle(tmp_path / "b")
    manifest = json.loads((b.path / "bundle.json").read_text())
    for f in manifest["schema"]["fields"]:
        if f["name"] == "gender":
            f["name"] = "sex"
    for i in manifest["inputs"]:
        if i["name"] == "gender":
            i["name"] = "sex"
    (b.path / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="graph inputs"):
        load_model(b.path, make_settings(b.path))


def test_refuses_graph_with_wrong_output_dtype(tmp_path):
    b = build_bundle(tmp_path / "b")
    edit_manifest(b.path, outputs=[{"name": "score", "dtype": "float32", "shape": [-1, 1]}])
    with pytest.raises(BundleError, match="output 'score'"):
        load_model(b.path, make_settings(b.path))


def test_refuses_unloadable_graph(tmp_path):
    b = build_bundle(tmp_path / "b")
    model = onnx.load(b.path / "model.onnx")
    model.graph.node[0].op_type = "NoSuchOp"
    onnx.save(model, b.path / "model.onnx")
    data = (b.path / "model.onnx").read_bytes()
    edit_manifest(b.path, files={"model.onnx": {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}})
    with pytest.raises(BundleError, match="onnxruntime cannot load"):
        load_model(b.path, make_settings(b.path))


def test_an_unparsable_fallback_graph_is_a_bundle_error(tmp_path):
    # Both graphs checksum-valid but not ONNX: the optimised one fails, then the fallback (it raised onnxruntime's
    # own error, a traceback and exit 3 at start-up, instead of BundleError).
    b = build_bundle(tmp_path / "b")
    unparsable_graphs(b.path)
    with pytest.raises(BundleError, match="onnxruntime cannot load .*model.onnx"):
        load_model(b.path, make_settings(b.path))


def unparsable_graphs(path) -> None:
    """model.onnx and model.opt.onnx made of bytes that are no ONNX graph, both listed with their true sha256."""
    files = {}
    for name in ("model.onnx", "model.opt.onnx"):
        (path / name).write_bytes(b"not an onnx graph")
        files[name] = {"sha256": hashlib.sha256(b"not an onnx graph").hexdigest()}
    edit_manifest(path, files=files)


def test_a_symlinked_manifest_is_refused_and_no_manifest_content_is_echoed(tmp_path):
    # A symlinked bundle.json could read any JSON file; refused before it is read. Neither is a stray field echoed.
    b, other = build_bundle(tmp_path / "b"), build_bundle(tmp_path / "other")
    (b.path / "bundle.json").unlink()
    (b.path / "bundle.json").symlink_to(other.path / "bundle.json")
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(b.path)
    edit_manifest(other.path, format_version="secret contents")
    with pytest.raises(BundleError, match="unknown format_version [(]") as info:
        load_bundle(other.path)
    assert "secret" not in info.value.message


def test_providers():
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    assert resolve_providers("auto")[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ConfigError, match="cuda"):
            resolve_providers("cuda")


def test_cuda_gets_tf32_off_unless_asked(tmp_path):
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    off, on = make_settings(tmp_path), make_settings(tmp_path, cuda_tf32=True)
    assert provider_options(both, off) == [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    assert provider_options(both, on)[0] == ("CUDAExecutionProvider", {"use_tf32": "1"})
    assert provider_options(["CPUExecutionProvider"], on) == ["CPUExecutionProvider"]


def test_refuses_graph_whose_tables_are_smaller_than_the_vocabulary(tmp_path):
    # The schema promises one more item than the graph's table holds: warm-up probes the top index.
    b = build_bundle(tmp_path / "b")
    manifest = json.loads((b.path / "bundle.json").read_text())
    manifest["schema"]["fields"][1]["vocab"].append("9999")
    (b.path / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="warm-up"):
        load_model(b.path, make_settings(b.path))


def test_a_version_1_bundle_still_loads(copy):
    edit_manifest(copy, format_version=1)  # version 2 only adds hashed fields (docs/BUNDLE.md, "Versions")
    assert load_bundle(copy).name == "synthetic-apg"
    edit_manifest(copy, format_version=True)
    with pytest.raises(BundleError, match="unknown format_version [(]"):
        load_bundle(copy)
