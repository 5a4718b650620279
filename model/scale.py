"""Training on a log of Parquet shards: streamed, on one process or many (torchrun + DDP), resumable.

    apg train --data DIR --out RUN [--nproc 2] ...     # DIR: what `apg data synth` writes, or any shards
    metrics = train_log_run(model_cfg, cfg, scale_cfg, "RUN")

The same ``fit`` as in memory (model/train.py) over a ``Streamed`` source. Before anything is written, rank 0 checks
every shard's footer and fits the schema in one streaming pass (reading every row group once), so a bad shard fails
with its file, row group and column and leaves no run directory. Rank 0 then writes ``RUN/schema.json`` and
checkpoints (``RUN/checkpoint.pt``: weights, optimiser, TrainState, each rank's data position) every
``checkpoint_steps`` steps and at each epoch's end; the same command on the same RUN resumes from it. The run
directory at the end is an ordinary one (model.pt, schema.json, metrics.json, test.npz): ``apg export`` takes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from features import Schema
from features.metrics import evaluate
from model.data import DataError
from model.distributed import Dist
from model.evaluate import optional_fields
from model.shards import Log, fit_log, open_log, read_split, schema_path
from model.stream import StreamConfig, TrainStream, score_split
from model.train import TEST_SPLIT, TrainConfig, TrainState, count_params, fit, seed_everything, sparse_embeddings
from model.train import identity as train_identity
from model.zoo import CTRModel, ModelConfig, build_model

CHECKPOINT = "checkpoint.pt"
FITTED_SCHEMA = "APG_FITTED_SCHEMA"  # `apg train --nproc N` fits before it starts the ranks, and says where
PER_RANK = ("positions", "loss", "rows", "seconds")  # TrainState fields each rank has its own of
TEST_SAMPLE = 20_000  # encoded test rows kept in the run for export's parity check and the adaptation report


@dataclass(frozen=True)
class ScaleConfig:
    # `help` in the metadata becomes the options of `apg train` (scripts/config_args.py)
    nproc: int = field(default=1, metadata={"help": "processes on this machine (torchrun + DDP; a log of shards)"})
    loader_workers: int = field(
        default=1, metadata={"help": "dataloader processes per rank that read and encode row groups (0: in the rank)"}
    )
    window_rows: int = field(default=131_072, metadata={"help": "shuffle buffer: rows read and permuted together"})
    checkpoint_steps: int = field(
        default=1000, metadata={"help": "checkpoint every N steps (and at each epoch's end); 0: epoch ends only"}
    )
    in_memory: bool = field(default=False, metadata={"help": "read a log of shards whole into memory instead"})
    sparse_embeddings: bool = field(
        default=False,
        metadata={
            "help": "sparse embedding gradients: SparseAdam updates only the rows a batch touches (no weight "
            "decay on them), Adam the rest; large hashed tables train several times faster (one process)"
        },
    )


class Streamed:
    """fit()'s source over a log: this rank's share of each epoch, and metrics over every rank's rows."""

    def __init__(self, log: Log, schema: Schema, cfg: TrainConfig, scale: ScaleConfig, dist: Dist, min_batch: int):
        droppable = tuple(optional_fields(schema)) if cfg.missing_rate > 0 else ()
        stream_cfg = StreamConfig(cfg.batch_size, cfg.seed, scale.window_rows, min_batch, cfg.missing_rate, droppable)
        self.stream = TrainStream(log, schema, stream_cfg, dist.rank, dist.world)
        self.log, self.schema, self.cfg, self.scale, self.dist = log, schema, cfg, scale, dist

    def planned(self, epoch: int) -> int:
        return self.dist.least(self.stream.planned_batches(epoch, max(self.scale.loader_workers, 1)))

    def batches(self, epoch: int, skip: dict):
        device = self.cfg.device
        for x, y, worker in self.stream.loader(epoch, self.scale.loader_workers, skip):
            yield {k: v.to(device) for k, v in x.items()}, y.to(device), int(worker)

    def scores(self, model: CTRModel, split: str) -> dict[str, np.ndarray]:
        """Every rank's scores of the split, merged into the order one process would read them in."""
        merged = self.dist.gather(score_split(model, self.log, self.schema, split, self.dist.rank, self.dist.world))
        order = np.argsort(merged["key"], kind="stable")
        return {k: v[order] for k, v in merged.items()}

    def evaluate(self, model: CTRModel, split: str) -> dict[str, float]:
        s = self.scores(model, split)
        return evaluate(s["y"], s["p"], s["users"])


