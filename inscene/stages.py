"""Stages and the partition runners every pipeline shares (DESIGN.md 'Stages').

A stage is a small picklable object with a ``name``, declared ``resources`` (e.g. ``{"GPU": 1}``),
``setup()`` run once per worker process, and ``__call__(item)`` returning the (possibly annotated)
item or a :class:`Rejection` with its reason and the values it measured. A stage with
``batch_size > 1`` and a ``call_batch(items)`` method (one result per item) receives the partition's
survivors in batches of that size instead (e.g. a GPU quality model); per-item stages run before
and after it as usual.

The runners split the items into partitions of at most ``partition_size`` (never more than one
shard's worth), map the stages over each partition (on Dask when given a client, else in this
process) and, per partition, write the accepted items to one shard and a decision log (parquet,
every measured value, ``m.<name>`` columns) atomically. Bad input is a rejection with its reason;
any other exception is an ``error`` row that does not stop the run. Just before the decision log,
a small record (``decisions/_part-NNNNN.shards.json``) names the files the sink committed for the
partition and their byte sizes (see :func:`committed_paths`). The decision log is written last and
is the partition's "done" marker: a rerun skips partitions that have one and whose recorded files
are all still there with their recorded sizes; a partition whose shard was deleted or truncated is
redone (its stale files removed first, one line saying so), so runs are resumable, a crash loses
at most the partitions in flight, and a damaged output is rebuilt rather than silently dropped.

Two runners share that contract and differ in how accepted items leave a partition and how
progress is shown:

* :func:`run_stages` hands a partition's accepted items to a :class:`Sink` at the partition's end
  and shows progress in partitions;
* :func:`inscene.batches.run_batched` streams each accepted item to a streaming sink as soon as it
  is accepted (so a worker holds at most one batch of images, whatever the partition size), clears
  what an interrupted attempt left of a partition before redoing it, and shows images/s.

Both are built from the pieces here: :func:`decide_partition` (stages over one partition, batching
included), :func:`commit_partition` (the decision log), :func:`plan_partitions` (resume),
:func:`submit_partitions` (Dask) and :func:`summarize` over :func:`read_decisions`.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from inscene.errors import BadInputError

log = logging.getLogger(__name__)

DECISIONS_DIR = "decisions"


@dataclass
class Item:
    """One unit of work flowing through stages.

    Attributes:
        key: unique key (becomes the shard key; no dots).
        source: where the item came from (path, URL, generator).
        data: payload (bytes, arrays) that stages read and replace.
        meta: flat metadata that ends up in the shard and manifest.
        measured: every value measured so far, across stages.
        backends: backend behind each measured value.
    """

    key: str
    source: str
    data: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    backends: dict[str, str] = field(default_factory=dict)


@dataclass
class Rejection:
    """A stage's refusal of an item, with its reason and what it measured."""

    stage: str
    reason: str
    measured: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    """What the runners need of a stage (a batched one adds ``batch_size`` and ``call_batch``)."""

    name: str
    resources: dict[str, float]

    def setup(self) -> None:
        """Load heavy state (models). Runs once per worker process."""

    def __call__(self, item: Item) -> Item | Rejection:
        """Process one item."""


class Sink(Protocol):
    """Where a partition's accepted items go (e.g. a shard writer)."""

    def __call__(self, partition: int, items: list[Item]) -> None:
        """Write the accepted items of one partition atomically."""


@dataclass
class RunSummary:
    """What a run did."""

    partitions: int
    skipped_partitions: int
    accepted: int
    rejected: int
    errors: int
    decisions: pd.DataFrame

    @property
    def by_reason(self) -> dict[str, int]:
        """Rejection counts per ``stage: reason``."""
        rej = self.decisions[~self.decisions["accepted"]]
        if rej.empty:
            return {}
        labels = rej["stage"].astype(str) + ": " + rej["reason"].astype(str)
        return labels.value_counts().to_dict()


def summarize(decisions: pd.DataFrame, partitions: int, skipped_partitions: int = 0) -> RunSummary:
    """A :class:`RunSummary` counting a run's decision rows (errors are neither accepted nor rejected)."""
    errors = int(decisions["error"].fillna(False).astype(bool).sum()) if len(decisions) else 0
    accepted = int(decisions["accepted"].astype(bool).sum()) if len(decisions) else 0
    return RunSummary(
        partitions=partitions,
        skipped_partitions=skipped_partitions,
        accepted=accepted,
        rejected=len(decisions) - accepted - errors,
        errors=errors,
        decisions=decisions,
    )


def decision_path(out_dir: Path, partition: int) -> Path:
    """Path of a partition's decision log."""
    return Path(out_dir) / DECISIONS_DIR / f"part-{partition:05d}.parquet"


