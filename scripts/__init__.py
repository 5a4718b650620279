"""Tools, one package each: the `apg` console script (cli.py, options generated from the config dataclasses by
config_args.py), the load tester (loadtest/), the benchmarks (bench/), the paper's experiments (experiments/);
shell helpers (install_debian.sh, install_triton.sh) beside them."""
