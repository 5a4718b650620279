"""`apg data synth`: a Criteo-shaped CTR log of any size from a known teacher (scripts/data/teacher.py), written as
Parquet shards with its schema and the teacher's Bayes-optimal metrics per split (docs/TRAINING.md, section 8).

    summary = synthesize(SynthConfig(rows=1_000_000, heterogeneity=0.5), Path("data/synth"))

OUT/train/part-*.parquet (--shards files), OUT/valid/part-00000.parquet, OUT/test/part-00000.parquet: 80/10/10 of
the rows in time order; OUT/schema.json trains on them; OUT/teacher.json has the teacher and the Bayes metrics.
Memory does not grow with --rows: rows are made a row group at a time; the per-value tables are the big state.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SPLITS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}  # shares of the rows, in time order
T0, SPAN = 1_400_000_000, 7 * 86_400  # ts: Unix seconds, the rows spread evenly over a week (as Criteo's 7 days)
VOCAB_MAX = 10_000  # a categorical field with more values than this is hashed
HASH_MAX = 2**17
AUC_ROWS = 2**21  # the Bayes AUC of a longer split is computed on every k-th row (auc_rows says how many)
LABEL, TRUTH = "click", "p_true"


@dataclass(frozen=True)
class SynthConfig:
    """`apg data synth`'s options; invalid values raise ValueError."""

    rows: int = 1_000_000
    shards: int = 4  # files of the train split (valid and test: one each)
    heterogeneity: float = 0.5  # H: 0 = one shared teacher, 1 = group-specific weights
    seed: int = 0
    row_group_rows: int = 65_536
    groups: int = 16  # G: values of `segment`, the teacher's group (a function of the user)
    max_cardinality: int = 1_000_000  # cap on each categorical field's support
    users: int = 100_000

    def __post_init__(self):
        checks = [
            (self.rows >= 1000, f"--rows must be >= 1000, got {self.rows}"),
            (0.0 <= self.heterogeneity <= 1.0, f"--heterogeneity must be in [0, 1], got {self.heterogeneity}"),
            (
                1 <= self.shards <= int(self.rows * 0.8),
                f"--shards must be in 1..{int(self.rows * 0.8)} (the train rows), got {self.shards}",
            ),
            (self.row_group_rows >= 1, f"--row-group-rows must be >= 1, got {self.row_group_rows}"),
            (1 <= self.groups <= 1024, f"--groups must be in 1..1024, got {self.groups}"),
            (
                100 <= self.max_cardinality <= 10**8,
                f"--max-cardinality must be in 100..10^8, got {self.max_cardinality}",
            ),
            (self.groups <= self.users <= 10**8, f"--users must be in --groups..10^8, got {self.users}"),
            (0 <= self.seed < 2**63, f"--seed must be in 0..2^63-1, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def split_ranges(self) -> dict[str, tuple[int, int]]:
        """Each split's rows [start, stop)."""
        return {name: (int(self.rows * a), int(self.rows * b)) for name, (a, b) in SPLITS.items()}


def synthesize(cfg: SynthConfig, out: Path, progress: bool = False, force: bool = False) -> dict:
    """Writes the log, schema.json and teacher.json into `out` (whole or not at all); returns teacher.json's splits
    with the seconds taken (building the tables, then writing) and rows/s. ValueError for an existing non-empty
    `out` without `force`."""
    from features.metrics import auc
    from scripts.data.output import Progress, atomic_dir, check_out, shard_name, shard_ranges
    from scripts.data.teacher import build_teacher

    out = Path(out)
    check_out(out, force)
    started = time.perf_counter()
    teacher = build_teacher(cfg)
    build_seconds = time.perf_counter() - started
    bar = Progress(cfg.rows, progress, "synth")
    splits = {}
    with atomic_dir(out, force) as tmp:
        for split, (start, stop) in cfg.split_ranges().items():
            (tmp / split).mkdir()
            metrics = BayesMetrics(start, stop)
            for k, (a, b) in enumerate(shard_ranges(start, stop, cfg.shards if split == "train" else 1)):
                write_shard(teacher, cfg, tmp / split / shard_name(k), (a, b), metrics, bar)
                bar.shard_done(f"{split}/{shard_name(k)}", b - a)
            splits[split] = metrics.result(auc)
        seconds = bar.close()
        build_schema(teacher).save(tmp / "schema.json")
        record = {"config": asdict(cfg), "teacher": teacher.summary(), "splits": splits}
        (tmp / "teacher.json").write_text(json.dumps(record, indent=1))
    return {
        "out": str(out),
        "rows": cfg.rows,
        "build_seconds": build_seconds,
        "seconds": seconds,
        "rows_per_s": cfg.rows / seconds,
        **splits,
    }


def write_shard(teacher, cfg: SynthConfig, path: Path, span: tuple[int, int], metrics, bar) -> None:
    """Rows [a, b) of the log into one Parquet file, a row group at a time."""
    from scripts.data.output import ShardWriter

    columns, writer = column_names(teacher), None
    for lo in range(span[0], span[1], cfg.row_group_rows):
        rows = teacher.rows(lo, min(lo + cfg.row_group_rows, span[1]))
        table = to_arrow(teacher, rows, cfg.rows, columns)
        writer = writer or ShardWriter(path, table.schema, cfg.row_group_rows)
        writer.write(table)
        metrics.add(lo, rows.click, rows.p_true)
        bar.update(table.num_rows)
    writer.close()


def column_names(teacher) -> list[str]:
    """The files' columns, in order: time, user, context, group, counts, categoricals, label, truth."""
    cats = [t.name for t in teacher.cats if t.name.startswith("C")]
    return ["ts", "user", "context", "segment", *[f"I{j + 1}" for j in range(13)], *cats, LABEL, TRUTH]


def to_arrow(teacher, rows, total: int, columns: list[str]):
    """One row group: strings (8 hex characters) for C1..C26 and user, int64 counts with nulls, small ints."""
    import pyarrow as pa

    n = len(rows.p_true)
    i = np.arange(rows.start, rows.start + n, dtype=np.int64)
    data = {"ts": pa.array(T0 + i * SPAN // total), "segment": pa.array(rows.segment)}
    for table, r in zip(teacher.cats, rows.ranks, strict=True):
        data[table.name] = pa.array(table.values[r]) if table.name == "context" else _hex_strings(table, r)
    for j in range(rows.counts.shape[0]):
        data[f"I{j + 1}"] = pa.array(rows.counts[j], mask=rows.count_missing[j])
    data[LABEL], data[TRUTH] = pa.array(rows.click), pa.array(rows.p_true)
    return pa.table({name: data[name] for name in columns})


def _hex_strings(table, r: np.ndarray):
    """A string array straight from the hex table's bytes: 8 per present value, none for a null."""
    import pyarrow as pa

    n, present = len(r), r < table.size
    nulls = n - int(present.sum())
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(present * np.int32(8), out=offsets[1:])
    chars = table.values[r[present] if nulls else r]
    validity = pa.py_buffer(np.packbits(present, bitorder="little")) if nulls else None
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars))]
    return pa.Array.from_buffers(pa.string(), n, buffers, null_count=nulls)


class BayesMetrics:
    """A split's positive rate, mean p_true and logloss over every row, and the AUC of p_true over every k-th row
    (k = 1 up to AUC_ROWS rows: exact), so memory stays bounded."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.rows, self.stride = start, stop - start, math.ceil((stop - start) / AUC_ROWS)
        self.clicks, self.p_sum, self.loss = 0, 0.0, 0.0
        self.kept_y, self.kept_p = [], []

    def add(self, first: int, y: np.ndarray, p: np.ndarray) -> None:
        """Rows first, first + 1, ... of the log."""
        from features.metrics import logloss

        self.clicks += int(y.sum())
        self.p_sum += float(p.sum())
        self.loss += logloss(y, p) * len(y)
        keep = slice((self.start - first) % self.stride, None, self.stride)  # split index a multiple of k
        self.kept_y.append(y[keep])
        self.kept_p.append(p[keep])

    def result(self, auc) -> dict:
        y, p = np.concatenate(self.kept_y), np.concatenate(self.kept_p)
        return {
            "rows": self.rows,
            "positive_rate": self.clicks / self.rows,
            "mean_p_true": self.p_sum / self.rows,
            "bayes_auc": auc(y, p),
            "bayes_logloss": self.loss / self.rows,
            "auc_rows": len(y),
        }


def build_schema(teacher):
    """The schema that trains on the log: bucketed counts, vocabularies up to VOCAB_MAX values, hashed ids above."""
    from features.schema import Field, Schema
    from scripts.data.teacher import numeric_edges

    fields = [Field(f"I{j + 1}", "numeric", edges=tuple(numeric_edges(j))) for j in range(13)]
    for table in teacher.cats:
        if table.size > VOCAB_MAX or table.name == "user":  # ids that never stop growing
            buckets = 2 ** round(math.log2(min(table.size, HASH_MAX)))  # a power of two near min(K, 2^17)
            fields.append(Field(table.name, "categorical", hash_buckets=buckets))
        else:
            fields.append(Field(table.name, "categorical", min_count=1))
    fields.append(Field("segment", "categorical", min_count=1))
    label = {"column": LABEL, "threshold": 0.5}
    return Schema("synth", tuple(fields), label=label, user_column="user", time_column="ts")


# ---------------------------------------------------------------- the command


def _int(text: str) -> int:
    return int(float(text)) if "e" in text.lower() else int(text.replace("_", ""))  # 1e6, 1_000_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `apg data synth`."""
    p.description = __doc__.split("\n\n")[0]
    d = SynthConfig()
    p.add_argument("--rows", type=_int, required=True, help="rows in all (1e7 and 10_000_000 work too)")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for train/, valid/, test/, schema.json, teacher.json (made whole or not at all)",
    )
    p.add_argument("--shards", type=int, default=d.shards, help="Parquet files of the train split")
    p.add_argument(
        "--heterogeneity",
        type=float,
        default=d.heterogeneity,
        help="0: one shared teacher; 1: the "
        "teacher's weights differ fully by segment (equal logit variance at every value)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="the same seed and options give the same files")
    p.add_argument("--row-group-rows", type=_int, default=d.row_group_rows, help="rows per Parquet row group")
    p.add_argument("--groups", type=int, default=d.groups, help="segments: the teacher's groups, one per user")
    p.add_argument(
        "--max-cardinality",
        type=_int,
        default=d.max_cardinality,
        help="cap on each categorical field's support (Criteo's go up to 10^7)",
    )
    p.add_argument("--users", type=_int, default=d.users, help="distinct users (Zipf activity)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress")


def run_from_args(args) -> int:
    """`apg data synth`: ValueError (exit 2) for a bad option or an existing --out."""
    names = ("rows", "shards", "heterogeneity", "seed", "row_group_rows", "groups", "max_cardinality", "users")
    cfg = SynthConfig(**{k: getattr(args, k) for k in names})
    s = synthesize(cfg, args.out, progress=not args.quiet, force=args.force)
    print(
        f"wrote {s['rows']} rows to {s['out']} in {s['seconds']:.1f} s ({s['rows_per_s']:,.0f} rows/s), after "
        f"{s['build_seconds']:.1f} s building the teacher's tables"
    )
    for split in SPLITS:
        m = s[split]
        print(
            f"  {split:5s} {m['rows']:>11} rows  positive rate {m['positive_rate']:.4f}  Bayes-optimal AUC "
            f"{m['bayes_auc']:.4f}  logloss {m['bayes_logloss']:.4f}"
        )
    return 0