def shards_record_path(out_dir: Path, partition: int) -> Path:
    """Path of the record of the files a partition committed (written just before its decision log).

    Its ``_`` prefix keeps it out of ``pd.read_parquet(out_dir / "decisions")`` (pyarrow skips such files).
    """
    return Path(out_dir) / DECISIONS_DIR / f"_part-{partition:05d}.shards.json"


def committed_paths(sink: Any, partition: int) -> list[Path]:
    """The files ``sink`` committed for ``partition`` (after its commit), to be checked on resume.

    A sink may say so itself with a ``committed_paths(partition)`` method. Otherwise a shard sink
    with ``root``, ``split`` and ``subset`` attributes is taken to write shard index ``partition``:
    its ``{root}/{split}/{subset}-{partition:05d}.tar`` with the manifest and sidecar next to it
    (those that exist). Any other sink names no files (its partitions are not checked on resume).
    """
    own = getattr(sink, "committed_paths", None)
    if callable(own):
        return [Path(p) for p in own(partition)]
    root, split, subset = (getattr(sink, name, None) for name in ("root", "split", "subset"))
    if not all(isinstance(v, str | os.PathLike) for v in (root, split, subset)):
        return []
    stem = Path(root) / str(split) / f"{subset}-{partition:05d}"
    return [p for p in (stem.with_suffix(".tar"), stem.with_suffix(".parquet"), stem.with_suffix(".tar.json"))
            if p.is_file()]


