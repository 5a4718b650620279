"""Read and validate a bundle (docs/BUNDLE.md, format version 1).

    bundle = load_bundle("bundles/default")   # manifest, checksums, schema → Bundle (raises BundleError)
    bundle.encoder.encode_rows([{...}])       # raw rows → {input name: int64 array}
    check_signature(bundle, session)          # the onnxruntime graph's inputs/outputs == the manifest's

Nothing here opens an onnxruntime session; runtime.py does, then calls `check_signature`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from features import FORMAT_VERSION, GRAPH, MANIFEST, OUTPUT_SPECS, READABLE_VERSIONS, Encoder, input_specs, sha256_of
from features.bundle import OPTIMISED_GRAPH
from service.errors import BundleError

# onnxruntime's NodeArg.type → the manifest's dtype names
_ORT_DTYPES = {
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(string)": "string",
}

__all__ = ["FORMAT_VERSION", "Bundle", "BundleError", "TensorSpec", "check_signature", "load_bundle"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]  # -1 = dynamic


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    version: str
    checksum: str  # sha256 of model.onnx, as listed in the manifest
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    encoder: Encoder
    manifest: dict[str, Any]

    def graph_path(self, optimised: bool) -> Path:
        """model.opt.onnx when asked for and listed in the manifest, else model.onnx."""
        if optimised and OPTIMISED_GRAPH in self.manifest["files"]:
            return self.path / OPTIMISED_GRAPH
        return self.path / GRAPH


def load_bundle(path: str | Path) -> Bundle:
    """Read `path/bundle.json`, verify every listed file's sha256, parse the schema; BundleError on any problem."""
    root = Path(path)
    try:
        exists = root.is_dir()
    except (OSError, ValueError):  # e.g. an embedded NUL byte
        exists = False
    if not exists:
        raise BundleError(f"bundle directory {str(root)!r} does not exist")
    manifest = _read_manifest(root / MANIFEST)
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):  # named only when it is a format version at
        told = f" {version}" if isinstance(version, int) and not isinstance(version, bool) else ""  # all: never echo
        readable = ", ".join(map(str, READABLE_VERSIONS))  # a file's contents
        raise BundleError(f"{MANIFEST}: unknown format_version{told} (this service reads {readable})")
    model = _require(manifest, "model", dict)
    files = _require(manifest, "files", dict)
    if GRAPH not in files:
        raise BundleError(f"{MANIFEST}: 'files' does not list {GRAPH}")
    for name, entry in files.items():
        _verify_file(root, name, entry)
    encoder = Encoder(_require(manifest, "schema", dict))
    bundle = Bundle(
        path=root,
        name=str(_require(model, "name", str)),
        version=str(_require(model, "version", str)),
        checksum=files[GRAPH]["sha256"],
        inputs=_tensor_specs(manifest, "inputs"),
        outputs=_tensor_specs(manifest, "outputs"),
        encoder=encoder,
        manifest=manifest,
    )
    _check_inputs_match_schema(bundle)
    return bundle


def check_signature(bundle: Bundle, session: Any) -> None:
    """The session's graph inputs/outputs must equal the manifest's (names, dtypes, ranks, fixed dims)."""
    for kind, declared, actual in (
        ("input", bundle.inputs, session.get_inputs()),
        ("output", bundle.outputs, session.get_outputs()),
    ):
        graph = {a.name: a for a in actual}
        if set(graph) != {d.name for d in declared}:
            raise BundleError(
                f"graph {kind}s {sorted(graph)} differ from the manifest's {sorted(d.name for d in declared)}"
            )
        for spec in declared:
            arg = graph[spec.name]
            dtype = _ORT_DTYPES.get(arg.type, arg.type)
            if dtype != spec.dtype or not _shape_matches(spec.shape, arg.shape):
                raise BundleError(
                    f"graph {kind} {spec.name!r} is {dtype}{list(arg.shape)}, "
                    f"the manifest says {spec.dtype}{list(spec.shape)}"
                )


def _shape_matches(declared: tuple[int, ...], graph: list) -> bool:
    # A graph dim is an int, or a str/None when symbolic. A dynamic (-1) manifest dim needs a symbolic one.
    if len(declared) != len(graph):
        return False
    for want, have in zip(declared, graph, strict=True):
        fixed = isinstance(have, int) and have >= 0
        if (want == -1 and fixed) or (want != -1 and fixed and have != want):
            return False
    return True


def _read_manifest(path: Path) -> dict[str, Any]:
    if path.is_symlink():  # it could point at any readable file; the graph and its other files are checked in place
        raise BundleError(f"{path.name} in {str(path.parent)!r} is a symbolic link; it must be a regular file")
    if not path.is_file():
        raise BundleError(f"missing {path.name} in {str(path.parent)!r}")
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BundleError(f"{path.name} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path.name} must hold a JSON object")
    return manifest


def _require(obj: dict, key: str, kind: type) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise BundleError(f"{MANIFEST}: {key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _verify_file(root: Path, name: str, entry: Any) -> None:
    target = (root / name).resolve()
    if root.resolve() not in target.parents:
        raise BundleError(f"{MANIFEST}: file {name!r} lies outside the bundle")
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise BundleError(f"{MANIFEST}: files[{name!r}] needs a 'sha256'")
    if not target.is_file():
        raise BundleError(f"missing file {name!r} listed in {MANIFEST}")
    digest = sha256_of(target)
    if digest != entry["sha256"].lower():
        raise BundleError(f"sha256 mismatch for {name!r}: manifest {entry['sha256']}, file {digest}")
    if "bytes" in entry and entry["bytes"] != target.stat().st_size:
        raise BundleError(f"size mismatch for {name!r}: manifest {entry['bytes']}, file {target.stat().st_size}")


def _tensor_specs(manifest: dict, key: str) -> tuple[TensorSpec, ...]:
    specs = []
    for item in _require(manifest, key, list):
        try:
            specs.append(TensorSpec(str(item["name"]), str(item["dtype"]), tuple(int(d) for d in item["shape"])))
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{MANIFEST}: each of {key!r} needs name, dtype and shape") from None
    return tuple(specs)


def _check_inputs_match_schema(bundle: Bundle) -> None:
    # The encoder produces one int64 array per schema field: (B,) or (B, max_len) for multi (features.input_specs).
    expected = {s["name"]: (s["dtype"], tuple(s["shape"])) for s in input_specs(bundle.encoder.schema)}
    declared = {s.name: s for s in bundle.inputs}
    if set(declared) != set(expected):
        raise BundleError(f"manifest inputs {sorted(declared)} differ from the schema's fields {sorted(expected)}")
    for name, (dtype, shape) in expected.items():
        if (declared[name].dtype, declared[name].shape) != (dtype, shape):
            spec = declared[name]
            raise BundleError(
                f"manifest input {name!r} is {spec.dtype}{list(spec.shape)}, schema needs {dtype}{list(shape)}"
            )
    want = OUTPUT_SPECS[0]  # shapes are checked against the graph by check_signature
    if [(s.name, s.dtype) for s in bundle.outputs] != [(want["name"], want["dtype"])]:
        raise BundleError(f"the manifest must declare exactly one output: {want['name']!r}, {want['dtype']}")
