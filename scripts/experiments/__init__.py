"""The paper's claims, reproduced (`apg experiment NAME`).

drivers.py         the resumable training runs of each experiment (select, auc, conditions, controls, ablation,
                   coldstart), recorded in docs/results/runs.jsonl
complexity.py      APG vs a static MLP: parameters, ONNX size, onnxruntime latency (docs/results/complexity.json)
results_report.py  docs/RESULTS.md from those records: tables, paired differences with their CIs
plots.py           the report's figures
"""
