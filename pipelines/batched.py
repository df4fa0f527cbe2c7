"""A partition runner with batched stages and streaming sinks (same on-disk contract as inscene.stages).

:func:`inscene.stages.run_stages` calls every stage on one item at a time and hands a partition's
accepted items to the sink at its end. Two things the real-photo filter needs do not fit that:

* **batched stages**: a GPU quality model scores a batch of crops much faster than one at a time.
  A stage with ``batch_size > 1`` and a ``call_batch(items)`` method receives the partition's
  survivors in batches of that size (per-item stages run before and after it as usual);
* **streaming sinks**: accepted 1024² crops go to the shard as soon as they are accepted, so a
  worker holds at most one batch of images, whatever the partition size.

The contract is otherwise that of :mod:`inscene.stages`: one shard and one decision log per
partition, the log written last (the partition's "done" marker), reruns skip finished partitions,
every measured value kept (``m.<name>`` columns), bad input a rejection with its reason, any other
exception an ``error`` row that does not stop the run. Before a partition is (re)processed the sink
removes whatever an interrupted attempt left of it, so a rerun after ``kill -9`` neither loses nor
duplicates anything.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from inscene.errors import BadInputError
from inscene.stages import Item, Rejection, RunSummary, decision_path, partition_items, ready_stages

log = logging.getLogger(__name__)


class PartitionWriter(Protocol):
    """Writes one partition's accepted items as they come."""

    def write(self, item: Item) -> None:
        """Add one accepted item."""

    def close(self) -> None:
        """Commit the partition's output atomically."""

    def abort(self) -> None:
        """Drop the uncommitted output."""


class StreamingSink(Protocol):
    """Where accepted items go, partition by partition."""

    def clear(self, partition: int) -> None:
        """Remove any output an earlier, interrupted attempt left for this partition."""

    def open(self, partition: int) -> PartitionWriter:
        """A writer for this partition (called on its first accepted item only)."""


def _batch_size(stage: Any) -> int:
    return int(getattr(stage, "batch_size", 1) or 1) if hasattr(stage, "call_batch") else 1


