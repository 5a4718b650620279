"""What the item store's service tests share: the synthetic bundle's catalogue (item_id, genres), synced into a store
as `apg items sync` does, the bodies of one context against candidates by id and in full, and the scores to expect
(tests/synthetic_bundle.py's numpy reference)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from synthetic_bundle import SCHEMA, SyntheticBundle, reference_scores

from features import Encoder, Schema
from scripts.items.sync import sync

VOCAB_IDS = ["242", "302", "377", "51", "346"]  # the synthetic schema's item_id vocabulary
EXTRA = 1_500  # more ids, out of that vocabulary (the model reads them as OOV; the store holds them all the same)
GENRES = ["Action", "Comedy", "Drama", "Romance", "Thriller", "Sci-Fi", "War", "Western"]  # Western: OOV
CONTEXT = {"user_id": "196", "age": 49, "gender": "M", "zip_code": "55105"}
ITEM_FIELDS = ("item_id", "genres")  # the schema's fields that read the catalogue's item features


def catalogue(changed: bool = False) -> dict[str, list]:
    """{"item_id": [...], "genres": [...]}: 1,505 items, some without genres; `changed`: other genres (new version)."""
    ids = VOCAB_IDS + [f"i{k}" for k in range(EXTRA)]
    shift = 3 if changed else 0
    genres = ["|".join(GENRES[(k + j + shift) % len(GENRES)] for j in range(k % 4)) or None for k in range(len(ids))]
    return {"item_id": ids, "genres": genres}


def write_catalogue(path: Path, table: dict[str, list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(table)
        writer.writerows(["" if v is None else v for v in row] for row in zip(*table.values(), strict=True))
    return path


def sync_store(bundle: Path, url: str, folder: Path, changed: bool = False) -> dict:
    """`apg items sync --bundle BUNDLE --items CATALOGUE --store URL`, in this process; its summary."""
    folder.mkdir(parents=True, exist_ok=True)
    return sync(bundle, write_catalogue(folder / f"items-{int(changed)}.csv", catalogue(changed)), url)


def draw(n: int, seed: int = 0, misses: int = 0) -> list[str]:
    """`n` candidate ids drawn from the catalogue (repeats allowed); the last `misses` of them unknown to it."""
    ids = catalogue()["item_id"]
    picks = [ids[i] for i in np.random.default_rng(seed).integers(0, len(ids), n)]
    return picks[: n - misses] + [f"nope-{k}" for k in range(misses)]


def full_candidates(ids: list[str], changed: bool = False) -> list[dict]:
    """The candidates with their item features in the body, as a client without a store sends them."""
    table = catalogue(changed)
    genres = dict(zip(table["item_id"], table["genres"], strict=True))
    return [{"item_id": i, "genres": genres[i]} for i in ids]


def expected(bundle: SyntheticBundle, ids: list[str], changed: bool = False, context: dict | None = None) -> np.ndarray:
    """The numpy reference model on the encoder's tensors of the full rows; an id outside the catalogue has every
    item field missing (index 0), its miss rule."""
    known = set(catalogue()["item_id"])
    rows = [{**(context or CONTEXT), **c} for c in full_candidates([i for i in ids if i in known], changed)]
    encoder = Encoder(Schema.from_dict(SCHEMA))
    feeds = encoder.encode_rows(rows) if rows else {}
    at, out = iter(range(len(rows))), {}
    order = [next(at) if i in known else None for i in ids]
    user = encoder.encode_rows([{**(context or CONTEXT), "item_id": "242"}])
    for name, column in user.items():
        taken = [feeds[name][k] if k is not None else np.zeros_like(column[0]) for k in order]
        out[name] = np.stack(taken) if name in ITEM_FIELDS else np.repeat(column, len(ids), axis=0)
    return reference_scores(bundle, out)


def scores(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["scores"], dtype=np.float64)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value in a /metrics exposition (0.0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else " ")) and (not labels or _labels(line) == want):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _labels(line: str) -> str:
    inside = line[line.index("{") + 1 : line.index("}")]
    return ",".join(sorted(inside.split(",")))
