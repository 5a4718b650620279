"""The synthetic log's generative model: Criteo-shaped features and a known click teacher whose weights differ by
group. docs/TRAINING.md, section 8, states the model exactly; `Teacher.summary()` is what teacher.json records of it.

    teacher = build_teacher(cfg)        # per-value tables, group weights, then b and the scale calibrated
    rows = teacher.rows(start, stop)    # the log's rows [start, stop): the same values however the log is cut

Row i's random numbers come from the stream of its block (i // BLOCK, seeded by (seed, block)), so the log's content
depends on the seed, the shape options and --heterogeneity, never on --shards or --row-group-rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scripts.data.synth import SynthConfig

# Criteo Kaggle's distinct values per field C1..C26 (3 to 10^7); each support is capped at --max-cardinality
CRITEO_CARDINALITY = (
    1460,
    583,
    10131227,
    2202608,
    305,
    24,
    12517,
    633,
    3,
    93145,
    5683,
    8351593,
    3194,
    27,
    14992,
    5461306,
    10,
    5652,
    2173,
    4,
    7046547,
    18,
    15,
    286181,
    105,
    142572,
)
CAT_MISSING = {3: 0.034, 4: 0.034, 12: 0.034, 16: 0.034, 19: 0.44, 20: 0.44, 21: 0.034, 22: 0.76, 24: 0.034,
               25: 0.44, 26: 0.44}  # fmt: skip  # Ck -> share of nulls, roughly Criteo's
# I1..I13: floor(exp(mu + sigma * N(0, 1))), a heavy-tailed count, null with probability `missing`
NUM_MU = (0.7, 1.2, 2.0, 1.6, 8.0, 4.0, 1.5, 2.6, 3.8, 0.3, 1.0, 0.2, 1.8)
NUM_SIGMA = (1.2, 2.2, 1.6, 1.1, 2.0, 1.9, 1.7, 1.2, 1.6, 0.6, 1.1, 1.5, 1.3)
NUM_MISSING = (0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0005, 0.04, 0.45, 0.04, 0.77, 0.22)
ZIPF = {"C": 1.05, "user": 0.9, "context": 0.5}  # exponents s: P(rank k) ∝ (k + 1)^-s on the finite support
CONTEXTS = 24
DIM = 4  # d, the latent vectors' size
SHARES = {"w": 0.40, "a": 0.45, "beta": 0.15}  # the standardised logit's variance split between the three terms
LOGIT_STD = 1.35  # std of the logit on the pilot rows: a Gaussian logit with 25% positives gives AUC ~0.80
POSITIVE_RATE = 0.25  # mean p_true on the pilot rows
PILOT = 65_536  # rows 0..PILOT-1 (drawn even when the log is shorter) calibrate the scale and b
BLOCK = 8192  # rows per random stream
STREAM_ROWS, STREAM_CAT, STREAM_GROUP, STREAM_USER = 0, 1, 2, 3
USER = -2  # Teacher.cats: C1..C26, user, context
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@dataclass(frozen=True)
class CatTable:
    """One categorical field's support, in popularity order: rank k has probability ∝ (k + 1)^-zipf. Row `size` of
    every table is the missing value (w = 0, v = 0)."""

    name: str
    size: int  # K
    zipf: float
    missing: float
    cdf: np.ndarray  # (K,) float64: P(rank <= k), cdf[-1] == 1
    guide: np.ndarray  # (M + 1,) int32: the first rank with cdf > i / M (M a power of two, 2 to 4 per value)
    values: np.ndarray  # (K + 1, 8) uint8 hex characters, or (K + 1,) int8 ids for `context`
    w: np.ndarray  # (K + 1,) float32 ~ N(0, 1)
    v: np.ndarray  # (K + 1, d) float32 ~ N(0, I/d)


@dataclass(frozen=True)
class Rows:
    """The log's rows [start, stop): categorical ranks (`size` where missing), counts, group, truth and label."""

    start: int
    ranks: list[np.ndarray]  # per CatTable: (n,) int64
    counts: np.ndarray  # (J, n) int64, meaningless where `count_missing`
    count_missing: np.ndarray  # (J, n) bool
    segment: np.ndarray  # (n,) int16
    p_true: np.ndarray  # (n,) float64
    click: np.ndarray  # (n,) int8