def _row(item: Item, *, accepted: bool, stage: str, reason: str, error: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {"key": item.key, "source": item.source, "accepted": accepted, "stage": stage,
                           "reason": reason, "error": error}
    row.update({f"m.{k}": v for k, v in item.measured.items()})
    row["backends"] = json.dumps(item.backends, sort_keys=True)
    return row


def _outcome(stage: Any, item: Item, result: Any) -> tuple[Item | None, dict[str, Any] | None]:
    """(surviving item, None) or (None, its decision row)."""
    if isinstance(result, Rejection):
        item.measured.update(result.measured)
        return None, _row(item, accepted=False, stage=result.stage, reason=result.reason)
    if not isinstance(result, Item):
        return None, _row(item, accepted=False, stage=stage.name, error=True,
                          reason=f"error: stage returned {type(result).__name__}")
    return result, None


def _call_one(stage: Any, item: Item) -> tuple[Item | None, dict[str, Any] | None]:
    try:
        result = stage(item)
    except BadInputError as exc:  # bad input is a rejection with its reason, not a crash
        result = Rejection(stage.name, getattr(exc, "reason", None) or str(exc))
    except Exception as exc:  # a bug or an unexpected failure: record it, keep going
        log.debug("stage %s failed on %s:\n%s", stage.name, item.key, traceback.format_exc())
        return None, _row(item, accepted=False, stage=stage.name, reason=f"error: {type(exc).__name__}: {exc}",
                          error=True)
    return _outcome(stage, item, result)


def _call_batch(stage: Any, items: list[Item]) -> list[tuple[Item | None, dict[str, Any] | None]]:
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


def process_partition(
    stages: Sequence[Any],
    items: list[Item],
    partition: int,
    out_dir: str,
    sink: StreamingSink,
    on_item: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Process one partition end to end; safe to retry (its outputs are replaced).

    Args:
        stages: the stages in order; a stage with ``batch_size > 1`` and ``call_batch`` is batched.
        items: the partition's items, in their stable order.
        partition: partition index (names the shard and the decision log).
        out_dir: run folder (decision logs go to ``out_dir/decisions``).
        sink: receives accepted items as they are accepted.
        on_item: called with 1 for each item decided (progress in this process).

    Returns:
        Counts: accepted, rejected, errors.
    """
    ready = ready_stages(stages)
    sizes = [_batch_size(s) for s in ready]
    rows: dict[int, dict[str, Any]] = {}
    queues: dict[int, list[tuple[int, Item]]] = {i: [] for i, n in enumerate(sizes) if n > 1}
    writer: PartitionWriter | None = None
    sink.clear(partition)

    def decided(idx: int, row: dict[str, Any]) -> None:
        row["partition"] = partition
        rows[idx] = row
        if on_item is not None:
            on_item(1)

    def advance(idx: int, item: Item, start: int) -> None:
        nonlocal writer
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
        if writer is None:
            writer = sink.open(partition)
        writer.write(item)
        decided(idx, _row(item, accepted=True, stage=ready[-1].name if ready else "", reason=""))
        item.data.clear()  # the encoded image is in the shard now; free it

    def flush(s: int) -> None:
        batch, queues[s] = queues[s], []
        if not batch:
            return
        results = _call_batch(ready[s], [it for _, it in batch])
        for (idx, _), (kept, row) in zip(batch, results, strict=True):
            if kept is None:
                decided(idx, row)
            else:
                advance(idx, kept, s + 1)

    try:
        for idx, item in enumerate(items):
            advance(idx, item, 0)
        for s in sorted(queues):
            flush(s)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    ordered = [rows[i] for i in sorted(rows)]
    write_parquet_atomic(pd.DataFrame(ordered), decision_path(Path(out_dir), partition))
    return {
        "items": len(items),
        "accepted": sum(1 for r in ordered if r["accepted"]),
        "rejected": sum(1 for r in ordered if not r["accepted"] and not r["error"]),
        "errors": sum(1 for r in ordered if r["error"]),
    }


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write a decision log via a temp file, fsync and rename (columns of mixed types as strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    for col in df.columns:
        if df[col].dtype == object:
            kinds = {type(v) for v in df[col] if v is not None and v == v}
            if len(kinds) > 1:
                df[col] = df[col].map(lambda v: None if v is None else str(v))
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_decisions(out_dir: str | os.PathLike[str], partitions: Iterable[int] | None = None) -> pd.DataFrame:
    """All decision logs of a run folder, in partition order."""
    folder = Path(out_dir) / "decisions"
    if partitions is None:
        paths = sorted(folder.glob("part-*.parquet"))
    else:
        paths = [decision_path(Path(out_dir), i) for i in partitions]
    frames = [pd.read_parquet(p) for p in paths if p.exists()]
    if not frames:
        return pd.DataFrame(columns=["key", "source", "accepted", "stage", "reason", "error", "partition"])
    return pd.concat(frames, ignore_index=True)


class _Rate:
    """Progress in images with images/s: a live bar on a terminal, one line at the end otherwise."""

    def __init__(self, description: str, total: int, done: int, console: Console) -> None:
        self.description, self.total, self.done, self.console = description, total, done, console
        self.new = 0
        self.start = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Rate:
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.console, transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.done, rate="")
        return self

    def advance(self, n: int) -> None:
        self.done += n
        self.new += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{self.rate:.1f} images/s")

    @property
    def rate(self) -> float:
        return self.new / max(time.perf_counter() - self.start, 1e-9)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elapsed = time.perf_counter() - self.start
        self.console.print(
            f"{self.description}: {self.done}/{self.total} images, {self.new} processed in {elapsed:.1f}s "
            f"({self.rate:.1f} images/s)", markup=False, highlight=False,
        )


def run_batched(
    stages: Sequence[Any],
    items: Iterable[Item],
    out_dir: str | os.PathLike[str],
    sink: StreamingSink,
    *,
    partition_size: int = 500,
    client: Any = None,
    description: str = "images",
    console: Console | None = None,
) -> RunSummary:
    """Map stages over partitions of items, resumably, batching stages that ask for it.

    Args:
        stages: the stages, in order.
        items: the work items (light: keep payloads to references, not pixels).
        out_dir: run folder; decision logs go to ``out_dir/decisions``.
        sink: streaming sink (one shard per partition).
        partition_size: items per partition.
        client: a ``distributed.Client``; None runs in this process.
        description: label of the progress bar and of the final line.
        console: where progress goes (default: the runtime console, stderr).

    Returns:
        A :class:`inscene.stages.RunSummary` over all partitions, earlier runs' included.
    """
    from inscene.runtime import console as runtime_console
    from inscene.runtime import gpu_resources

    out = Path(out_dir)
    con = console or runtime_console
    parts = partition_items(items, partition_size)
    todo = [i for i in range(len(parts)) if not decision_path(out, i).exists()]
    skipped = len(parts) - len(todo)
    total = sum(len(p) for p in parts)
    already = total - sum(len(parts[i]) for i in todo)
    label = f"{description} ({skipped} partitions already done)" if skipped else description
    with _Rate(label, total, already, con) as rate:
        if client is None or not todo:
            for i in todo:
                process_partition(stages, parts[i], i, str(out), sink, on_item=rate.advance)
        else:
            from distributed import as_completed

            needs_gpu = any(getattr(s, "resources", {}).get("GPU") for s in stages)
            resources = gpu_resources(client) if needs_gpu else None
            futures = [
                client.submit(
                    process_partition, list(stages), parts[i], i, str(out), sink,
                    key=f"filter-partition-{out.name}-{i:05d}", resources=resources, pure=False,
                )
                for i in todo
            ]
            for fut in as_completed(futures):
                counts = fut.result()  # re-raise a partition's failure here, with its traceback
                rate.advance(counts["items"])
    decisions = read_decisions(out, range(len(parts)))
    errors = int(decisions["error"].fillna(False).astype(bool).sum()) if len(decisions) else 0
    accepted = int(decisions["accepted"].astype(bool).sum()) if len(decisions) else 0
    return RunSummary(
        partitions=len(parts),
        skipped_partitions=skipped,
        accepted=accepted,
        rejected=len(decisions) - accepted - errors,
        errors=errors,
        decisions=decisions,
    )
