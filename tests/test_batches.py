"""The streaming partition runner (inscene.batches) and batched stages in both runners."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from inscene.batches import PartitionOutput, run_batched
from inscene.stages import Rejection, decision_path, run_stages

from .test_stages import JsonSink, Measure, _items


@dataclass
class Score:
    """Batched: scores a batch at once; a batch holding item 6 fails as a whole."""

    name: str = "score"
    resources: dict = field(default_factory=dict)
    batch_size: int = 2
    batches: list = field(default_factory=list)

    def setup(self):
        pass

    def __call__(self, item):
        return self.call_batch([item])[0]

    def call_batch(self, items):
        self.batches.append([i.key for i in items])
        if any(i.source == "6" for i in items):
            raise RuntimeError("scorer crashed")
        for item in items:
            item.measured["score"] = int(item.source) * 10
        return [Rejection(self.name, "low") if i.source == "4" else i for i in items]


class Writer:
    def __init__(self, path: Path, fail_at: str | None):
        self.path, self.fail_at, self.keys = path, fail_at, []

    def write(self, item):
        if item.key == self.fail_at:
            raise KeyboardInterrupt  # as if the run were stopped mid-partition
        self.keys.append(item.key)

    def close(self):
        self.path.write_text(json.dumps(self.keys))

    def abort(self):
        self.path.with_name(self.path.name + ".aborted").touch()


@dataclass
class FolderSink:
    root: Path
    fail_at: str | None = None
    cleared: list = field(default_factory=list)

    def clear(self, partition):
        self.cleared.append(partition)
        (self.root / f"shard-{partition}.json").unlink(missing_ok=True)

    def open(self, partition):
        return Writer(self.root / f"shard-{partition}.json", self.fail_at)


def test_batched_stage_sees_survivors_in_batches_and_a_crash_costs_only_its_item(tmp_path):
    score = Score()
    summary = run_batched([Measure(), score], _items(10), tmp_path, FolderSink(tmp_path), partition_size=10)
    assert score.batches[:2] == [["k0", "k2"], ["k4", "k6"]]
    assert ["k4"] in score.batches and ["k6"] in score.batches  # the failed batch, retried one by one
    d = summary.decisions.set_index("key")
    assert list(summary.decisions["key"]) == [f"k{i}" for i in range(10)]  # item order, whatever the batching
    assert d.loc["k4", "reason"] == "low" and d.loc["k4", "m.score"] == 40
    assert bool(d.loc["k6", "error"]) and "scorer crashed" in d.loc["k6", "reason"]
    assert (summary.accepted, summary.rejected, summary.errors) == (3, 6, 1)
    assert json.loads((tmp_path / "shard-0.json").read_text()) == ["k0", "k2", "k8"]


def test_run_stages_hands_a_batched_stage_its_survivors_in_batches(tmp_path):
    score = Score(batch_size=3)
    summary = run_stages([Measure(), score], _items(12), tmp_path, JsonSink(str(tmp_path)), partition_size=12)
    assert score.batches[0] == ["k0", "k2", "k4"]
    assert summary.decisions.set_index("key").loc["k10", "m.score"] == 100


def test_an_interrupted_partition_is_aborted_then_redone_whole_on_rerun(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_batched([Measure()], _items(8), tmp_path, FolderSink(tmp_path, fail_at="k6"), partition_size=4)
    assert decision_path(tmp_path, 0).exists() and not decision_path(tmp_path, 1).exists()
    assert (tmp_path / "shard-1.json.aborted").exists()
    sink = FolderSink(tmp_path)
    again = run_batched([Measure()], _items(8), tmp_path, sink, partition_size=4)
    assert sink.cleared == [1] and again.skipped_partitions == 1
    assert json.loads((tmp_path / "shard-1.json").read_text()) == ["k4", "k6"]
    assert len(again.decisions) == 8 and again.accepted == 4


def test_partition_output_opens_no_writer_for_a_partition_without_accepted_items(tmp_path):
    sink = FolderSink(tmp_path)
    with PartitionOutput(sink, 3):
        pass
    assert sink.cleared == [3] and not list(tmp_path.iterdir())


def test_both_runners_write_the_same_decision_logs(tmp_path):
    streamed = run_batched([Measure(), Score()], _items(14), tmp_path / "a", FolderSink(tmp_path), partition_size=4)
    at_end = run_stages([Measure(), Score()], _items(14), tmp_path / "b", JsonSink(str(tmp_path)), partition_size=4)
    assert streamed.errors == 2  # k6 (the scorer) and k13 (Measure)
    pd.testing.assert_frame_equal(streamed.decisions, at_end.decisions)
    for i in range(4):
        assert decision_path(tmp_path / "a", i).read_bytes() == decision_path(tmp_path / "b", i).read_bytes()


@dataclass
class StreamingTarSink:
    """A streaming shard sink like filter-real's (shard index = partition index under root/split/subset)."""

    root: str
    split: str = "train"
    subset: str = "real"

    def clear(self, partition):
        for path in (Path(self.root) / self.split).glob(f"{self.subset}-{partition:05d}.*"):
            path.unlink()

    def open(self, partition):
        from inscene.shards import ShardWriter

        return TarWriter(ShardWriter(self.root, self.split, self.subset, start_shard=partition, overwrite=True))


@dataclass
class TarWriter:
    writer: object

    def write(self, item):
        self.writer.write(item.key, {"txt": item.key.encode() * 50}, item.meta)

    def close(self):
        self.writer.close()

    def abort(self):
        self.writer.abort()


def test_run_batched_rebuilds_deleted_and_truncated_shards_of_finished_partitions(tmp_path, capsys):
    data = tmp_path / "data"
    first = run_batched([Measure()], _items(12), tmp_path / "run", StreamingTarSink(str(data)), partition_size=4)
    shards = [data / "train" / f"real-{i:05d}.tar" for i in range(3)]
    originals = [p.read_bytes() for p in shards]
    shards[0].unlink()
    shards[2].write_bytes(originals[2][:512])
    again = run_batched([Measure()], _items(12), tmp_path / "run", StreamingTarSink(str(data)), partition_size=4)
    assert [p.read_bytes() for p in shards] == originals
    assert again.skipped_partitions == 1 and again.accepted == first.accepted == 6
    assert "redoing 2 finished partition(s)" in capsys.readouterr().err
