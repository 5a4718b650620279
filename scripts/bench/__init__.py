"""Benchmarks of the model and the service (`apg bench`), and the standalone measuring tools beside it.

harness.py             `apg bench`: every measurement of one run, bench.json, the plots, the markdown report
http_io.py             the measured HTTP paths and their request bytes, the service's stage metrics (/metrics)
measure.py             bounded timing loops, the in-process onnxruntime floor, the batching sweep, torch eager
saturate.py            batch 1 with the server saturated, and the bare ASGI references
thin.py                the thinnest FastAPI endpoint on the same session (a reference)
ranking.py             one user against N candidates, as rows, columns and context + candidates
machine.py             the whole machine: `apg serve --workers W` against the W-thread floor
peers/                 Triton, KServe and MLServer as measured peers (`apg bench peers`, `apg bench --mlserver`)
performance_report.py  ratios, targets, the printed tables and docs/PERFORMANCE.md
tables.py, plots.py    the tables and the PNG figures of that report
profile_service.py     `python -m scripts.bench.profile_service`: the service's cost per request, in process
gpu_check.py           `python -m scripts.bench.gpu_check`: the CUDA provider against the CPU one
reload.py              `python -m scripts.bench.reload`: how long POST /admin/reload takes to reach every worker
The servers, the raw HTTP client and the v2 bodies are the tools' own (scripts/clients/).
"""
