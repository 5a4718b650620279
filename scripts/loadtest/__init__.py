"""Open-loop load generator for `POST /score` and KServe v2 `infer` (`apg loadtest`).

Open loop: the send times are fixed before the run (constant or Poisson arrivals at `--rate`), and each request
starts at its scheduled time whether or not earlier ones have returned. Latency is measured from the *scheduled*
time, so time spent queueing behind a slow server, or behind the `--concurrency` cap, counts (no coordinated
omission); the service time from the actual send is recorded too. When the server cannot keep up, the achieved
rate (successful completions per second) falls below the target and the latency grows: both are reported as is.

    apg loadtest --url http://127.0.0.1:8000 --rate 200 --duration 20 --rows 16
    apg loadtest --sweep-start 50 --sweep-factor 2 --sweep-max 3200 --slo-ms 25   # find the knee

Request bodies are sampled from the bundle's fitted schema (vocabularies, bucket edges) and serialised before the
run. Results go to `--out`: summary.json, requests.csv (one line per request) and latency.png.
Only loopback hosts are loaded unless `--allow-remote` is given.

One concern per module:
  args.py            the options of `apg loadtest` (argparse only: `--help` works without httpx)
  command.py         the command: plan, wait for /readyz, one run per rate, report
  plan.py            target check, schedule, sweep rates, rows sampled from the schema, request bodies
  records.py         LoadConfig and Records, what both engines fill
  raw_engine.py      plain sockets on one selector loop (http:// URLs): keeps its schedule at thousands of req/s
  httpx_engine.py    httpx (https://, or --client httpx): falls behind above ~400 req/s on one core
  grpc_engine.py     KServe v2 ModelInfer over grpc.aio (--protocol grpc)
  latency_report.py  percentiles, achieved rate, the knee, the table and the files
  locustfile.py      a closed-loop Locust user, for Locust's UI and ramps (not for latency numbers)
Shared with the other tools (scripts/clients/): the v2 codec, the raw HTTP client and the readiness wait.
"""
