"""`apg bench training`: what training on a log of shards costs (issue 22), numbers for docs/TRAINING.md.

    apg bench training --out docs/results/training                   # every part, 1M and 10M synthetic rows
    apg bench training --parts gen,fit --rows 200000 --out /tmp/b    # a quick look

Parts (each a subprocess where it trains, so that its peak RSS is its own):
  gen     the synthetic log's generator: rows/s (`apg data synth`)
  fit     the streamed schema fit: rows/s over every row group of every split
  stream  the train split streamed alone (read, encoded, shuffled, batched; no training): rows/s on one core
  train   training rows/s per process, one epoch of --rows: DNN and DeepFM, each without and with self-wise APG;
          the in-memory trainer (--in-memory) vs the streamed one (0 and 1 loader workers); and for DNN and
          DeepFM+APG, one process vs --nproc 2
  rss     peak RSS of `apg train` (streamed, the whole process tree) on --rows vs --big-rows, one epoch, DeepFM+APG
  hashed  bundle.json bytes and a serving process's RSS growth for a field of 10^6 ids: a vocabulary vs hash_buckets
Writes OUT/training.json (after every run: an interrupted bench keeps what it measured, and a rerun measures
only the rest) and OUT/training.png; prints a table. Training runs use 1 torch thread per process, batch 1024,
--sparse-embeddings except where they compare 1 process with 2 (dense: DDP takes dense gradients only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTS = ("gen", "fit", "stream", "train", "rss", "hashed")
MODELS = (("dnn", "none"), ("dnn", "self"), ("deepfm", "none"), ("deepfm", "self"))
SPARSE = ["--sparse-embeddings"]
TRAINERS = {  # name -> extra `apg train` options: the three ways to read the log, with sparse embedding gradients
    "in-memory": ["--in-memory", *SPARSE],
    "streamed": ["--loader-workers", "0", *SPARSE],
    "streamed+1 loader": ["--loader-workers", "1", *SPARSE],
}
DDP_MODELS = (("dnn", "none"), ("deepfm", "self"))
DDP_TRAINERS = {  # one process against two, dense gradients (--sparse-embeddings is one process only)
    "streamed dense": ["--loader-workers", "0"],
    "streamed dense --nproc 2": ["--loader-workers", "0", "--nproc", "2", "--threads", "2"],
}
SMALL_TABLES = 4096  # the same, with every hashed field at 4,096 buckets: DDP all-reduces far fewer gradients


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for training.json and training.png")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic log for gen, fit, train, rss")
    p.add_argument("--big-rows", type=int, default=10_000_000, help="the larger log of the rss part")
    p.add_argument("--work", help="where the logs and runs go (default: a temporary folder, removed)")
    p.add_argument("--batch-size", type=int, default=1024, help="training batch")


def run_from_args(args) -> int:
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)} (known: {', '.join(PARTS)})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "training.json"
    results = json.loads(path.read_text()) if path.exists() else {}

    def save() -> None:
        results["machine"] = machine()
        path.write_text(json.dumps(results, indent=1))

    with tempfile.TemporaryDirectory(prefix="apg-bench-training-", dir=args.work) as work:
        bench = Bench(Path(work), args.rows, args.batch_size, results, save)
        for part in parts:
            print(f"== {part}", flush=True)
            results[part] = getattr(bench, part)(args.big_rows) if part == "rss" else getattr(bench, part)()
            save()  # each part kept as it ends (and each training run of the train part)
    print(table(results))
    plot(results, out / "training.png")
    return 0


def machine() -> dict:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_1m": round(load[0], 2), "python": sys.version.split()[0]}


class Bench:
    def __init__(self, work: Path, rows: int, batch_size: int, saved: dict, save) -> None:
        self.work, self.rows, self.batch_size, self.saved, self.save = work, rows, batch_size, saved, save

    def log(self, rows: int) -> tuple[Path, dict]:
        """A synthetic log of `rows` rows (made once), with its generator's summary."""
        from scripts.data.synth import SynthConfig, synthesize

        out = self.work / f"log-{rows}"
        if not out.exists():
            start = time.perf_counter()
            summary = synthesize(SynthConfig(rows=rows, seed=0), out)
            summary["wall_seconds"] = time.perf_counter() - start
            (self.work / f"log-{rows}.json").write_text(json.dumps(summary, default=str))
        return out, json.loads((self.work / f"log-{rows}.json").read_text())

    def gen(self) -> dict:
        _, summary = self.log(self.rows)  # writing rows/s, and the whole command's (tables and schema included)
        return {
            "rows": self.rows,
            "seconds": round(summary["wall_seconds"], 2),
            "table_build_seconds": round(summary["build_seconds"], 2),
            "rows_per_second": round(summary["rows_per_s"]),
            "rows_per_second_whole": round(self.rows / summary["wall_seconds"]),
        }

    def fit(self) -> dict:
        from features import Schema
        from model.shards import fit_log, open_log

        log_dir, _ = self.log(self.rows)
        spec = Schema.load(log_dir / "schema.json")
        start = time.perf_counter()
        fit_log(open_log(str(log_dir), spec), spec)
        seconds = time.perf_counter() - start
        return {"rows": self.rows, "seconds": round(seconds, 2), "rows_per_second": round(self.rows / seconds)}

    def stream(self) -> dict:
        from features import Schema
        from model.shards import fit_log, open_log
        from model.stream import StreamConfig, TrainStream

        log_dir, _ = self.log(self.rows)
        spec = Schema.load(log_dir / "schema.json")
        log = open_log(str(log_dir), spec)
        stream = TrainStream(log, fit_log(log, spec), StreamConfig(batch_size=self.batch_size))
        start, rows = time.perf_counter(), 0
        for _, y, _ in stream.loader(1, 0, {}):
            rows += len(y)
        seconds = time.perf_counter() - start
        return {"rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds)}

    def train(self) -> dict:
        log_dir, _ = self.log(self.rows)
        out = self.saved.setdefault("train", {})  # runs already measured (an interrupted bench) are kept
        jobs = [(m, a, t, x) for m, a in MODELS for t, x in TRAINERS.items()]
        jobs += [(m, a, t, x) for m, a in DDP_MODELS for t, x in DDP_TRAINERS.items()]
        small = ["--schema", str(self.small_tables(log_dir))]
        jobs += [(m, a, f"{t}, small tables", [*x, *small]) for m, a in DDP_MODELS for t, x in DDP_TRAINERS.items()]
        for model, apg, trainer, extra in jobs:
            if f"{model}+{apg} {trainer}" in out:
                continue
            run = self.work / f"run-{model}-{apg}-{trainer.replace(' ', '_')}"
            load = os.getloadavg()[0]
            metrics, peak = self.apg_train(log_dir, run, model, apg, extra)
            h = metrics["history"][0]
            rps = h["train_rows"] / h["train_loop_seconds"]
            procs = metrics.get("processes", 1)
            out[f"{model}+{apg} {trainer}"] = {
                "model": model,
                "apg": apg,
                "trainer": trainer,
                "processes": procs,
                "rows_per_second": round(rps),
                "rows_per_second_per_process": round(rps / procs),
                "peak_rss_mb": peak,
                "valid_auc": round(h["valid_auc"], 4),
                "loadavg_before": round(load, 2),
                "loadavg_after": round(os.getloadavg()[0], 2),
            }
            print(f"  {model}+{apg:4s} {trainer:26s} {rps:9.0f} rows/s  peak {peak} MB", flush=True)
            self.save()
        return out

    def small_tables(self, log_dir: Path) -> Path:
        """The log's schema with every hashed field at SMALL_TABLES buckets."""
        schema = json.loads((log_dir / "schema.json").read_text())
        for f in schema["fields"]:
            if "hash_buckets" in f:
                f["hash_buckets"] = min(f["hash_buckets"], SMALL_TABLES)
        path = self.work / "schema-small-tables.json"
        path.write_text(json.dumps(schema))
        return path

    def rss(self, big_rows: int) -> dict:
        out = {}
        for rows in (self.rows, big_rows):
            log_dir, _ = self.log(rows)
            metrics, peak = self.apg_train(
                log_dir, self.work / f"rss-{rows}", "deepfm", "self", ["--loader-workers", "1", *SPARSE]
            )
            out[str(rows)] = {"rows": rows, "peak_rss_mb": peak, "train_rows": metrics["history"][0]["train_rows"]}
            print(f"  {rows} rows: peak RSS {peak} MB", flush=True)
        small, big = out[str(self.rows)]["peak_rss_mb"], out[str(big_rows)]["peak_rss_mb"]
        return {**out, "ratio": round(big / small, 3)}

    def apg_train(self, log_dir: Path, run: Path, model: str, apg: str, extra: list[str]) -> tuple[dict, float]:
        cmd = [
            sys.executable,
            "-m",
            "scripts.cli",
            "train",
            "--data",
            str(log_dir),
            "--model",
            model,
            "--apg",
            apg,
            "--epochs",
            "1",
            "--batch-size",
            str(self.batch_size),
            "--threads",
            "1",
            "--quiet",
            "--checkpoint-steps",
            "0",
            "--out",
            str(run),
            *extra,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True)
        peak = watch_rss(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
        return json.loads((run / "metrics.json").read_text()), peak

    def hashed(self) -> dict:
        """The vocabulary's cost alone: the graph is the same size either way (its embedding has a row per id or
        per bucket), so this measures bundle.json and what reading it builds in a serving process."""
        out = {}
        for name, field in (
            ("vocabulary", {"vocab": [f"{i:08x}" for i in range(10**6)]}),
            ("hashed", {"hash_buckets": 2**17}),
        ):
            schema = {"name": "ids", "fields": [{"name": "user", "kind": "categorical", **field}]}
            path = self.work / f"{name}.json"
            path.write_text(json.dumps({"format_version": 2, "schema": schema}))
            code = (
                "import json,sys,resource\nfrom features import Encoder\n"
                "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
                "before = rss(); doc = json.loads(open(sys.argv[1], 'rb').read()); enc = Encoder(doc['schema'])\n"
                "enc.encode_rows([{'user': str(i)} for i in range(1000)]); del doc\n"
                "print(rss() - before)"
            )
            grown = int(
                subprocess.run(
                    [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
                ).stdout
            )
            out[name] = {"bundle_json_bytes": path.stat().st_size, "serving_rss_growth_mb": round(grown / 2**20, 1)}
            print(f"  {name}: bundle.json {path.stat().st_size} bytes, RSS +{grown / 2**20:.1f} MB", flush=True)
        return out


def watch_rss(proc: subprocess.Popen, every: float = 0.2) -> float:
    """Waits for proc; the peak of the summed RSS of it and all its descendants (loader workers, torchrun and its
    ranks, which start sessions of their own), in MB."""
    peak = 0

    def tree_rss() -> int:
        parents = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:  # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after its ")"
                parents[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        tree, total = {proc.pid}, 0
        for _ in range(8):  # descendants, level by level
            tree |= {p for p, parent in parents.items() if parent in tree}
        for pid in tree:
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError):
                continue
        return total

    while True:
        peak = max(peak, tree_rss())
        if proc.poll() is not None:
            return round(peak / 2**20, 1)
        time.sleep(every)


def table(r: dict) -> str:
    lines = []
    if "gen" in r:
        g = r["gen"]
        lines.append(
            f"generator: {g['rows_per_second']:,} rows/s writing, {g['rows_per_second_whole']:,} rows/s "
            f"with its {g['table_build_seconds']} s of tables ({g['rows']:,} rows)"
        )
    if "fit" in r:
        lines.append(f"schema fit: {r['fit']['rows_per_second']:,} rows/s")
    if "stream" in r:
        lines.append(f"the stream alone: {r['stream']['rows_per_second']:,} rows/s")
    if "train" in r:
        lines += [
            "| model | trainer | processes | rows/s | rows/s per process | peak RSS (MB) |",
            "|---|---|---|---|---|---|",
        ]
        for v in r["train"].values():
            lines.append(
                f"| {v['model']}+{v['apg']} | {v['trainer']} | {v['processes']} | {v['rows_per_second']:,} | "
                f"{v['rows_per_second_per_process']:,} | {v['peak_rss_mb']} |"
            )
    if "rss" in r:
        lines.append(f"peak RSS, big log / small log: {r['rss']['ratio']}")
    if "hashed" in r:
        for k, v in r["hashed"].items():
            lines.append(
                f"{k}: bundle.json {v['bundle_json_bytes']:,} bytes, serving RSS +{v['serving_rss_growth_mb']} MB"
            )
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    if "train" not in r:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(r["train"].values())
    models = list(dict.fromkeys(f"{v['model']}+{v['apg']}" for v in runs))
    trainers = list(dict.fromkeys(v["trainer"] for v in runs))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(trainers)
    for i, t in enumerate(trainers):
        ys = [
            next((v["rows_per_second"] for v in runs if v["trainer"] == t and f"{v['model']}+{v['apg']}" == m), 0)
            for m in models
        ]
        ax.bar([k + i * width for k in range(len(models))], ys, width, label=t)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(models))], models)
    ax.set_ylabel("training rows/s (all processes)")
    ax.set_title(f"One epoch of the synthetic log, batch 1024, {r.get('machine', {}).get('cpus')} CPUs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
