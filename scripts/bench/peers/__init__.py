"""The peers bench (`apg bench peers`, `python -m scripts.bench.peers`): Triton, KServe and MLServer measured against
the service's v2 routes. Nothing is imported here: the runtimes below run inside the peers' own environments.

command.py           `apg bench peers`: the servers, the same requests to each, the score check, the timed rounds
grpc_io.py           its gRPC side: a thin ModelInfer client, the closed loop and the saturated rate
report.py            the PERFORMANCE.md section and issue 15's targets
triton_peer.py       Triton 2.51.0 (scripts/install_triton.sh): the exported Python-backend models, three variants
kserve_peer.py       KServe 0.21.0: its virtual environment (`python -m scripts.bench.peers.kserve_peer setup`)
kserve_model.py      the KServe Model that serves a bundle (runs inside KServe's environment only)
mlserver_peer.py     MLServer 1.7.1 for `apg bench --mlserver`: its environment, model repository, process
mlserver_runtime.py  the MLServer runtime that serves a bundle (runs inside MLServer's environment only)
columns.py           v2 input tensors → raw feature columns, for both runtimes (standard library only)
"""