class Checkpoint:
    """RUN/checkpoint.pt: written by rank 0 (atomically) with every rank's data position; read by every rank."""

    def __init__(self, run: Path, every: int, identity: dict, dist: Dist) -> None:
        self.path, self.every, self.identity, self.dist = run / CHECKPOINT, every, identity, dist

    def due(self, step: int, safe: int) -> bool:
        return self.every > 0 and step % self.every == 0 and step < safe  # every rank is still in the epoch

    def save(self, s: TrainState, model: CTRModel, opt: torch.optim.Optimizer) -> None:
        ranks = self.dist.gather_objects({k: getattr(s, k) for k in PER_RANK})
        if self.dist.main:
            state = {k: v for k, v in asdict(s).items() if k not in (*PER_RANK, "best_state")}
            doc = {
                "identity": self.identity,
                "world": self.dist.world,
                "state": state,
                "ranks": ranks,
                "best_state": s.best_state,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "rng": torch.get_rng_state(),
            }
            tmp = self.path.with_suffix(".tmp")
            torch.save(doc, tmp)
            tmp.replace(self.path)  # a kill -9 leaves the old checkpoint or the new one, never half of one
        self.dist.barrier()

    def restore(self, model: CTRModel, opt: torch.optim.Optimizer) -> TrainState | None:
        if not self.path.exists():
            return None
        doc = torch.load(self.path, weights_only=True)
        if doc["identity"] != self.identity:
            raise ValueError(f"{self.path} is a checkpoint of another configuration: use another --out, or delete it")
        if doc["world"] != self.dist.world:
            raise ValueError(f"{self.path} was written by {doc['world']} processes: resume with --nproc {doc['world']}")
        model.load_state_dict(doc["model"])
        opt.load_state_dict(doc["optimizer"])
        torch.set_rng_state(doc["rng"])
        mine = doc["ranks"][self.dist.rank]
        s = TrainState(**doc["state"], **{k: mine[k] for k in PER_RANK})
        s.positions = {int(k): v for k, v in s.positions.items()}
        s.best_state = doc["best_state"]
        if self.dist.main:
            print(f"resuming {self.path.parent} at epoch {s.epoch}, step {s.step}", flush=True)
        return s


def prepare(cfg: TrainConfig, out: Path, dist: Dist) -> tuple[Log, Schema]:
    """The log checked and the schema fitted (rank 0; a resumed run keeps its fitted schema), shared with every
    rank. Errors are raised on every rank, and nothing is written before this succeeds."""
    spec_path = schema_path(cfg.data, cfg.schema)
    result = None
    if dist.main:
        try:
            spec = Schema.load(spec_path)
            log = open_log(cfg.data, spec)
            fitted = os.environ.get(FITTED_SCHEMA) or (out / "schema.json" if (out / CHECKPOINT).exists() else None)
            schema = Schema.load(fitted) if fitted else fit_log(log, spec)  # a resumed run keeps its schema
            result = ("ok", schema.to_dict())
        except (DataError, ValueError, OSError) as exc:
            result = ("error", f"{type(exc).__name__}: {exc}" if not isinstance(exc, DataError) else str(exc))
    status, value = dist.broadcast(result)
    if status == "error":
        raise DataError(value)
    schema = Schema.from_dict(value)
    return (open_log(cfg.data, schema) if not dist.main else log), schema


