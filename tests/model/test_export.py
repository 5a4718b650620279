"""ONNX export: parity with PyTorch, S_i generated in-graph per row, merge before export, bundle contents."""

import pytest

pytest.importorskip("torch")  # training-side tests: skipped where torch is absent (a serving-only install)

import json

import numpy as np

from model.export import export_onnx, ort_predict, ort_session, parity
from model.train import load_run


@pytest.mark.parametrize("condition", ["none", "group", "mix", "self"])
def test_onnx_matches_pytorch_on_real_rows(trained_runs, ml100k_small, condition, tmp_path):
    model, schema, _ = load_run(trained_runs[condition])
    from model.data import encode_table

    # encode real rows with this run's own fitted schema (its vocabularies)
    x = encode_table(schema, {k: v[:1000] for k, v in ml100k_small.table.items()})
    session = ort_session(export_onnx(model, schema, tmp_path / "m.onnx"))
    check = parity(model, session, x, batch_sizes=(1, 7, 1000))
    assert check["max_abs_diff"] <= 1e-5, check
    assert set(check["by_batch_size"]) == {1, 7, 1000}


def graph_s(run_dir, tmp_path, x):
    model, schema, _ = load_run(run_dir)
    sess = ort_session(export_onnx(model, schema, tmp_path / "s.onnx", expose_s=True))
    return sess.run(["apg_s"], x)[0]


@pytest.mark.parametrize(
    ("condition", "changed"), [("group", "user_activity"), ("mix", "user_id"), ("self", "item_id")]
)
def test_rows_differing_only_in_condition_fields_get_different_s(
    trained_runs, ml100k_small, tmp_path, condition, changed
):
    x, _ = ml100k_small.part("test")
    row = {k: np.repeat(v[:1], 2, axis=0) for k, v in x.items()}
    row[changed] = np.array([2, 3], dtype=np.int64)  # two different known values of one field
    s = graph_s(trained_runs[condition], tmp_path, row)
    assert s.shape[0] == 2 and np.abs(s[0] - s[1]).max() > 1e-7
    same = {k: np.repeat(v[:1], 2, axis=0) for k, v in x.items()}
    s_same = graph_s(trained_runs[condition], tmp_path, same)
    assert np.array_equal(s_same[0], s_same[1])


def test_exported_graph_has_only_merged_factors(trained_runs, tmp_path):
    import onnx

    model, schema, _ = load_run(trained_runs["self"])  # trained with over-parameterisation P=16
    assert any("u_l" in n for n, _ in model.named_parameters())
    graph = onnx.load(str(export_onnx(model, schema, tmp_path / "m.onnx"))).graph
    names = [i.name for i in graph.initializer]
    assert not any(part in n for n in names for part in ("u_l", "u_r", "v_l", "v_r"))
    assert [i.name for i in graph.input] == [f.name for f in schema.fields]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"


def test_bundle_manifest(bundle_dir):
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    assert manifest["format_version"] == 2
    assert manifest["model"]["name"] == "deepfm-apg-self"
    assert manifest["parity"]["max_abs_diff"] <= 1e-5
    assert set(manifest["files"]) == {"model.onnx", "model.opt.onnx"}
    assert [i["name"] for i in manifest["inputs"]] == [f["name"] for f in manifest["schema"]["fields"]]
    assert manifest["apg"]["condition"] == "self" and manifest["apg"]["rank"] == 8


@pytest.mark.parametrize("condition", ["group", "self"])
def test_low_rank_apg_graph_is_smaller_than_the_static_one(ml100k_small, tmp_path, condition):
    from model.apg import APGConfig
    from model.zoo import ModelConfig, build_model

    sizes = {}
    for name, apg in (("static", APGConfig()), ("apg", APGConfig(condition, rank=8))):
        model = build_model(ml100k_small.schema, ModelConfig("deepfm", hidden=(256, 128), apg=apg))
        sizes[name] = export_onnx(model, ml100k_small.schema, tmp_path / f"{name}.onnx").stat().st_size
    print(f"DeepFM [256, 128] model.onnx bytes: {sizes}")
    assert sizes["apg"] < sizes["static"]


def test_quantised_variant_reports_auc_change(trained_runs, tmp_path):
    from model.bundle import write_bundle

    report = write_bundle(trained_runs["none"], tmp_path / "q", optimise=False, quantise=True)
    assert set(report["files"]) == {"model.onnx", "model.int8.onnx"}
    assert abs(report["int8"]["auc_change"]) < 0.05
    x = {
        i.name: np.zeros((3, 6) if i.name == "genres" else 3, dtype=np.int64)
        for i in ort_session(tmp_path / "q" / "model.int8.onnx").get_inputs()
    }
    assert ort_predict(ort_session(tmp_path / "q" / "model.int8.onnx"), x).shape == (3,)


