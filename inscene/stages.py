"""Stages and the partition runner every pipeline shares (DESIGN.md 'Stages').

A stage is a small picklable object with a ``name``, declared ``resources`` (e.g. ``{"GPU": 1}``),
``setup()`` run once per worker process, and ``__call__(item)`` returning the (possibly annotated)
item or a :class:`Rejection` with its reason and the values it measured.

The runner splits the items into partitions of at most ``partition_size`` (never more than one
shard's worth), maps the stages over each partition (on Dask when given a client, else in this
process) and, per partition, writes the accepted items to one shard through the sink and a
decision log (parquet, every measured value) atomically. The decision log is written last and is
the partition's "done" marker: a rerun skips partitions that have one, so runs are resumable and a
crash loses at most the partitions in flight.
"""

from __future__ import annotations

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
    """What the runner needs of a stage."""

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


def decision_path(out_dir: Path, partition: int) -> Path:
    """Path of a partition's decision log."""
    return Path(out_dir) / DECISIONS_DIR / f"part-{partition:05d}.parquet"


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


def _apply(stages: Sequence[Stage], item: Item) -> tuple[Item | None, dict[str, Any]]:
    """Run one item through the stages; returns the accepted item (or None) and its decision row."""
    row: dict[str, Any] = {"key": item.key, "source": item.source}
    for stage in stages:
        try:
            out = stage(item)
        except BadInputError as exc:  # bad input is a rejection with its reason, not a crash
            out = Rejection(stage.name, getattr(exc, "reason", None) or str(exc))
        except Exception as exc:  # a bug or an unexpected failure: record it, keep going
            log.debug("stage %s failed on %s:\n%s", stage.name, item.key, traceback.format_exc())
            row.update(accepted=False, stage=stage.name, reason=f"error: {type(exc).__name__}: {exc}")
            row["error"] = True
            row.update({f"m.{k}": v for k, v in item.measured.items()})
            return None, row
        if isinstance(out, Rejection):
            item.measured.update(out.measured)
            row.update(accepted=False, stage=out.stage, reason=out.reason, error=False)
            row.update({f"m.{k}": v for k, v in item.measured.items()})
            row["backends"] = _json(item.backends)
            return None, row
        item = out
    row.update(accepted=True, stage=stages[-1].name if stages else "", reason="", error=False)
    row.update({f"m.{k}": v for k, v in item.measured.items()})
    row["backends"] = _json(item.backends)
    return item, row


def _json(d: dict[str, str]) -> str:
    import json

    return json.dumps(d, sort_keys=True)


def run_partition(
    stages: Sequence[Stage], items: list[Item], partition: int, out_dir: str, sink: Sink
) -> dict[str, int]:
    """Process one partition end to end; safe to retry (outputs are replaced atomically)."""
    ready = ready_stages(stages)
    accepted: list[Item] = []
    rows: list[dict[str, Any]] = []
    for item in items:
        kept, row = _apply(ready, item)
        row["partition"] = partition
        rows.append(row)
        if kept is not None:
            accepted.append(kept)
    sink(partition, accepted)
    _write_parquet_atomic(pd.DataFrame(rows), decision_path(Path(out_dir), partition))
    return {
        "accepted": len(accepted),
        "rejected": sum(1 for r in rows if not r["accepted"] and not r.get("error")),
        "errors": sum(1 for r in rows if r.get("error")),
    }


def _write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
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
    out = Path(out_dir)
    parts = partition_items(items, partition_size)
    todo = [i for i in range(len(parts)) if not decision_path(out, i).exists()]
    skipped = len(parts) - len(todo)
    needs_gpu = any(s.resources.get("GPU") for s in stages)
    from inscene.runtime import gpu_resources, progress

    done = skipped
    label = f"{description} ({skipped} partitions already done)" if skipped else description
    if client is None or not todo:
        work = ((i, None) for i in todo)
        for i, _ in progress(work, label, total=len(todo)):
            run_partition(stages, parts[i], i, str(out), sink)
            done += 1
            if on_progress:
                on_progress(done, len(parts))
    else:
        # GPU stages take the GPU worker resource, but only where some worker offers one
        # (a CPU-only cluster would otherwise never schedule them).
        resources = gpu_resources(client) if needs_gpu else None
        futures = [
            client.submit(
                run_partition, list(stages), parts[i], i, str(out), sink,
                key=f"partition-{out.name}-{i:05d}", resources=resources, pure=False,
            )
            for i in todo
        ]
        for fut in progress(futures, label):
            fut.result()  # re-raise a partition's failure here, with its traceback
            done += 1
            if on_progress:
                on_progress(done, len(parts))
    frames = [pd.read_parquet(decision_path(out, i)) for i in range(len(parts))]
    decisions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["key", "source", "accepted", "stage", "reason", "error", "partition"]
    )
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
