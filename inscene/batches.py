"""The streaming partition runner: batched stages, accepted items streamed to the shard, images/s.

:func:`inscene.stages.run_stages` hands a partition's accepted items to its sink at the partition's
end. The real-photo filter needs accepted 1024² crops to go to the shard as soon as they are
accepted, so a worker holds at most one batch of images whatever the partition size: that is
:func:`run_batched`, with a :class:`StreamingSink`. Batched stages (``batch_size > 1`` and
``call_batch``) work in both runners.

The contract is otherwise that of :mod:`inscene.stages` (and built from its pieces): one shard and
one decision log per partition, the log written last (the partition's "done" marker) just after the
record of the shard files committed, reruns skip finished partitions whose shard files are intact and
redo those whose shard was deleted or truncated, every measured value kept, bad input a rejection
with its reason, any other exception an ``error`` row that does not stop the run. Before a
partition is (re)processed the sink removes whatever an interrupted attempt left of it, so a rerun
after ``kill -9`` neither loses nor duplicates anything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from inscene.stages import (
    Item,
    RunSummary,
    commit_partition,
    decide_partition,
    plan_partitions,
    read_decisions,
    ready_stages,
    submit_partitions,
    summarize,
)


class PartitionWriter(Protocol):
    """Writes one partition's accepted items as they come."""

    def write(self, item: Item) -> None:
        """Add one accepted item."""

    def close(self) -> None:
        """Commit the partition's output atomically."""

    def abort(self) -> None:
        """Drop the uncommitted output."""


class StreamingSink(Protocol):
    """Where accepted items go, partition by partition, as they are accepted."""

    def clear(self, partition: int) -> None:
        """Remove any output an earlier, interrupted attempt left for this partition."""

    def open(self, partition: int) -> PartitionWriter:
        """A writer for this partition (called on its first accepted item only)."""


class PartitionOutput:
    """A partition's streaming output, used as ``with PartitionOutput(sink, partition) as out:``.

    Entering clears what an interrupted attempt left; :meth:`write` opens the sink's writer on the
    first accepted item; leaving commits the output, or drops it if anything failed.
    """

    def __init__(self, sink: StreamingSink, partition: int) -> None:
        self.sink, self.partition = sink, partition
        self._writer: PartitionWriter | None = None

    def __enter__(self) -> PartitionOutput:
        self.sink.clear(self.partition)
        return self

    def write(self, item: Item) -> None:
        """Stream one accepted item to the partition's shard."""
        if self._writer is None:
            self._writer = self.sink.open(self.partition)
        self._writer.write(item)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self._writer is None:
            return
        if exc_type is not None:
            self._writer.abort()
            return
        try:
            self._writer.close()
        except BaseException:
            self._writer.abort()
            raise


def process_partition(
    stages: Sequence[Any],
    items: list[Item],
    partition: int,
    out_dir: str,
    sink: StreamingSink,
    on_item: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Process one partition end to end, streaming accepted items; safe to retry (its outputs are replaced).

    Args:
        stages: the stages in order; a stage with ``batch_size > 1`` and ``call_batch`` is batched.
        items: the partition's items, in their stable order.
        partition: partition index (names the shard and the decision log).
        out_dir: run folder (decision logs go to ``out_dir/decisions``).
        sink: receives accepted items as they are accepted.
        on_item: called with 1 for each item decided (progress in this process).

    Returns:
        Counts: items, accepted, rejected, errors.
    """
    ready = ready_stages(stages)
    with PartitionOutput(sink, partition) as output:

        def accept(item: Item) -> None:
            output.write(item)
            item.data.clear()  # the encoded image is in the shard now; free it

        rows = decide_partition(ready, items, partition, accept, on_item)
    return commit_partition(rows, out_dir, partition, len(items), sink)


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
    """Map stages over partitions of items, resumably, batching stages that ask for it and streaming accepted items.

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

    out = Path(out_dir)
    parts, todo, label = plan_partitions(items, partition_size, out, description)
    total = sum(len(p) for p in parts)
    with _Rate(label, total, total - sum(len(parts[i]) for i in todo), console or runtime_console) as rate:
        if client is None or not todo:
            for i in todo:
                process_partition(stages, parts[i], i, str(out), sink, on_item=rate.advance)
        else:
            from distributed import as_completed

            futures = submit_partitions(client, process_partition, stages, parts, todo, out, sink, "batched-partition")
            for fut in as_completed(futures):
                counts = fut.result()  # re-raise a partition's failure here, with its traceback
                rate.advance(counts["items"])
    return summarize(read_decisions(out, range(len(parts))), len(parts), len(parts) - len(todo))