def _write_shards_record(out_dir: Path, partition: int, paths: list[Path]) -> None:
    files = {Path(os.path.relpath(p, out_dir)).as_posix(): p.stat().st_size for p in paths}
    path = shards_record_path(out_dir, partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _recorded_files(out_dir: Path, partition: int) -> dict[str, int] | None:
    """The files a partition's record names (relative to ``out_dir``) and sizes; None without a record.

    An unreadable record names a file that cannot exist, so its partition is redone.
    """
    path = shards_record_path(out_dir, partition)
    if not path.exists():
        return None
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
        return {str(k): int(v) for k, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {path.name: -1}


def _damage(out_dir: Path, partition: int) -> str | None:
    """Why a finished partition's committed files no longer match its record (None: they match).

    Cheap: existence and byte size only, no re-hashing. A log without a record (a run of an older
    version) is trusted, as before.
    """
    files = _recorded_files(out_dir, partition)
    for rel, size in sorted((files or {}).items()):
        path = out_dir / rel
        if size < 0:
            return f"{rel} unreadable"
        if not path.is_file():
            return f"{rel} missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{rel} is {actual} bytes, {size} committed"
    return None


def _remove_partition(out_dir: Path, partition: int) -> None:
    """Remove a partition's decision log, then its record and the committed files still there."""
    files = _recorded_files(out_dir, partition) or {}
    decision_path(out_dir, partition).unlink(missing_ok=True)
    shards_record_path(out_dir, partition).unlink(missing_ok=True)
    for rel in files:
        (out_dir / rel).unlink(missing_ok=True)


def read_decisions(out_dir: str | os.PathLike[str], partitions: Iterable[int] | None = None) -> pd.DataFrame:
    """The decision logs of a run folder (all of them, or those of ``partitions``), in partition order."""
    if partitions is None:
        paths = sorted((Path(out_dir) / DECISIONS_DIR).glob("part-*.parquet"))
    else:
        paths = [decision_path(Path(out_dir), i) for i in partitions]
    frames = [pd.read_parquet(p) for p in paths if p.exists()]
    if not frames:
        return pd.DataFrame(columns=["key", "source", "accepted", "stage", "reason", "error", "partition"])
    return pd.concat(frames, ignore_index=True)


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write a table via a temp file, fsync and rename (columns of mixed types are stored as strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # mixed-type measured columns (e.g. a value that is sometimes a string) are stored as strings
    for col in df.columns:
        if df[col].dtype == object:
            kinds = {type(v) for v in df[col] if v is not None and v == v}
            if len(kinds) > 1:
                df[col] = df[col].map(lambda v: None if v is None else str(v))
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def ready_stages(stages: Sequence[Stage]) -> list[Stage]:
    """Set each stage up once per process (cached by the runtime's worker cache)."""
    from inscene.runtime import cached_backend

    ready = []
    for stage in stages:
        key = f"stage:{type(stage).__module__}.{type(stage).__qualname__}:{stage!r}"

        def factory(s: Stage = stage) -> Stage:
            s.setup()
            return s

        ready.append(cached_backend(key, factory))
    return ready


# ---- one partition: every item through the stages, one decision row each -----------------------------

Outcome = tuple[Item | None, dict[str, Any] | None]  # (surviving item, None) or (None, its decision row)


def _row(item: Item, *, accepted: bool, stage: str, reason: str, error: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {"key": item.key, "source": item.source, "accepted": accepted, "stage": stage,
                           "reason": reason, "error": error}
    row.update({f"m.{k}": v for k, v in item.measured.items()})
    row["backends"] = json.dumps(item.backends, sort_keys=True)
    return row


def _batch_size(stage: Any) -> int:
    return int(getattr(stage, "batch_size", 1) or 1) if hasattr(stage, "call_batch") else 1


def _outcome(stage: Any, item: Item, result: Any) -> Outcome:
    if isinstance(result, Rejection):
        item.measured.update(result.measured)
        return None, _row(item, accepted=False, stage=result.stage, reason=result.reason)
    if not isinstance(result, Item):
        return None, _row(item, accepted=False, stage=stage.name, error=True,
                          reason=f"error: stage returned {type(result).__name__}")
    return result, None


def _call_one(stage: Any, item: Item) -> Outcome:
    try:
        result = stage(item)
    except BadInputError as exc:  # bad input is a rejection with its reason, not a crash
        result = Rejection(stage.name, getattr(exc, "reason", None) or str(exc))
    except Exception as exc:  # a bug or an unexpected failure: record it, keep going
        log.debug("stage %s failed on %s:\n%s", stage.name, item.key, traceback.format_exc())
        return None, _row(item, accepted=False, stage=stage.name, reason=f"error: {type(exc).__name__}: {exc}",
                          error=True)
    return _outcome(stage, item, result)


def _call_batch(stage: Any, items: list[Item]) -> list[Outcome]:
    try:
        results = stage.call_batch(items)
        if len(results) != len(items):
            raise RuntimeError(f"call_batch returned {len(results)} results for {len(items)} items")
    except Exception:
        if len(items) == 1:
            return [_call_one(stage, items[0])]
        # isolate the failing item: every other item of the batch still gets its own verdict
        return [out for item in items for out in _call_batch(stage, [item])]
    return [_outcome(stage, item, res) for item, res in zip(items, results, strict=True)]


def decide_partition(
    ready: Sequence[Any],
    items: list[Item],
    partition: int,
    accept: Callable[[Item], None],
    on_item: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run a partition's items through set-up stages; ``accept`` gets each item that passes them all.

    Returns the decision rows in item order (``on_item`` is called with 1 as each item is decided).
    """
    sizes = [_batch_size(s) for s in ready]
    rows: dict[int, dict[str, Any]] = {}
    queues: dict[int, list[tuple[int, Item]]] = {i: [] for i, n in enumerate(sizes) if n > 1}

    def decided(idx: int, row: dict[str, Any]) -> None:
        row["partition"] = partition
        rows[idx] = row
        if on_item is not None:
            on_item(1)

    def advance(idx: int, item: Item, start: int) -> None:
        for s in range(start, len(ready)):
            if sizes[s] > 1:
                queues[s].append((idx, item))
                if len(queues[s]) >= sizes[s]:
                    flush(s)
                return
            kept, row = _call_one(ready[s], item)
            if kept is None:
                decided(idx, row)
                return
            item = kept
        accept(item)
        decided(idx, _row(item, accepted=True, stage=ready[-1].name if ready else "", reason=""))

    def flush(s: int) -> None:
        batch, queues[s] = queues[s], []
        results = _call_batch(ready[s], [it for _, it in batch]) if batch else []
        for (idx, _), (kept, row) in zip(batch, results, strict=True):
            if kept is None:
                decided(idx, row)
            else:
                advance(idx, kept, s + 1)

    for idx, item in enumerate(items):
        advance(idx, item, 0)
    for s in sorted(queues):
        flush(s)
    return [rows[i] for i in sorted(rows)]


def commit_partition(
    rows: list[dict[str, Any]], out_dir: str, partition: int, items: int, sink: Any = None
) -> dict[str, int]:
    """Record the files ``sink`` committed, write the decision log (the "done" marker) and return the counts.

    Call it after the sink committed the partition's output. The record names the files of
    :func:`committed_paths` (none when the partition accepted nothing) with their byte sizes.
    """
    out = Path(out_dir)
    accepted = sum(1 for r in rows if r["accepted"])
    _write_shards_record(out, partition, committed_paths(sink, partition) if accepted and sink is not None else [])
    write_parquet_atomic(pd.DataFrame(rows), decision_path(out, partition))
    return {
        "items": items,
        "accepted": accepted,
        "rejected": sum(1 for r in rows if not r["accepted"] and not r["error"]),
        "errors": sum(1 for r in rows if r["error"]),
    }


def run_partition(
    stages: Sequence[Stage], items: list[Item], partition: int, out_dir: str, sink: Sink
) -> dict[str, int]:
    """Process one partition end to end; safe to retry (outputs are replaced atomically)."""
    accepted: list[Item] = []
    rows = decide_partition(ready_stages(stages), items, partition, accepted.append)
    sink(partition, accepted)
    return commit_partition(rows, out_dir, partition, len(items), sink)


# ---- whole runs: partitions, resume, Dask, progress ---------------------------------------------------


def partition_items(items: Iterable[Item], size: int) -> list[list[Item]]:
    """Split items into consecutive partitions of at most ``size`` (order kept)."""
    if size <= 0:
        raise BadInputError(f"partition size must be positive, got {size}")
    parts: list[list[Item]] = [[]]
    for item in items:
        if len(parts[-1]) >= size:
            parts.append([])
        parts[-1].append(item)
    return [p for p in parts if p]


def plan_partitions(
    items: Iterable[Item], partition_size: int, out: Path, description: str
) -> tuple[list[list[Item]], list[int], str]:
    """The partitions, the indices of those still to do, and the progress label.

    A partition is done when it has a decision log and the files its record names are all there
    with their recorded sizes. Finished partitions whose files are gone or changed are redone: their
    stale log, record and files are removed here, and one line on the console names them and why.
    """
    parts = partition_items(items, partition_size)
    redo: dict[int, str] = {}
    todo = []
    for i in range(len(parts)):
        if not decision_path(out, i).exists():
            todo.append(i)
        elif (why := _damage(out, i)) is not None:
            redo[i] = why
            todo.append(i)
    if redo:
        from inscene.runtime import console

        for i in redo:
            _remove_partition(out, i)
        reasons = "; ".join(f"{i}: {why}" for i, why in redo.items())
        console.print(f"{description}: redoing {len(redo)} finished partition(s) whose committed files are gone "
                      f"or changed ({reasons})", markup=False, highlight=False)
    skipped = len(parts) - len(todo)
    return parts, todo, f"{description} ({skipped} partitions already done)" if skipped else description


def submit_partitions(
    client: Any,
    run_one: Callable[..., dict[str, int]],
    stages: Sequence[Any],
    parts: list[list[Item]],
    todo: list[int],
    out: Path,
    sink: Any,
    key_prefix: str,
) -> list[Any]:
    """Submit ``run_one(stages, items, partition, out_dir, sink)`` for each partition still to do.

    GPU stages take the GPU worker resource, but only where some worker offers one (a CPU-only
    cluster would otherwise never schedule them). Returns the futures, in ``todo`` order.
    """
    from inscene.runtime import gpu_resources

    needs_gpu = any(getattr(s, "resources", {}).get("GPU") for s in stages)
    resources = gpu_resources(client) if needs_gpu else None
    return [
        client.submit(run_one, list(stages), parts[i], i, str(out), sink,
                      key=f"{key_prefix}-{out.name}-{i:05d}", resources=resources, pure=False)
        for i in todo
    ]


def run_stages(
    stages: Sequence[Stage],
    items: Iterable[Item],
    out_dir: str | os.PathLike[str],
    sink: Sink,
    *,
    partition_size: int = 1000,
    client: Any = None,
    on_progress: Callable[[int, int], None] | None = None,
    description: str = "partitions",
) -> RunSummary:
    """Map stages over partitions of items, resumably.

    Args:
        stages: the stages, applied in order.
        items: the work items (materialised into partitions; keep payloads light, e.g. paths).
        out_dir: output folder; decision logs go to ``out_dir/decisions``.
        sink: writes each partition's accepted items (one shard per partition).
        partition_size: items per partition (at most one shard's worth).
        client: a ``distributed.Client``; None runs in this process.
        on_progress: called with (done, total) partitions.
        description: label of the progress bar (drawn on a terminal; one summary line otherwise).

    Returns:
        A :class:`RunSummary` over all partitions, including those finished by earlier runs.
    """
    from inscene.runtime import progress

    out = Path(out_dir)
    parts, todo, label = plan_partitions(items, partition_size, out, description)
    skipped = done = len(parts) - len(todo)
    if client is None or not todo:
        work = ((i, None) for i in todo)
        for i, _ in progress(work, label, total=len(todo)):
            run_partition(stages, parts[i], i, str(out), sink)
            done += 1
            if on_progress:
                on_progress(done, len(parts))
    else:
        futures = submit_partitions(client, run_partition, stages, parts, todo, out, sink, "partition")
        for fut in progress(futures, label):
            fut.result()  # re-raise a partition's failure here, with its traceback
            done += 1
            if on_progress:
                on_progress(done, len(parts))
    return summarize(read_decisions(out, range(len(parts))), len(parts), skipped)