@dataclass(frozen=True)
class Teacher:
    seed: int
    heterogeneity: float
    cats: list[CatTable]  # C1..C26, user, context
    segment_of_user: np.ndarray  # (users + 1,) int16, by user rank
    a: np.ndarray  # (G, F, d) float32: a_{g,f} = sqrt(1-H) a_shared_f + sqrt(H) a_own_{g,f}
    beta: np.ndarray  # (G, J) float64: the same mix for the numeric weights
    scale: float = 1.0
    bias: float = 0.0

    def rows(self, start: int, stop: int) -> Rows:
        """Rows [start, stop) of the log; memory O(stop - start) beyond the tables."""
        u, z = _uniforms(self.seed, start, stop, len(self.cats), len(NUM_MU))
        ranks = [_ranks(t, u[i]) for i, t in enumerate(self.cats)]
        segment = self.segment_of_user[ranks[USER]]
        j = len(NUM_MU)
        mu, sigma = np.array(NUM_MU)[:, None], np.array(NUM_SIGMA)[:, None]
        counts = np.floor(np.exp(mu + sigma * z)).astype(np.int64)  # (J, n)
        count_missing = u[len(self.cats) : len(self.cats) + j] < np.array(NUM_MISSING)[:, None]
        t = np.where(count_missing, 0.0, (np.log1p(counts) - mu) / sigma)  # (J, n)
        p = 1.0 / (1.0 + np.exp(-(self.bias + self.scale * self.score(ranks, segment, t))))
        click = (u[-1] < p).astype(np.int8)
        return Rows(start, ranks, counts, count_missing, segment, p, click)

    def score(self, ranks: list[np.ndarray], segment: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The standardised logit Z (before scale and b): (n,) float64."""
        n_cat, n_num, n = len(self.cats), t.shape[0], len(segment)
        w = np.empty((n_cat, n), dtype=np.float32)  # w_f(x_f)
        v = np.empty((n_cat, n, DIM), dtype=np.float32)  # v_f(x_f)
        for f, (table, r) in enumerate(zip(self.cats, ranks, strict=True)):
            np.take(table.w, r, out=w[f])
            np.take(table.v, r, axis=0, out=v[f])
        av = np.einsum("fnd,nfd->n", v, self.a[segment])  # sum_f <a_{g,f}, v_f(x_f)>
        bt = np.einsum("nj,jn->n", self.beta[segment], t)  # sum_j beta_{g,j} t_j
        return (
            math.sqrt(SHARES["w"] / n_cat) * w.sum(0, dtype=np.float64)
            + math.sqrt(SHARES["a"] / n_cat) * av.astype(np.float64)
            + math.sqrt(SHARES["beta"] / n_num) * bt
        )

    def summary(self) -> dict:
        """Every scalar of the teacher (not its tables), for teacher.json."""
        return {
            "formula": FORMULA,
            "seed": self.seed,
            "heterogeneity": self.heterogeneity,
            "groups": int(self.a.shape[0]),
            "fields": len(self.cats),  # F
            "counts": len(NUM_MU),  # J
            "dim": DIM,  # d
            "shares": SHARES,
            "logit_std": LOGIT_STD,
            "positive_rate_target": POSITIVE_RATE,
            "pilot_rows": PILOT,
            "block_rows": BLOCK,
            "scale": self.scale,
            "bias": self.bias,
            "categorical": [
                {"name": t.name, "cardinality": t.size, "zipf": t.zipf, "missing": t.missing} for t in self.cats
            ],
            "numeric": [
                {"name": f"I{j + 1}", "mu": NUM_MU[j], "sigma": NUM_SIGMA[j], "missing": NUM_MISSING[j]}
                for j in range(len(NUM_MU))
            ],
        }


FORMULA = (
    "logit = b + scale * (sqrt(0.40/F) * sum_f w_f(x_f) + sqrt(0.45/F) * sum_f <a_{g,f}, v_f(x_f)>"
    " + sqrt(0.15/J) * sum_j beta_{g,j} * t_j(x_j));  p_true = sigmoid(logit);  click = [u < p_true];"
    "  g = segment(user);  a_{g,f} = sqrt(1-H) a_f + sqrt(H) a'_{g,f};  beta_{g,j} = sqrt(1-H) beta_j"
    " + sqrt(H) beta'_{g,j};  w ~ N(0,1), v ~ N(0,I/d), a, a', beta, beta' ~ N(0,1);"
    "  t_j(x) = (ln(1+x) - mu_j) / sigma_j, 0 when missing;  a missing categorical has w = 0, v = 0"
)


def numeric_edges(j: int, buckets: int = 24) -> list[float]:
    """Bucket edges of I{j+1}: the distinct floors of its lognormal's k/buckets quantiles, k = 1..buckets-1."""
    q = [math.exp(NUM_MU[j] + NUM_SIGMA[j] * NormalDist().inv_cdf(k / buckets)) for k in range(1, buckets)]
    return sorted({float(math.floor(x)) for x in q})


def build_teacher(cfg: SynthConfig) -> Teacher:
    """The tables (seeded per field, independent of H), the group weights, then scale and b from the pilot rows."""
    sizes = [min(k, cfg.max_cardinality) for k in CRITEO_CARDINALITY] + [cfg.users, CONTEXTS]
    names = [f"C{k + 1}" for k in range(len(CRITEO_CARDINALITY))] + ["user", "context"]
    cats = [_table(cfg.seed, f, name, size) for f, (name, size) in enumerate(zip(names, sizes, strict=True))]
    rng = np.random.default_rng([cfg.seed, STREAM_USER])
    segment_of_user = np.append(rng.integers(0, cfg.groups, cfg.users), 0).astype(np.int16)
    rng = np.random.default_rng([cfg.seed, STREAM_GROUP])
    shared_a, own_a = rng.standard_normal((len(cats), DIM)), rng.standard_normal((cfg.groups, len(cats), DIM))
    shared_b, own_b = rng.standard_normal(len(NUM_MU)), rng.standard_normal((cfg.groups, len(NUM_MU)))
    h = cfg.heterogeneity
    a = (math.sqrt(1 - h) * shared_a[None] + math.sqrt(h) * own_a).astype(np.float32)
    beta = math.sqrt(1 - h) * shared_b[None] + math.sqrt(h) * own_b
    teacher = Teacher(cfg.seed, h, cats, segment_of_user, a, beta)
    return calibrate(teacher)


def calibrate(teacher: Teacher) -> Teacher:
    """scale = LOGIT_STD / std(Z) and b with mean(sigmoid(b + scale Z)) = POSITIVE_RATE, both on the pilot rows."""
    raw = replace(teacher, scale=1.0, bias=0.0).rows(0, PILOT)
    z = np.log(raw.p_true) - np.log1p(-raw.p_true)  # the logit back: Z itself at scale 1, b 0
    scale = LOGIT_STD / float(z.std())
    lo, hi = -20.0, 20.0
    for _ in range(100):  # bisection: the mean is increasing in b
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(mid + scale * z)))) < POSITIVE_RATE else (lo, mid)
    return replace(teacher, scale=scale, bias=(lo + hi) / 2)


