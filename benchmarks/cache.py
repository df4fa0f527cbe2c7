"""Per-image score cache: parquet files keyed by what a score depends on.

A score row is keyed by ``(split, key, method, pred_hash, ref_hash, variant, metric, version)``:
the prediction's content hash, the reference's content hash (``-`` for no-reference metrics, so
rebuilding GT never invalidates them), the variant (``full``, ``face-only``, ``gt-face-inserted``)
and the metric's version string (implementation, options, checkpoint). A rerun computes only the
rows that are missing; adding a method costs only its rows; a changed prediction file or metric
version simply misses the cache. Rows that failed (``status != "ok"``) are not cache hits, so they
are retried.

Layout of a cache folder::

    scores/part-*.parquet      value rows (append-only parts, one per scored partition)
    features/part-*.parquet    per-image FID Inception features (float32 bytes)
    hashes.parquet             sha256 of files by (path, size, mtime_ns), so unchanged
                               prediction files are not re-read on a rerun

Parts are written atomically (temporary name, then ``os.replace``), so concurrent writers never
see half a file; :meth:`ScoreCache.compact` merges parts.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["FEATURE_COLUMNS", "SCORE_COLUMNS", "SCORE_KEY", "HashMemo", "ScoreCache", "file_sha256"]

SCORE_KEY = ["split", "key", "method", "pred_hash", "ref_hash", "variant", "metric", "version"]
SCORE_COLUMNS = [*SCORE_KEY, "value", "status", "detail", "backend", "created"]
FEATURE_COLUMNS = [*SCORE_KEY, "feature", "status", "created"]
_TABLES = {"scores": SCORE_COLUMNS, "features": FEATURE_COLUMNS}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c == "value" else "object") for c in columns})


class ScoreCache:
    """The score and feature tables of one cache folder."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._frames: dict[str, pd.DataFrame] = {}

    def _dir(self, table: str) -> Path:
        if table not in _TABLES:
            raise ValueError(f"unknown table {table!r}")
        return self.root / table

    def parts(self, table: str = "scores") -> list[Path]:
        d = self._dir(table)
        return sorted(d.glob("*.parquet")) if d.is_dir() else []

    def table(self, table: str = "scores") -> pd.DataFrame:
        """Every row of a table, de-duplicated on the key (the latest row wins)."""
        if table in self._frames:
            return self._frames[table]
        parts = self.parts(table)
        if not parts:
            df = _empty(_TABLES[table])
        else:
            import pyarrow.parquet as pq

            frames = [pq.read_table(p).to_pandas() for p in parts]
            df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
            if len(frames) > 1:
                df = df.sort_values("created", kind="stable").drop_duplicates(SCORE_KEY, keep="last")
                df = df.reset_index(drop=True)
        self._frames[table] = df
        return df

    def hits(self, table: str = "scores") -> set[tuple[str, ...]]:
        """Key tuples of the rows that can be reused (``status == "ok"``)."""
        df = self.table(table)
        if df.empty:
            return set()
        if "status" in df.columns:
            df = df[df["status"] == "ok"]
        return set(zip(*(df[c].astype(str) for c in SCORE_KEY), strict=True))

    def append(self, rows: pd.DataFrame | Iterable[dict[str, Any]], table: str = "scores") -> Path | None:
        """Write rows as a new part (atomically); returns its path (None when there are no rows)."""
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        if df.empty:
            return None
        cols = _TABLES[table]
        if "created" not in df.columns:
            df = df.assign(created=time.time())
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{table} rows lack columns {missing}")
        df = df[cols]
        name = f"part-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:10]}.parquet"
        path = self._dir(table) / name
        _write_parquet_atomic(df, path)
        self._frames.pop(table, None)
        return path

    def compact(self, table: str = "scores") -> int:
        """Merge the parts of a table into one file; returns the number of parts merged."""
        parts = self.parts(table)
        if len(parts) <= 1:
            return len(parts)
        self._frames.pop(table, None)
        df = self.table(table)
        merged = self._dir(table) / f"merged-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:10]}.parquet"
        _write_parquet_atomic(df, merged)
        for p in parts:
            p.unlink(missing_ok=True)
        self._frames.pop(table, None)
        return len(parts)


class HashMemo:
    """sha256 of files, remembered by ``(path, size, mtime_ns)`` in ``hashes.parquet``.

    Call :meth:`save` to persist new entries. Thread-safe within a process.
    """

    def __init__(self, cache_root: str | os.PathLike | None) -> None:
        self.path = Path(cache_root) / "hashes.parquet" if cache_root is not None else None
        self._lock = threading.Lock()
        self._known: dict[tuple[str, int, int], str] = {}
        self._new = 0
        if self.path is not None and self.path.is_file():
            try:
                df = pd.read_parquet(self.path)
                self._known = {
                    (p, int(s), int(m)): h
                    for p, s, m, h in zip(df["path"], df["size"], df["mtime_ns"], df["sha256"], strict=True)
                }
            except Exception:  # noqa: BLE001 - a damaged memo only costs re-hashing
                self._known = {}

    def sha256(self, path: str | os.PathLike) -> str:
        p = Path(path).resolve()
        st = p.stat()
        k = (str(p), st.st_size, st.st_mtime_ns)
        with self._lock:
            got = self._known.get(k)
        if got is not None:
            return got
        digest = file_sha256(p)
        with self._lock:
            self._known[k] = digest
            self._new += 1
        return digest

    def save(self) -> None:
        if self.path is None or not self._new:
            return
        with self._lock:
            items = list(self._known.items())
            self._new = 0
        df = pd.DataFrame(
            {
                "path": [k[0] for k, _ in items],
                "size": [k[1] for k, _ in items],
                "mtime_ns": [k[2] for k, _ in items],
                "sha256": [h for _, h in items],
            }
        )
        _write_parquet_atomic(df, self.path)
