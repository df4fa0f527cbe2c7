"""WebDataset shards: streaming writer and reader, parquet manifests, integrity checks.

Layout of a dataset folder (DESIGN.md, "Shards")::

    {root}/index.json                          every split/subset: shards, counts, bytes, sha256
    {root}/{split}/{subset}-{NNNNN}.tar        WebDataset tar, members ``{key}.{field}``
    {root}/{split}/{subset}-{NNNNN}.parquet    manifest: one row per sample
    {root}/{split}/{subset}-{NNNNN}.tar.json   sidecar: count, bytes, sha256 of the finished tar

A tar only ever appears under its final name once it is complete (written as ``.tar.tmp``, fsynced,
then renamed), and its manifest and sidecar are in place before that rename. ``index.json`` is
rebuilt from the sidecars, so several writers (one per subset, or one per Dask partition with
disjoint ``start_shard`` ranges) can share a root without a lock.

The folder loads with ``datasets.load_dataset("webdataset", data_files=hf_data_files(root))`` and
with ``webdataset.WebDataset(paths, shardshuffle=False)``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import math
import os
import queue
import re
import tarfile
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inscene.errors import BadInputError, ShardError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ShardProblem",
    "ShardReader",
    "ShardSample",
    "ShardWarning",
    "ShardWriter",
    "VerifyReport",
    "format_report",
    "hf_data_files",
    "manifest_column",
    "sample_members",
    "shard_paths",
    "verify_dataset",
    "write_index",
]

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
INDEX_FORMAT = "inscene-shards/1"
IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "webp"})
META_FIELD = "json"

_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_FIELD_RE = re.compile(r"^[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*$")
_SHARD_RE = re.compile(r"^(?P<subset>[A-Za-z0-9_\-]+)-(?P<index>\d{5})\.tar$")
_MAX_SHARD_INDEX = 99_999

# Fixed tar header fields make the archive a pure function of its input (reproducible bytes).
_MTIME = 0
_MODE = 0o644
_BLOCK = tarfile.BLOCKSIZE  # 512
_RECORD = tarfile.RECORDSIZE  # 20 blocks, what tarfile pads the archive end to
_ZEROS = bytes(_RECORD)
_READ_BUFSIZE = 1 << 20
_SYNC_EVERY = 64 << 20  # start background writeback every 64 MiB written to a shard


class ShardWarning(UserWarning):
    """A shard the reader skipped (``on_error="skip"``)."""


# --------------------------------------------------------------------------------------------
# naming helpers


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise BadInputError(f"invalid {what} {value!r}: use only letters, digits, '_' and '-' (no dots, no '/')")
    return value


def _check_field(value: str) -> str:
    if not isinstance(value, str) or not _FIELD_RE.match(value):
        raise BadInputError(f"invalid member field {value!r}: dot-separated parts of letters, digits, '_' and '-'")
    return value


def manifest_column(prefix: str, field_name: str) -> str:
    """Manifest column of a member field, e.g. ``("sha256", "lq.png")`` → ``"sha256_lq_png"``."""
    return f"{prefix}_{field_name.replace('.', '_')}"


def _shard_name(subset: str, index: int) -> str:
    return f"{subset}-{index:05d}"


def _extension(field_name: str) -> str:
    return field_name.rsplit(".", 1)[-1].lower()


# --------------------------------------------------------------------------------------------
# metadata


def _meta_kind(key: str, value: Any) -> str | None:
    """The JSON kind of one metadata value (None for null); rejects what is not flat JSON."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadInputError(f"meta {key!r} is {value!r}: JSON has no NaN/Infinity; use None")
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        for item in value:
            inner = item if isinstance(item, (list, tuple)) else [item]
            for sub in inner:
                if isinstance(sub, (list, tuple, dict)):
                    raise BadInputError(f"meta {key!r}: lists hold scalars or lists of scalars (e.g. landmarks)")
                _meta_kind(key, sub)
        return "list"
    raise BadInputError(f"meta {key!r} has type {type(value).__name__}: use str, int, float, bool, None or lists")