def _table(seed: int, f: int, name: str, size: int) -> CatTable:
    rng = np.random.default_rng([seed, STREAM_CAT, f])
    zipf = ZIPF.get(name, ZIPF["C"])
    cdf = np.cumsum(np.arange(1, size + 1, dtype=np.float64) ** -zipf)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    m = max(1024, 2 ** (math.ceil(math.log2(size)) + 1))  # a power of two: q * m and i / m are exact
    guide = np.minimum(np.searchsorted(cdf, np.arange(m + 1) / m, side="right"), size - 1).astype(np.int32)
    ids = np.append(rng.permutation(size), 0)  # rank -> id: the popular values are not ids 0, 1, 2
    if name == "context":
        values = ids.astype(np.int8)
    else:
        salt = 0x9E3779B9 * (f + 1) % 2**32  # a different code per field; id + salt mod 2^32 stays distinct
        code = _fmix32(((ids + salt) % 2**32).astype(np.uint32))
        values = HEX[(code[:, None] >> np.arange(28, -4, -4, dtype=np.uint32)) & 0xF]  # (K + 1, 8)
    w = np.append(rng.standard_normal(size, dtype=np.float32), np.float32(0))
    v = rng.standard_normal((size, DIM), dtype=np.float32) / np.float32(math.sqrt(DIM))
    v = np.vstack([v, np.zeros((1, DIM), dtype=np.float32)])
    missing = CAT_MISSING.get(f + 1, 0.0) if name.startswith("C") else 0.0
    return CatTable(name, size, zipf, missing, cdf, guide, values, w, v)


def _ranks(t: CatTable, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling from one uniform: u < missing → missing (rank K), else the first rank whose cdf exceeds
    q = (u - m) / (1 - m). The guide table bounds it to [guide[i], guide[i + 1]], i = floor(q M) (Chen & Asau's
    indexed search); most rows are then resolved, the rest bisected: exactly np.searchsorted(cdf, q, "right")."""
    q = np.clip((u - t.missing) / (1 - t.missing), 0.0, np.nextafter(1.0, 0.0)) if t.missing else u
    i = (q * (len(t.guide) - 1)).astype(np.int64)
    lo, hi = t.guide[i].astype(np.int64), t.guide[i + 1]
    open_ = np.flatnonzero(lo < hi)
    if open_.size:
        a, b, qq = lo[open_], hi[open_].astype(np.int64), q[open_]  # the rank is in [a, b]
        for _ in range(int(np.max(b - a)).bit_length()):
            mid = (a + b) >> 1
            right = t.cdf[mid] <= qq
            a, b = np.where(right, mid + 1, a), np.where(right, b, mid)
        lo[open_] = a
    return np.where(u < t.missing, t.size, lo) if t.missing else lo


def _uniforms(seed: int, start: int, stop: int, n_cat: int, n_num: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows [start, stop)'s random numbers: U (n_cat + n_num + 1, n) uniform (ranks, nulls, click), Z (n_num, n)."""
    first, last = start // BLOCK, (stop - 1) // BLOCK
    us, zs = [], []
    for block in range(first, last + 1):
        rng = np.random.default_rng([seed, STREAM_ROWS, block])
        us.append(rng.random((n_cat + n_num + 1, BLOCK)))
        zs.append(rng.standard_normal((n_num, BLOCK)))
    cut = slice(start - first * BLOCK, stop - first * BLOCK)
    return np.concatenate(us, axis=1)[:, cut], np.concatenate(zs, axis=1)[:, cut]


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser: a bijection of uint32, so distinct ids stay distinct."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))
