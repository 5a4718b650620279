"""Writing an item store: an encoded catalogue becomes a published version, atomically (layout: service/items/store.py).

    published = publish("file://items", encoded, keep=2)    # Published(version, status, bytes)

The version is the content's digest (contract, fields, ids, encoded rows), so a re-run over the same catalogue finds
its version already published and writes nothing ("unchanged"); content equal to a version still kept but not
current is pointed at again without being rewritten ("republished"); anything else is written in full
("published"). The switch is the last step, and the only one readers see:
- file: the version is written into a hidden temporary folder, fsynced, renamed to DIR/<checksum>/<version>, then
  CURRENT is replaced through a temporary file and os.replace;
- Redis: the items are written in MSET chunks, then the version's manifest, then the `current` key is SET.
Versions beyond the newest `keep` (the current one always kept) are deleted: a reader still on one of those must
refresh() (a file reader keeps its mapped pages either way).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from service.items import CURRENT, FORMAT, IDS, MANIFEST, ItemField, redis_key, safe_url

REDIS_CHUNK = 1_000  # items per MSET
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
VERSION = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Encoded:
    """A catalogue through the bundle's encoder: what every backend writes."""

    contract: str  # the bundle schema's digest
    model: str | None  # the bundle's model name (informational)
    id_column: str
    fields: tuple[ItemField, ...]
    ids: np.ndarray  # (N,) unicode: the normalised ids, sorted, unique
    columns: dict[str, np.ndarray]  # field → (N,) or (N, max_len) int64, rows in `ids` order

    @functools.cached_property
    def version(self) -> str:
        h = hashlib.sha256(json.dumps([FORMAT, self.contract, self.id_column, self.described()]).encode())
        h.update(np.ascontiguousarray(self.ids).tobytes())
        for f in self.fields:
            h.update(np.ascontiguousarray(self.columns[f.name], dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def described(self) -> list[dict]:
        return [{"name": f.name, "source": f.source, "width": f.width} for f in self.fields]

    def manifest(self, nbytes: int, **extra) -> dict:
        return {
            "format": FORMAT,
            "contract": self.contract,
            "version": self.version,
            "model": self.model,
            "id_column": self.id_column,
            "sources": list(dict.fromkeys(f.source for f in self.fields)),
            "items": len(self.ids),
            "bytes": nbytes,
            "created_at": datetime.now(UTC).isoformat(),
            **extra,
            "fields": self.described(),
        }


@dataclass(frozen=True)
class Published:
    version: str
    status: str  # published | republished | unchanged
    bytes: int  # what the version takes: the .npy files, or the Redis keys and values


def publish(url: str, encoded: Encoded, keep: int = 2, progress: Callable[[int], None] | None = None) -> Published:
    """Write `encoded` into the store at `url` (file://DIR or redis://...) and make it the published version."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the published version), got {keep}")
    progress = progress or (lambda n: None)
    if url.startswith("file://"):
        return _publish_file(Path(url.removeprefix("file://")) / encoded.contract, encoded, keep, progress)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _publish_redis(url, encoded, keep, progress)
    raise ValueError(f"item store {safe_url(url)!r}: expected file://DIR or redis://host:port/db")


# ---------------------------------------------------------------- file snapshot
def _publish_file(root: Path, e: Encoded, keep: int, progress) -> Published:
    final = root / e.version
    if (final / MANIFEST).exists():
        nbytes = json.loads((final / MANIFEST).read_text())["bytes"]
        current = (root / CURRENT).read_text().strip() if (root / CURRENT).exists() else None
        if current == e.version:
            return Published(e.version, "unchanged", nbytes)
        status = "republished"
    else:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{e.version}-", dir=root))  # hidden: never taken for a version
        try:
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide it from workers running as another user
            nbytes = _write_snapshot(tmp, e, progress)
            os.rename(tmp, final)  # atomic; fails when a concurrent sync of the same content got there first
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (final / MANIFEST).exists():
                raise
            nbytes = json.loads((final / MANIFEST).read_text())["bytes"]
        status = "published"
    os.utime(final)  # the publish order, for _retire_files
    tmp_current = root / f".{CURRENT}.{os.getpid()}"
    _write(tmp_current, lambda f: f.write(e.version.encode() + b"\n"))
    os.replace(tmp_current, root / CURRENT)  # the switch
    _fsync_dir(root)
    _retire_files(root, e.version, keep)
    return Published(e.version, status, nbytes)


def _write_snapshot(folder: Path, e: Encoded, progress) -> int:
    n, fields = len(e.ids), []
    _write(folder / IDS, lambda f: np.save(f, e.ids))
    for i, field in enumerate(e.fields):
        name = f"{field.name}.npy" if SAFE_NAME.fullmatch(field.name) else f"field{i}.npy"
        col = np.asarray(e.columns[field.name], dtype=np.int64)
        padded = np.concatenate([col, np.zeros((1, *col.shape[1:]), dtype=np.int64)])  # row N: the miss row
        _write(folder / name, lambda f, a=padded: np.save(f, a))
        fields.append(name)
        progress(n // len(e.fields))
    nbytes = sum((folder / p).stat().st_size for p in (IDS, *fields))
    manifest = e.manifest(nbytes)
    for entry, name in zip(manifest["fields"], fields, strict=True):
        entry["file"] = name
    _write(folder / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    _fsync_dir(folder)
    return nbytes


def _write(path: Path, fill: Callable) -> None:
    with open(path, "wb") as f:
        fill(f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _retire_files(root: Path, current: str, keep: int) -> None:
    versions = [p for p in root.iterdir() if VERSION.fullmatch(p.name) and p.name != current and p.is_dir()]
    versions.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in versions[keep - 1 :]:
        shutil.rmtree(old, ignore_errors=True)  # a worker that mapped its files keeps its pages


# ---------------------------------------------------------------- Redis
def _publish_redis(url: str, e: Encoded, keep: int, progress) -> Published:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
    try:
        return _write_redis(client, e, keep, progress)
    except redis.RedisError as exc:
        raise RuntimeError(f"item store {safe_url(url)}: {exc}") from exc
    finally:
        client.close()


def _write_redis(client, e: Encoded, keep: int, progress) -> Published:
    current_key, manifest_key = redis_key(e.contract, "current"), redis_key(e.contract, e.version)
    raw = client.get(manifest_key)
    if raw is not None:
        nbytes = json.loads(raw)["bytes"]
        if client.get(current_key) == e.version.encode():
            return Published(e.version, "unchanged", nbytes)
        status = "republished"
    else:
        dtype = value_dtype(e.columns.values())
        values = pack_rows([e.columns[f.name] for f in e.fields], dtype)  # (N, W · itemsize) uint8
        prefix = redis_key(e.contract, e.version, "")
        keys = [prefix + i for i in e.ids.tolist()]
        for start in range(0, len(keys), REDIS_CHUNK):
            chunk = slice(start, start + REDIS_CHUNK)
            client.mset(dict(zip(keys[chunk], map(bytes, values[chunk]), strict=True)))
            progress(len(keys[chunk]))
        nbytes = sum(len(k.encode()) for k in keys) + values.size
        client.set(manifest_key, json.dumps(e.manifest(nbytes, value_dtype=dtype)))
        status = "published"
    client.set(current_key, e.version)  # the switch
    history = redis_key(e.contract, "versions")  # newest first
    client.pipeline(transaction=True).lrem(history, 0, e.version).lpush(history, e.version).execute()
    for old in client.lrange(history, keep, -1):
        _delete_version(client, e.contract, old.decode())
        client.lrem(history, 0, old)
    return Published(e.version, status, nbytes)


def value_dtype(columns: Iterable[np.ndarray]) -> str:
    """The narrowest little-endian integer type that holds every encoded value (they are all >= 0)."""
    top = max((int(c.max()) for c in columns if c.size), default=0)
    return next(t for t in ("<i2", "<i4", "<i8") if top <= np.iinfo(t).max)


def pack_rows(columns: Sequence[np.ndarray], dtype: str) -> np.ndarray:
    """The Redis values as a (N, W · itemsize) uint8 matrix: row i is item i's value (service/items/store.py)."""
    n = len(columns[0])
    table = np.concatenate([c.reshape(n, -1) for c in columns], axis=1).astype(dtype)
    return np.ascontiguousarray(table).view(np.uint8).reshape(n, -1)


def _delete_version(client, contract: str, version: str) -> None:
    client.delete(redis_key(contract, version))  # its manifest first: no reader opens it any more
    batch = []
    for key in client.scan_iter(match=redis_key(contract, version, "*"), count=1_000):
        batch.append(key)
        if len(batch) == 1_000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)