def _encode_meta(meta: Mapping[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def sample_members(
    key: str, members: Mapping[str, bytes], meta: Mapping[str, Any] | None = None
) -> list[tuple[str, bytes]]:
    """The tar members of one sample, validated, in the order the writer stores them.

    Args:
        key: sample key (letters, digits, ``_``, ``-``; no dots, no ``/``).
        members: field (``lq.png``, ``gt.png``, ...) to encoded bytes. ``json`` is reserved for
            ``meta``.
        meta: flat JSON metadata, stored as the ``{key}.json`` member; None or empty stores none.

    Returns:
        ``[(member_name, data), ...]`` sorted by field name, e.g. ``[("k.gt.png", b"..."), ...]``.

    Raises:
        BadInputError: invalid key or field, non-bytes data, or metadata that is not flat JSON.
    """
    _check_name(key, "sample key")
    out: list[tuple[str, bytes]] = []
    for name, data in members.items():
        _check_field(name)
        if name.startswith("__"):
            raise BadInputError(f"sample {key!r}: member field {name!r}: '__' names are reserved")
        if name == META_FIELD:
            raise BadInputError(f"sample {key!r}: member field 'json' is reserved; pass metadata as meta=")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BadInputError(f"sample {key!r}: member {name!r} must be bytes, got {type(data).__name__}")
        if not isinstance(data, bytes):
            data = bytes(data)  # a mutable buffer could change before the background hash reads it
        out.append((name, data))
    if meta:
        for mkey, value in meta.items():
            if not isinstance(mkey, str) or not mkey or mkey.startswith("__"):
                raise BadInputError(f"sample {key!r}: invalid meta key {mkey!r}")
            _meta_kind(mkey, value)
        out.append((META_FIELD, _encode_meta(meta)))
    if not out:
        raise BadInputError(f"sample {key!r} has no members")
    out.sort(key=lambda item: item[0])
    return [(f"{key}.{name}", data) for name, data in out]


# --------------------------------------------------------------------------------------------
# small atomic-file helpers


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a unique temp file, fsync and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _writev_all(fd: int, buffers: list) -> None:
    """``os.writev`` until every byte is written (regular files rarely write short, but may)."""
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    while views:
        n = _writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


def _writev_fallback(fd: int, views: list) -> int:  # pragma: no cover - platforms without writev
    return os.write(fd, views[0])


_writev = getattr(os, "writev", _writev_fallback)


#: Bytes of sample buffers a hashing thread may have queued before :meth:`ShardWriter.write`
#: waits for it. A backlog lets the writer's own thread finish a shard's writes (and start its
#: fsync) while the digests catch up; bounding it in bytes keeps memory flat whatever the sample
#: size. Measured on 2 cores with 300 KB samples (``python -m benchmarks.perf shards``): a 32-sample
#: backlog (~10 MB) gave ratio 0.76-0.78 against tarfile; 32 MiB gave 0.82-0.87 (writer RSS +33 MiB,
#: flat), 64 MiB no better.
_HASH_BACKLOG_BYTES = 32 << 20


class _Worker:
    """A daemon thread running submitted calls in order, with a backlog bounded in bytes.

    The writer hashes on two of these (member digests; the tar stream's digest) while its own
    thread only issues writes: hashlib and ``os.writev`` both release the GIL on large buffers,
    so the three overlap. At most ``max_bytes`` of submitted buffers (and ``max_pending`` tasks)
    wait at a time; one task larger than that still runs, alone.
    """

    def __init__(self, name: str, max_pending: int = 4096, max_bytes: int = _HASH_BACKLOG_BYTES) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._max_bytes = max_bytes
        self._pending_bytes = 0
        self._budget = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            task, nbytes = self._queue.get()
            try:
                if task is None:
                    return
                if self._error is None:
                    task()
            except BaseException as exc:  # pragma: no cover - re-raised by wait()
                self._error = exc
            finally:
                if nbytes:
                    with self._budget:
                        self._pending_bytes -= nbytes
                        self._budget.notify_all()
                self._queue.task_done()

    def submit(self, task: Callable[[], None], nbytes: int = 0) -> None:
        """Queue ``task``, which holds ``nbytes`` of buffers until it has run."""
        if nbytes:
            with self._budget:
                while self._pending_bytes and self._pending_bytes + nbytes > self._max_bytes:
                    self._budget.wait()
                self._pending_bytes += nbytes
        self._queue.put((task, nbytes))

    def wait(self) -> None:
        """Block until every submitted task ran; re-raise the first failure."""
        self._queue.join()
        if self._error is not None:  # pragma: no cover
            error, self._error = self._error, None
            raise error

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put((None, 0))
            self._thread.join()


def _hash_stream(hasher, buffers: list) -> None:
    for buf in buffers:
        hasher.update(buf)


def _hash_members(row: dict[str, Any], items: list[tuple[str, bytes]]) -> None:
    for col, data in items:
        row[col] = hashlib.sha256(data).hexdigest()


_fdatasync = getattr(os, "fdatasync", os.fsync)


def _background_sync(fd: int) -> None:
    try:
        _fdatasync(fd)
    except OSError:  # pragma: no cover - the final fsync on the writer's thread reports it
        pass


# --------------------------------------------------------------------------------------------
# writer


def _tarinfo_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = _MTIME
    info.mode = _MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


# A ustar header with every fixed field set, the name and size empty and the checksum field
# blank (8 spaces, as the checksum is computed). Patching name, size and checksum gives the same
# bytes as tarfile's header for the same member, several times faster.
_HEADER_TEMPLATE = bytes(_tarinfo_header("x", 0))
_HEADER_TEMPLATE = (
    b"\0" * 100 + _HEADER_TEMPLATE[100:124] + b"\0" * 12 + _HEADER_TEMPLATE[136:148] + b" " * 8
) + _HEADER_TEMPLATE[156:]
_HEADER_TEMPLATE_SUM = sum(_HEADER_TEMPLATE)
_MAX_USTAR_SIZE = 8**11 - 1


def _tar_header(name: str, size: int) -> bytes:
    """The tar header of a regular member with the writer's fixed mode/owner/mtime."""
    raw = name.encode("ascii", "surrogateescape") if name.isascii() else None
    if raw is None or len(raw) > 100 or size > _MAX_USTAR_SIZE:
        return _tarinfo_header(name, size)  # needs a pax extended header
    size_field = b"%011o\0" % size
    chksum = _HEADER_TEMPLATE_SUM + sum(raw) + sum(size_field)
    return b"".join(
        (
            raw,
            _HEADER_TEMPLATE[len(raw) : 124],
            size_field,
            _HEADER_TEMPLATE[136:148],
            b"%06o\0 " % chksum,
            _HEADER_TEMPLATE[156:],
        )
    )


class ShardWriter:
    """Stream samples into WebDataset tars with parquet manifests (a context manager).

    Example::

        with ShardWriter("data/inscene", "train", "synthetic", max_count=1000) as w:
            w.write("id0001_s000", {"lq.png": lq, "gt.png": gt}, {"identity_id": "id0001"})

    Args:
        root: dataset folder; the writer creates ``{root}/{split}/``.
        split: split name (``train``, ``test``, ...).
        subset: subset name, the shard file prefix (``synthetic``, ``real``, ``refs``, ...).
        max_count: samples per shard before a new shard starts.
        max_bytes: tar bytes per shard before a new shard starts (a single larger sample still
            gets a shard of its own).
        start_shard: index of the first shard; give disjoint ranges to concurrent writers of one
            subset (e.g. ``partition * 1000``).
        overwrite: replace an existing shard of the same name instead of raising.

    Attributes:
        shards: paths of the shards finished so far.
        count: samples written so far.

    Memory stays flat in the number of samples: samples are written as they arrive; only the
    current shard's manifest rows and the set of keys seen (for duplicate detection) are kept.
    The sha256 of each member (for the manifest) and of the tar stream (for the index) are
    computed once each, on two background threads, while the calling thread writes; a shard is
    fsynced once, with its disk writeback started in the background every 64 MiB. One writer
    is used from one thread.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        subset: str,
        *,
        max_count: int = 1000,
        max_bytes: int = 1_000_000_000,
        start_shard: int = 0,
        overwrite: bool = False,
    ) -> None:
        _check_name(split, "split")
        _check_name(subset, "subset")
        if max_count < 1:
            raise BadInputError(f"max_count must be >= 1, got {max_count}")
        if max_bytes < 1:
            raise BadInputError(f"max_bytes must be >= 1, got {max_bytes}")
        if not 0 <= start_shard <= _MAX_SHARD_INDEX:
            raise BadInputError(f"start_shard must be in 0..{_MAX_SHARD_INDEX}, got {start_shard}")
        self.root = Path(root)
        self.split = split
        self.subset = subset
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.overwrite = overwrite
        self.dir = self.root / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shards: list[Path] = []
        self.count = 0
        self._next_index = start_shard
        self._keys: set[str] = set()
        self._meta_keys: frozenset[str] | None = None
        self._meta_kinds: dict[str, str] = {}
        self._closed = False
        # state of the open shard
        self._fd: int | None = None
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._tar_hash: Any = None
        self._member_worker: _Worker | None = None
        self._stream_worker: _Worker | None = None
        self._sync_thread: threading.Thread | None = None
        self._synced = 0
        self._size = 0
        self._rows: list[dict[str, Any]] = []

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    # -- public ------------------------------------------------------------------------------

    def write(self, key: str, members: Mapping[str, bytes], meta: Mapping[str, Any] | None = None) -> None:
        """Append one sample.

        Args:
            key: unique sample key within this writer (no dots, no ``/``).
            members: field to bytes, e.g. ``{"lq.png": ..., "gt.png": ...}``.
            meta: flat JSON metadata (str, int, float, bool, None, lists). Stored as the
                ``{key}.json`` member and as manifest columns. Every sample of a writer must
                have the same meta keys, each keeping one type (None allowed anywhere).

        Raises:
            BadInputError: invalid or duplicate key, invalid members, or inconsistent metadata.
        """
        if self._closed:
            raise BadInputError("ShardWriter is closed")
        if key in self._keys:
            raise BadInputError(f"duplicate sample key {key!r} in {self.split}/{self.subset}")
        meta = dict(meta) if meta else {}
        entries = sample_members(key, members, meta)
        self._check_meta(key, meta)

        row: dict[str, Any] = {"__key__": key}
        row.update(meta)
        headers: list[bytes] = []
        to_hash: list[tuple[str, bytes]] = []
        sample_size = 0
        for name, data in entries:
            field_name = name.split(".", 1)[1]
            size = len(data)
            sha_col = manifest_column("sha256", field_name)
            size_col = manifest_column("size", field_name)
            if sha_col in row or size_col in row:
                raise BadInputError(
                    f"sample {key!r}: manifest column {sha_col!r} or {size_col!r} collides with "
                    "another member or meta key"
                )
            row[sha_col] = None  # filled in by the member-hash worker
            row[size_col] = size
            to_hash.append((sha_col, data))
            header = _tar_header(name, size)
            headers.append(header)
            sample_size += len(header) + size + (-size % _BLOCK)

        if self._fd is not None and (
            len(self._rows) >= self.max_count or (self._rows and self._size + sample_size + 2 * _BLOCK > self.max_bytes)
        ):
            self._finish_shard()
        if self._fd is None:
            self._open_shard()

        buffers: list = []
        for header, (_, data) in zip(headers, entries, strict=True):
            buffers.append(header)
            buffers.append(data)
            pad = -len(data) % _BLOCK
            if pad:
                buffers.append(_ZEROS[:pad])
        assert self._fd is not None and self._tar_hash is not None
        assert self._member_worker is not None and self._stream_worker is not None
        self._member_worker.submit(functools.partial(_hash_members, row, to_hash), sample_size)
        self._stream_worker.submit(functools.partial(_hash_stream, self._tar_hash, buffers), sample_size)
        _writev_all(self._fd, buffers)
        self._size += sample_size
        self._rows.append(row)
        self._keys.add(key)
        self.count += 1
        if self._size - self._synced >= _SYNC_EVERY:
            self._start_background_sync()

    def close(self) -> None:
        """Finish the open shard and rebuild ``{root}/index.json``. Safe to call twice."""
        if self._closed:
            return
        try:
            if self._fd is not None:
                self._finish_shard()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._stop_workers()
        write_index(self.root)

    def abort(self) -> None:
        """Drop the unfinished shard (its ``.tar.tmp``); finished shards stay."""
        self._join_sync()
        self._stop_workers()
        self._tar_hash = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
        self._rows = []
        self._closed = True

    # -- internals ---------------------------------------------------------------------------

    def _check_meta(self, key: str, meta: dict[str, Any]) -> None:
        keys = frozenset(meta)
        if self._meta_keys is None:
            self._meta_keys = keys
        elif keys != self._meta_keys:
            extra = sorted(keys - self._meta_keys)
            missing = sorted(self._meta_keys - keys)
            parts = []
            if extra:
                parts.append(f"unexpected meta key {extra[0]!r}")
            if missing:
                parts.append(f"missing meta key {missing[0]!r}")
            raise BadInputError(
                f"sample {key!r}: {' and '.join(parts)}; every sample of a writer needs the same "
                "meta keys (HF datasets infers the features from the first samples)"
            )
        for mkey, value in meta.items():
            kind = _meta_kind(mkey, value)
            if kind is None:
                continue
            seen = self._meta_kinds.setdefault(mkey, kind)
            if seen != kind:
                raise BadInputError(
                    f"sample {key!r}: meta key {mkey!r} is {kind}, earlier samples had {seen}; "
                    "keep one type per key (None is allowed)"
                )

    def _open_shard(self) -> None:
        index = self._next_index
        if index > _MAX_SHARD_INDEX:
            raise BadInputError(f"{self.subset}: more than {_MAX_SHARD_INDEX + 1} shards")
        final = self.dir / f"{_shard_name(self.subset, index)}.tar"
        if final.exists() and not self.overwrite:
            raise BadInputError(
                f"shard {final} already exists (another writer's start_shard range, or a "
                "previous run); pass overwrite=True to replace it"
            )
        tmp = final.with_name(final.name + ".tmp")
        self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._tmp, self._final = tmp, final
        self._tar_hash = hashlib.sha256()
        if self._member_worker is None:
            self._member_worker = _Worker("shard-member-sha256")
            self._stream_worker = _Worker("shard-tar-sha256")
        self._size = 0
        self._synced = 0
        self._rows = []

    def _stop_workers(self) -> None:
        for worker in (self._member_worker, self._stream_worker):
            if worker is not None:
                worker.stop()
        self._member_worker = self._stream_worker = None

    def _start_background_sync(self) -> None:
        # Start the disk writeback of what is written so far while writing goes on, so the
        # one fsync at the end of the shard has little left to wait for.
        if self._sync_thread is not None and self._sync_thread.is_alive():
            return
        self._synced = self._size
        self._sync_thread = threading.Thread(target=_background_sync, args=(self._fd,), name="shard-sync", daemon=True)
        self._sync_thread.start()

    def _join_sync(self) -> None:
        if self._sync_thread is not None:
            self._sync_thread.join()
            self._sync_thread = None

    def _finish_shard(self) -> None:
        assert self._fd is not None and self._tmp is not None and self._final is not None
        assert self._tar_hash is not None
        assert self._member_worker is not None and self._stream_worker is not None
        # End of archive: two zero blocks, then padding to a whole record (as tarfile does).
        end = 2 * _BLOCK
        end += -(self._size + end) % _RECORD
        tail = [bytes(end)]  # up to 2 blocks + a record: longer than _ZEROS
        self._stream_worker.submit(functools.partial(_hash_stream, self._tar_hash, tail))
        _writev_all(self._fd, tail)
        nbytes = self._size + end
        self._join_sync()
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        self._member_worker.wait()
        self._stream_worker.wait()
        sha = self._tar_hash.hexdigest()
        self._tar_hash = None

        final, stem = self._final, self._final.name[: -len(".tar")]
        _write_manifest(self.dir / f"{stem}.parquet", self._rows, self._meta_keys or frozenset())
        sidecar = {
            "file": f"{self.split}/{final.name}",
            "split": self.split,
            "subset": self.subset,
            "count": len(self._rows),
            "bytes": nbytes,
            "sha256": sha,
        }
        _atomic_write_bytes(
            final.with_name(final.name + ".json"),
            (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode(),
        )
        os.replace(self._tmp, final)
        _fsync_dir(self.dir)
        self.shards.append(final)
        self._tmp = self._final = None
        self._rows = []
        self._size = 0
        self._next_index += 1


def _write_manifest(path: Path, rows: list[dict[str, Any]], meta_keys: frozenset[str]) -> None:
    """One parquet row per sample: ``__key__``, meta columns (sorted), per-member sha256/size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    member_cols: dict[str, None] = {}
    for row in rows:
        for col in row:
            if col != "__key__" and col not in meta_keys:
                member_cols.setdefault(col)
    ordered = sorted(member_cols, key=lambda c: (c.split("_", 1)[1], c))
    columns = ["__key__", *sorted(meta_keys), *ordered]
    data = {col: [row.get(col) for row in rows] for col in columns}
    try:
        table = pa.table(data)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise BadInputError(f"metadata cannot be stored in manifest {path}: {exc}") from exc
    buf = io.BytesIO()
    pq.write_table(table, buf)
    _atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------------------------
# index


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _scan_sidecars(root: Path) -> list[dict[str, Any]]:
    entries = []
    for sidecar in sorted(root.glob("*/*.tar.json")):
        tar = sidecar.with_name(sidecar.name[: -len(".json")])
        if not _SHARD_RE.match(tar.name) or not tar.exists():
            continue
        try:
            info = _read_json(sidecar)
        except (OSError, ValueError):
            continue  # a damaged sidecar is reported by verify_dataset
        entries.append(
            {
                "file": f"{tar.parent.name}/{tar.name}",
                "split": tar.parent.name,
                "subset": _SHARD_RE.match(tar.name)["subset"],
                "count": int(info["count"]),
                "bytes": int(info["bytes"]),
                "sha256": str(info["sha256"]),
            }
        )
    return entries


def _build_index(entries: list[dict[str, Any]]) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for e in entries:
        split = splits.setdefault(e["split"], {"count": 0, "bytes": 0, "subsets": {}})
        sub = split["subsets"].setdefault(e["subset"], {"count": 0, "bytes": 0, "shards": []})
        sub["shards"].append({k: e[k] for k in ("file", "count", "bytes", "sha256")})
        for level in (split, sub):
            level["count"] += e["count"]
            level["bytes"] += e["bytes"]
    return {
        "format": INDEX_FORMAT,
        "count": sum(s["count"] for s in splits.values()),
        "bytes": sum(s["bytes"] for s in splits.values()),
        "splits": splits,
    }


def write_index(root: str | os.PathLike) -> Path:
    """Rebuild ``{root}/index.json`` from the per-shard sidecars, atomically.

    Lock-free: each finished shard has its own sidecar, and the index is a pure function of the
    sidecars present. If a concurrent writer finished a shard while the index was being written,
    the index is rebuilt again, so the last writer to close leaves a complete index. After a
    distributed run, one final ``write_index(root)`` makes that certain.

    Returns:
        The path of ``index.json``.
    """
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"not a dataset folder: {root}")
    path = root / INDEX_NAME
    for _ in range(5):
        entries = _scan_sidecars(root)
        index = _build_index(entries)
        _atomic_write_bytes(path, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
        if _scan_sidecars(root) == entries:
            break
    return path


def _index_entries(root: Path) -> dict[str, dict[str, Any]] | None:
    """``file`` → shard entry from index.json; None when there is no index."""
    path = root / INDEX_NAME
    if not path.exists():
        return None
    index = _read_json(path)
    out = {}
    for split in index.get("splits", {}).values():
        for sub in split.get("subsets", {}).values():
            for shard in sub.get("shards", []):
                out[shard["file"]] = shard
    return out


# --------------------------------------------------------------------------------------------
# listing


def shard_paths(root: str | os.PathLike, split: str | None = None) -> list[Path]:
    """The finished ``.tar`` shards under ``root`` (one split or all), sorted.

    Sorted by split, then subset, then shard index (the 5-digit index sorts as text).
    """
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"not a dataset folder: {root}")
    pattern = f"{split}/*.tar" if split is not None else "*/*.tar"
    return sorted(p for p in root.glob(pattern) if p.is_file() and _SHARD_RE.match(p.name))


def hf_data_files(root: str | os.PathLike) -> dict[str, list[str]]:
    """``{split: [tar paths, sorted]}``, for ``load_dataset("webdataset", data_files=...)``."""
    out: dict[str, list[str]] = {}
    for path in shard_paths(root):
        out.setdefault(path.parent.name, []).append(str(path))
    return out


# --------------------------------------------------------------------------------------------
# tar scanning (shared by the reader and verify)


class _Damage(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class _HashingReader(io.RawIOBase):
    """Read-through file wrapper that hashes every byte read."""

    def __init__(self, raw, hasher) -> None:
        self._raw = raw
        self._hasher = hasher

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hasher.update(data)
        return data

    def readinto(self, b) -> int:  # pragma: no cover - tarfile's stream mode uses read()
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(_READ_BUFSIZE):
            pass


def _scan_tar(path: Path, hasher=None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {field: bytes})`` per sample of one tar, streaming.

    Raises:
        _Damage: ``truncated`` or ``corrupt``. A sample is yielded only once the next sample
            (or a proper end of archive) has been read, so a cut-off sample is never yielded.
    """
    with open(path, "rb") as raw:
        src = _HashingReader(raw, hasher) if hasher is not None else raw
        try:
            try:
                tf = tarfile.open(fileobj=src, mode="r|", bufsize=_READ_BUFSIZE)
            except tarfile.ReadError as exc:
                size = path.stat().st_size
                kind = "truncated" if size < _BLOCK else "corrupt"
                raise _Damage(kind, f"not a tar archive ({exc})") from None
            key: str | None = None
            group: dict[str, bytes] = {}
            try:
                for info in tf:
                    if not info.isfile():
                        continue
                    base = info.name.rsplit("/", 1)[-1]
                    mkey, dot, fname = base.partition(".")
                    if not dot:
                        continue
                    reader = tf.extractfile(info)
                    data = reader.read() if reader is not None else b""
                    if len(data) != info.size:
                        raise _Damage("truncated", f"member {base} is cut short")
                    if mkey != key:
                        if key is not None:
                            yield key, group
                        key, group = mkey, {}
                    if fname in group:
                        raise _Damage("corrupt", f"member {base} appears twice")
                    group[fname] = data
                end = tf.offset
            except tarfile.ReadError as exc:
                kind = "truncated" if "unexpected end" in str(exc) else "corrupt"
                raise _Damage(kind, str(exc)) from None
            except EOFError as exc:
                raise _Damage("truncated", str(exc) or "unexpected end of file") from None
            _check_end(path, end)
            if key is not None:
                yield key, group
        finally:
            if hasher is not None:
                src.drain()


def _check_end(path: Path, offset: int) -> None:
    """tarfile stops silently at a bad or missing header; a sound tar has two zero blocks here."""
    with open(path, "rb") as f:
        f.seek(offset)
        tail = f.read(2 * _BLOCK)
    if len(tail) < 2 * _BLOCK:
        raise _Damage("truncated", f"archive ends at byte {offset + len(tail)} without end marker")
    if tail.count(0) != len(tail):
        raise _Damage("corrupt", f"unreadable tar header at byte {offset}")


# --------------------------------------------------------------------------------------------
# reader


@dataclass
class ShardSample:
    """One sample read back from a shard.

    Attributes:
        key: sample key.
        split: split folder name.
        subset: subset (shard file prefix).
        shard: path of the tar it came from.
        meta: metadata (the ``json`` member), ``{}`` when the sample has none.
        members: field to raw bytes, every member except ``json``.
        images: field to RGB ``uint8`` array (H, W, 3) for png/jpg/jpeg/webp members, when the
            reader decodes images.
    """

    key: str
    split: str
    subset: str
    shard: Path
    meta: dict[str, Any]
    members: dict[str, bytes]
    images: dict[str, np.ndarray] = field(default_factory=dict)


def _decode_rgb(data: bytes) -> np.ndarray:
    """The safe decoder (16-bit scaled, alpha on white, orientation, bomb guard): RGB uint8."""
    from inscene.imageio import decode_image

    return decode_image(data)


class ShardReader:
    """Iterate the samples of a dataset folder, shard by shard, streaming.

    Args:
        root: dataset folder.
        split: only this split (default: all).
        subset: only this subset (default: all).
        on_error: ``"skip"``: a truncated, corrupt or missing shard (or an undecodable sample,
            which alone is skipped) is reported with ``warnings.warn`` and ``logging`` naming the
            shard, and reading goes on;
            ``"raise"``: :class:`~inscene.errors.ShardError` naming the shard.
        decode_images: fill :attr:`ShardSample.images` (:func:`inscene.imageio.decode_image`,
            RGB uint8).

    A shard whose size differs from its sidecar is rejected before any of its samples are
    yielded; damage found mid-stream stops that shard after the samples already yielded.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split: str | None = None,
        subset: str | None = None,
        on_error: str = "skip",
        decode_images: bool = True,
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise BadInputError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise BadInputError(f"not a dataset folder: {self.root}")
        self.split = split
        self.subset = subset
        self.on_error = on_error
        self.decode_images = decode_images

    @property
    def shards(self) -> list[Path]:
        """Shards this reader visits: those on disk plus any the index lists (missing ones)."""
        paths = set(shard_paths(self.root, self.split))
        try:
            indexed = _index_entries(self.root) or {}
        except (OSError, ValueError):
            indexed = {}
        for file in indexed:
            paths.add(self.root / file)
        out = []
        for p in paths:
            m = _SHARD_RE.match(p.name)
            if m is None:
                continue
            if self.split is not None and p.parent.name != self.split:
                continue
            if self.subset is not None and m["subset"] != self.subset:
                continue
            out.append(p)
        return sorted(out)

    def __iter__(self) -> Iterator[ShardSample]:
        for path in self.shards:
            yield from self._read_shard(path)

    def _fail(self, path: Path, kind: str, detail: str) -> None:
        msg = f"shard {path}: {kind} ({detail})"
        if self.on_error == "raise":
            raise ShardError(msg)
        logger.warning("skipping %s", msg)
        warnings.warn(f"skipping {msg}", ShardWarning, stacklevel=3)

    def _read_shard(self, path: Path) -> Iterator[ShardSample]:
        if not path.exists():
            self._fail(path, "missing", "listed in index.json but not on disk")
            return
        sidecar = path.with_name(path.name + ".json")
        if sidecar.exists():
            try:
                expected = int(_read_json(sidecar)["bytes"])
            except (OSError, ValueError, KeyError, TypeError):
                expected = None
            size = path.stat().st_size
            if expected is not None and size != expected:
                kind = "truncated" if size < expected else "corrupt"
                self._fail(path, kind, f"{size} bytes on disk, sidecar says {expected}")
                return
        split = path.parent.name
        subset = _SHARD_RE.match(path.name)["subset"]
        try:
            for key, group in _scan_tar(path):
                sample = self._make_sample(path, split, subset, key, group)
                if sample is not None:
                    yield sample
        except _Damage as exc:
            self._fail(path, exc.kind, exc.detail)
        except OSError as exc:
            self._fail(path, "unreadable", str(exc))

    def _make_sample(
        self, path: Path, split: str, subset: str, key: str, group: dict[str, bytes]
    ) -> ShardSample | None:
        raw_meta = group.pop(META_FIELD, None)
        try:
            meta = json.loads(raw_meta) if raw_meta is not None else {}
            images = {}
            if self.decode_images:
                for name, data in group.items():
                    if _extension(name) in IMAGE_EXTENSIONS:
                        images[name] = _decode_rgb(data)
        except Exception as exc:  # noqa: BLE001 - any decode failure is this sample's damage
            msg = f"sample {key} of shard {path}: corrupt ({type(exc).__name__}: {exc})"
            if self.on_error == "raise":
                raise ShardError(msg) from exc
            logger.warning("skipping %s", msg)  # the shard's other samples are still read
            warnings.warn(f"skipping {msg}", ShardWarning, stacklevel=3)
            return None
        return ShardSample(key, split, subset, path, meta, group, images)


# --------------------------------------------------------------------------------------------
# verify

PROBLEM_KINDS = (
    "missing",
    "truncated",
    "corrupt",
    "hash_mismatch",
    "orphan_tmp",
    "no_manifest",
    "unindexed",
)


@dataclass
class ShardProblem:
    """One problem found by :func:`verify_dataset`.

    Attributes:
        path: the file concerned (a tar, a manifest, a leftover ``.tar.tmp``, ``index.json``).
        kind: one of ``missing`` (listed in the index, a sidecar or a manifest, but gone),
            ``truncated``, ``corrupt`` (unparsable, or a member whose sha256 differs from the
            manifest), ``hash_mismatch`` (tar sha256 differs from the index), ``orphan_tmp``
            (leftover ``.tar.tmp`` of an interrupted writer), ``no_manifest``, ``unindexed``
            (a tar that index.json does not list: rebuild it with ``write_index``).
        detail: one human line.
    """

    path: Path
    kind: str
    detail: str


@dataclass
class VerifyReport:
    """Result of :func:`verify_dataset`."""

    root: Path
    shards_checked: int = 0
    samples_checked: int = 0
    problems: list[ShardProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _load_manifest(path: Path) -> dict[str, dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {row["__key__"]: row for row in table.to_pylist()}


def verify_dataset(root: str | os.PathLike) -> VerifyReport:
    """Check every shard of a dataset folder against its manifest, sidecar and index.

    Streams each tar once, recomputing the tar's sha256 and every member's sha256, and compares
    them with ``index.json`` (or the sidecar) and the parquet manifest.

    A sidecar (``*.tar.json``) that cannot be read, or whose count, bytes or sha256 disagree with
    an otherwise sound tar, is a ``corrupt`` problem naming the sidecar.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is False when any problem was found.

    Raises:
        BadInputError: ``root`` is not a folder, or holds no shard and no ``index.json`` (not a dataset).
    """
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"not a dataset folder: {root}")
    if not (root / INDEX_NAME).exists() and not any(
        _SHARD_RE.match(p.name.removesuffix(".json").removesuffix(".tmp"))
        for pattern in ("*/*.tar", "*/*.tar.json", "*/*.tar.tmp") for p in root.glob(pattern)
    ):
        raise BadInputError(f"not an inscene dataset folder (no shards, no index.json): {root}")
    report = VerifyReport(root=root)
    add = report.problems.append

    index: dict[str, dict[str, Any]] | None
    try:
        index = _index_entries(root)
    except (OSError, ValueError, AttributeError) as exc:
        add(ShardProblem(root / INDEX_NAME, "corrupt", f"unreadable index: {exc}"))
        index = {}
    if index is None:
        add(ShardProblem(root / INDEX_NAME, "missing", f"no index.json; {_rebuild_hint(root)}"))
        index = {}

    for tmp in sorted(root.glob("*/*.tar.tmp")):
        add(ShardProblem(tmp, "orphan_tmp", "leftover of an interrupted writer; delete it"))

    on_disk = set(shard_paths(root))
    expected: dict[Path, str] = {}  # tar → where it is listed
    for file in index:
        expected.setdefault(root / file, "index.json")
    for sidecar in root.glob("*/*.tar.json"):
        expected.setdefault(sidecar.with_name(sidecar.name[: -len(".json")]), sidecar.name)
    for manifest in root.glob("*/*.parquet"):
        expected.setdefault(manifest.with_name(manifest.stem + ".tar"), manifest.name)
    for tar in sorted(set(expected) - on_disk):
        add(ShardProblem(tar, "missing", f"listed in {expected[tar]} but the tar is gone"))

    for tar in sorted(on_disk):
        report.shards_checked += 1
        rel = f"{tar.parent.name}/{tar.name}"
        sidecar, side_problem = _read_sidecar(tar)
        if side_problem is not None:
            add(side_problem)
        problem = _verify_tar(tar, index.get(rel, sidecar), report, sidecar)
        if problem is not None:
            add(problem)
        elif rel not in index and (root / INDEX_NAME).exists():
            add(ShardProblem(tar, "unindexed", f"not in index.json; {_rebuild_hint(root)}"))
    return report


def _rebuild_hint(root: Path) -> str:
    """How a user rebuilds ``index.json`` from the shard sidecars (there is no CLI command for it)."""
    return f"rebuild it with: python -c \"from inscene.shards import write_index; write_index('{root}')\""


def _read_sidecar(tar: Path) -> tuple[dict[str, Any] | None, ShardProblem | None]:
    """A tar's sidecar (None when absent or unreadable), and a problem when it is not JSON with
    ``count``, ``bytes`` and ``sha256``."""
    path = tar.with_name(tar.name + ".json")
    if not path.exists():
        return None, None
    try:
        info = _read_json(path)
        sidecar = {"count": int(info["count"]), "bytes": int(info["bytes"]), "sha256": str(info["sha256"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, ShardProblem(path, "corrupt", f"unreadable sidecar: {type(exc).__name__}: {exc}")
    return sidecar, None


def _verify_tar(
    tar: Path, entry: dict[str, Any] | None, report: VerifyReport, sidecar: dict[str, Any] | None = None
) -> ShardProblem | None:
    size = tar.stat().st_size
    if entry is not None and size < int(entry["bytes"]):
        return ShardProblem(tar, "truncated", f"{size} of {entry['bytes']} bytes")

    manifest_path = tar.with_name(tar.name[: -len(".tar")] + ".parquet")
    manifest: dict[str, dict[str, Any]] | None = None
    if manifest_path.exists():
        try:
            manifest = _load_manifest(manifest_path)
        except Exception as exc:  # noqa: BLE001 - any parquet failure means a damaged manifest
            return ShardProblem(manifest_path, "corrupt", f"unreadable manifest: {exc}")

    hasher = hashlib.sha256()
    seen: set[str] = set()
    bad: list[str] = []
    try:
        for key, group in _scan_tar(tar, hasher=hasher):
            report.samples_checked += 1
            seen.add(key)
            if manifest is None:
                continue
            row = manifest.get(key)
            if row is None:
                bad.append(f"sample {key} is not in the manifest")
                continue
            for fname, data in group.items():
                want = row.get(manifest_column("sha256", fname))
                if want is None:
                    bad.append(f"member {key}.{fname} is not in the manifest")
                elif hashlib.sha256(data).hexdigest() != want:
                    bad.append(f"member {key}.{fname}: sha256 differs from the manifest")
    except _Damage as exc:
        return ShardProblem(tar, exc.kind, exc.detail)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return ShardProblem(tar, "corrupt", bad[0] + more)
    if manifest is None:
        return ShardProblem(tar, "no_manifest", f"{manifest_path.name} not found")
    absent = sorted(set(manifest) - seen)
    if absent:
        return ShardProblem(tar, "corrupt", f"{len(absent)} manifest samples absent from the tar, e.g. {absent[0]}")
    if entry is not None and hasher.hexdigest() != entry["sha256"]:
        return ShardProblem(tar, "hash_mismatch", "tar sha256 differs from the index")
    if sidecar is not None:
        actual = {"count": len(seen), "bytes": size, "sha256": hasher.hexdigest()}
        differ = [k for k in ("count", "bytes", "sha256") if sidecar[k] != actual[k]]
        if differ:
            return ShardProblem(tar.with_name(tar.name + ".json"), "corrupt",
                                f"sidecar {', '.join(differ)} differs from the tar")
    return None


def format_report(report: VerifyReport) -> str:
    """Human summary of a :class:`VerifyReport`: a status line, then one line per problem."""
    head = f"{report.shards_checked} shards, {report.samples_checked} samples checked in {report.root}"
    if report.ok:
        return f"OK: {head}"
    lines = [f"FAILED: {len(report.problems)} problem(s); {head}"]
    width = max(len(p.kind) for p in report.problems)
    for p in report.problems:
        lines.append(f"  {p.kind:<{width}}  {p.path}: {p.detail}")
    return "\n".join(lines)
