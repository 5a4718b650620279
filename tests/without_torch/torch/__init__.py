# On PYTHONPATH, this shadows the real torch: `make test` runs the torch-free part of the suite with it, so that
# a serving-only install (no torch) is known to collect and pass. Tests that need torch skip (importorskip).
raise ModuleNotFoundError(
    "torch is hidden for this run (tests/without_torch): the serving half must not need it", name="torch"
)
