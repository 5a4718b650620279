"""scripts/bench/gpu_check.py without a GPU: it refuses clearly, and with --allow-cpu runs end to end (both services
started on 127.0.0.1) and reports parity and throughput in the shape the GPU run will. No timing assertions."""

from __future__ import annotations

import onnxruntime as ort
import orjson
import pytest

from scripts.bench import gpu_check


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="a CUDA provider is present")
def test_without_cuda_it_says_so(bundle_dir, tmp_path, capsys):
    assert gpu_check.main(["--bundle", str(bundle_dir), "--out", str(tmp_path)]) == 2
    assert "install onnxruntime-gpu" in capsys.readouterr().err
    assert not (tmp_path / "gpu-check.json").exists()


def test_cpu_stand_in_end_to_end(bundle_dir, tmp_path):
    argv = [
        "--bundle",
        str(bundle_dir),
        "--out",
        str(tmp_path),
        "--batch-sizes",
        "1,7,300",
        "--duration",
        "0.05",
        "--allow-cpu",
        "--batching-rates",
        "50,100",
    ]
    assert gpu_check.main(argv) == 0
    doc = orjson.loads((tmp_path / "gpu-check.json").read_bytes())
    assert set(doc["in_process"]) == {"1", "7", "300"}
    for cell in doc["in_process"].values():
        assert cell["max_abs_diff"] == 0.0  # CPU against CPU: bit-identical
        assert all(cell[name]["rows_per_s"] > 0 for name in ("cpu-1", "cpu-all", "cuda"))
    assert set(doc["http"]) == {"service-cuda", "service-cpu"}
    for served in doc["http"].values():
        assert served["provider"] == "CPUExecutionProvider"
        for cell in served["batches"].values():
            assert cell["max_abs_diff"] < 1e-6 and cell["rows_per_s"] > 0  # JSON round trip of float32 scores
    md = (tmp_path / "gpu-check.md").read_text()
    assert "| 300 |" in md and "service-cpu" in md and "Batch-1 knee" in md
    for mode in ("off", "on"):  # the sweeps ran against both services
        assert doc["batching"][mode]["runs"][0]["target_rate"] == 50 and doc["batching"][mode]["runs"][0]["requests"]


def test_parity_failure_is_an_error(bundle_dir, tmp_path, monkeypatch):
    # A CUDA session that disagrees with the CPU one must fail the check, not just print a number.
    real = gpu_check.sessions

    class Off:
        def __init__(self, model):
            self.model, self.encoder, self.provider, self.graph = model, model.encoder, model.provider, model.graph

        def run(self, feeds):
            return self.model.run(feeds) + 1e-3

    def with_offset(bundle, allow_cpu, tf32):
        models = real(bundle, allow_cpu, tf32)
        return {**models, "cuda": Off(models["cuda"])}

    monkeypatch.setattr(gpu_check, "sessions", with_offset)
    argv = [
        "--bundle",
        str(bundle_dir),
        "--out",
        str(tmp_path),
        "--batch-sizes",
        "1,5",
        "--duration",
        "0.02",
        "--allow-cpu",
        "--no-http",
    ]
    assert gpu_check.main(argv) == 1
    assert orjson.loads((tmp_path / "gpu-check.json").read_bytes())["in_process"]["5"]["max_abs_diff"] > 1e-4
