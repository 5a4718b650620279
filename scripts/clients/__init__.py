"""What every tool (apg loadtest, apg bench and its peers, apg abtest) and the tests' live servers share to talk to
a server, written once.

v2.py      the KServe v2 codec: rows → tensors → JSON, the binary extension or a gRPC ModelInferRequest, with the
           one multi-valued rule (the service's: a list is a [B, K] row); the scores out of the answers
http.py    the raw HTTP/1.1 client: request bytes, Content-Length framing, a keep-alive Connection, non-blocking
           helpers for selector loops, and the readiness wait (GET /readyz until 200)
launch.py  servers as subprocesses on free loopback ports: `apg serve`'s command, a clean environment, Servers
           (started, waited for, stopped together), start_apg, stop
"""