def test_a_refused_export_leaves_the_old_bundle_and_no_temporary_folder(trained_runs, tmp_path, monkeypatch):
    import model.bundle as mb

    out = tmp_path / "b"
    first = mb.write_bundle(trained_runs["none"], out, optimise=False)
    monkeypatch.setattr(mb, "PARITY_TOLERANCE", -1.0)  # every export now fails its parity check
    with pytest.raises(RuntimeError, match="parity failed"):
        mb.write_bundle(trained_runs["none"], out, optimise=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert json.loads((out / "bundle.json").read_text())["model"] == first["model"]


@pytest.mark.parametrize(
    "options", [{"cond_embed": True}, {"cond_embed": True, "cond_norm": True, "gen_init_std": 0.01}]
)
def test_group_wise_with_its_own_condition_embedding_exports_with_parity(ml100k_small, tmp_path, options):
    import torch

    from model.apg import APGConfig
    from model.zoo import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig("deepfm", hidden=(32, 16), apg=APGConfig("group", rank=4, generate_bias=True, **options))
    model = build_model(ml100k_small.schema, cfg).eval()
    assert {n.split(".")[2] for n, _ in model.condition.named_parameters()} == {"user_activity"}  # own.tables.<f>
    x, _ = ml100k_small.part("test")
    session = ort_session(export_onnx(model, ml100k_small.schema, tmp_path / "g.onnx"))
    assert parity(model, session, x, batch_sizes=(1, 7, 1000))["max_abs_diff"] <= 1e-5
    s = ort_session(export_onnx(model, ml100k_small.schema, tmp_path / "s.onnx", expose_s=True))
    row = {k: np.repeat(v[:1], 2, axis=0) for k, v in x.items()}
    row["user_activity"] = np.array([2, 3], dtype=np.int64)
    out = s.run(["apg_s"], row)[0]
    assert np.abs(out[0] - out[1]).max() > 1e-7 if options.get("gen_init_std") else out.shape[0] == 2


def test_export_needs_no_data_and_refuses_a_schema_that_is_not_the_trained_one(trained_runs, tmp_path, monkeypatch):
    import shutil

    from model.bundle import write_bundle

    run = shutil.copytree(trained_runs["none"], tmp_path / "run")
    monkeypatch.setenv("APG_CACHE_DIR", str(tmp_path / "no-data-here"))  # a refit would have to fetch MovieLens
    report = write_bundle(run, tmp_path / "bundle", optimise=False)
    assert report["parity"]["max_abs_diff"] <= 1e-5 and not (tmp_path / "no-data-here").exists()
    schema = json.loads((run / "schema.json").read_text())
    schema["fields"][0]["vocab"] = schema["fields"][0]["vocab"][::-1]  # same shape, other indices
    (run / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(ValueError, match="not the schema this model was trained with"):
        write_bundle(run, tmp_path / "bundle2")
    assert not (tmp_path / "bundle2").exists()


def test_tiny_weights_are_written_as_zero_and_the_scores_do_not_change(ml100k_small, tmp_path):
    import onnx
    import torch

    from model.export import TINY
    from model.zoo import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ml100k_small.schema, ModelConfig("dnn", hidden=(32, 16))).eval()
    params = [p for p in model.parameters() if p.dim() == 2]
    with torch.no_grad():  # what weight decay leaves behind: entries near 1e-35 (subnormal products, slow on CPU)
        for p in params:
            p.view(-1)[::3] = 3e-35
    before = [p.detach().clone() for p in params]
    path = export_onnx(model, ml100k_small.schema, tmp_path / "m.onnx")
    assert all(
        torch.equal(p, b) for p, b in zip(params, before, strict=True)
    )  # the trained model itself is left as it was
    weights = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer]
    floats = np.concatenate([w.ravel() for w in weights if w.dtype == np.float32])
    assert not ((floats != 0) & (np.abs(floats) < TINY)).any() and (floats == 0).sum() >= sum(
        p.numel() // 3 for p in params
    )
    x, _ = ml100k_small.part("test")
    assert parity(model, ort_session(path), x, batch_sizes=(1, 1000))["max_abs_diff"] <= 1e-6


@pytest.mark.parametrize("condition", ["none", "self"])
def test_a_batch_norm_tower_trains_and_exports_with_parity(ml100k_small, tmp_path, condition):
    import torch

    from model.apg import APGConfig
    from model.train import TrainConfig, fit
    from model.zoo import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig("dnn", hidden=(32, 16), batch_norm=True, apg=APGConfig(condition, rank=4))
    model = build_model(ml100k_small.schema, cfg)
    norms = [m for m in model.tower.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert [m.num_features for m in norms] == [32, 16]  # one per tower layer, in both arms
    n = len(ml100k_small.part("train")[1])
    fit(model, ml100k_small, TrainConfig(epochs=1, batch_size=n - 1, threads=1), progress=False)  # last batch: 1 row
    assert all(m.num_batches_tracked.item() == 1 and m.running_var.ne(1).any() for m in norms)  # trained on one
    model.eval()
    x, _ = ml100k_small.part("test")
    session = ort_session(export_onnx(model, ml100k_small.schema, tmp_path / "bn.onnx"))
    assert parity(model, session, x, batch_sizes=(1, 7, 1000))["max_abs_diff"] <= 1e-5  # running statistics in-graph
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and not ModelConfig().batch_norm