def train_log_run(
    model_cfg: ModelConfig, cfg: TrainConfig, scale: ScaleConfig, out: str | Path, progress: bool = True
) -> dict:
    """``train_run`` for a log of shards (one rank of several under torchrun). Returns the metrics on every rank."""
    out, dist = Path(out), Dist.from_env()
    identity = {"model": model_cfg.to_dict(), "train": train_identity(cfg), "scale": asdict(scale) | {"nproc": 0}}
    device = dist.start(cfg.device)
    # --threads is per machine: torchrun's local ranks share it (two ranks with two threads each on two cores
    # wait on each other whenever one is descheduled)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    cfg = replace(cfg, device=device, threads=max(1, cfg.threads // local))
    try:
        if scale.sparse_embeddings and dist.on:  # (torchrun started by hand: `apg train --nproc` refuses it earlier)
            raise ValueError("--sparse-embeddings trains one process only (docs/TRAINING.md, section 6)")
        log, schema = prepare(cfg, out, dist)
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            schema.save(out / "schema.json")
        seed_everything(cfg.seed, cfg.threads)
        model = build_model(schema, model_cfg)
        if scale.sparse_embeddings:
            sparse_embeddings(model)
        batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        source = Streamed(log, schema, cfg, scale, dist, 2 if batch_norm else 1)
        checkpoint = Checkpoint(out, scale.checkpoint_steps, json.loads(json.dumps(identity)), dist)
        start = time.perf_counter()
        result = fit(model, source, cfg, progress, dist=dist, checkpoint=checkpoint)
        seconds = time.perf_counter() - start
        metrics = {
            "model": model_cfg.model,
            "apg": model_cfg.apg.condition,
            "schema_sha256": schema.digest(),
            "valid": source.evaluate(model, "valid"),
            "test": source.evaluate(model, "test"),
            "params": count_params(model),
            "train_seconds": round(seconds, 2),
            "train_rows_per_second": _rows_per_second(result["history"]),
            "processes": dist.world,
            "ranks_agree": _ranks_agree(model, dist),
            "best_epoch": result["best_epoch"],
            "history": result["history"],
            "teacher": _teacher(cfg.data),
            "config": {"model": model_cfg.to_dict(), "train": asdict(cfg), "scale": asdict(scale)},
        }
        if dist.main:
            _write_run(out, model, model_cfg, schema, log, metrics)
        dist.barrier()
        return metrics
    finally:
        dist.stop()


def _write_run(out: Path, model: CTRModel, model_cfg: ModelConfig, schema: Schema, log: Log, metrics: dict) -> None:
    units, rows = [], 0
    for i, u in enumerate(log.splits["test"]):  # the first row groups of the test split, TEST_SAMPLE rows
        if rows >= TEST_SAMPLE:
            break
        units.append(i)
        rows += u.rows
    test = read_split(log, "test", schema, units)
    rows = np.arange(min(len(test.y), TEST_SAMPLE))
    x_test, y_test = {k: v[rows] for k, v in test.x.items()}, test.y[rows]
    if model_cfg.apg.enabled:
        from model.adaptation import adaptation

        metrics["adaptation"] = adaptation(model, x_test, y_test)
    model.cpu()
    torch.save({"model_config": model_cfg.to_dict(), "state_dict": model.state_dict()}, out / "model.pt")
    np.savez_compressed(out / TEST_SPLIT, y=y_test, **{f"x/{k}": v for k, v in x_test.items()})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: the same command now trains afresh


def _rows_per_second(history: list[dict]) -> float:
    """Training rows (all ranks) per second of training loop (reading, encoding, steps; not validation)."""
    return round(sum(h["train_rows"] for h in history) / max(sum(h["train_loop_seconds"] for h in history), 1e-9), 1)


def _ranks_agree(model: CTRModel, dist: Dist) -> bool:
    """Whether every rank ends with the same weights, bit for bit (DDP's promise, checked on every run)."""
    digest = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        digest.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
    return len(set(dist.gather_objects(digest.hexdigest()))) == 1


def _teacher(data: str) -> dict | None:
    """The synthetic log's known answer (its teacher.json: Bayes-optimal AUC and logloss per split), if any."""
    path = Path(data) / "teacher.json"
    return json.loads(path.read_text()).get("splits") if path.is_file() else None


def preflight(cfg: TrainConfig, out: Path) -> Path:
    """``apg train --nproc N`` before it starts the ranks: the log checked and the schema fitted here, so that a bad
    shard is one clear error (exit 2) and the ranks skip the fit. Returns the fitted schema's temporary file."""
    _, schema = prepare(cfg, out, Dist())
    fd, path = tempfile.mkstemp(prefix="apg-schema-", suffix=".json")
    os.close(fd)
    schema.save(path)
    return Path(path)
