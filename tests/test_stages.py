"""The partition runner: decisions, rejections with reasons, errors kept, resume."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from inscene.errors import ImageDecodeError
from inscene.stages import Item, Rejection, decision_path, partition_items, run_stages


@dataclass
class Measure:
    name: str = "measure"
    resources: dict = field(default_factory=dict)

    def setup(self):
        pass

    def __call__(self, item):
        v = int(item.source)
        item.measured["value"] = v
        item.backends["value"] = "int()"
        if v == 13:
            raise RuntimeError("unlucky")
        if v == 7:
            raise ImageDecodeError("truncated", item.source)
        if v % 2:
            return Rejection(self.name, "odd", {"parity": 1})
        item.meta["value"] = v
        return item


@dataclass
class JsonSink:
    root: str
    calls: list = field(default_factory=list)

    def __call__(self, partition, items):
        path = Path(self.root) / f"out-{partition:05d}.json"
        path.write_text(json.dumps([i.meta for i in items]))


def _items(n):
    return [Item(key=f"k{i}", source=str(i)) for i in range(n)]


def test_every_item_gets_a_decision_with_reason_and_measurements(tmp_path):
    summary = run_stages([Measure()], _items(16), tmp_path, JsonSink(str(tmp_path)), partition_size=5)
    assert summary.partitions == 4
    assert summary.accepted == 8  # 0,2,...,14
    assert summary.errors == 1  # 13 raised a bug-like error: recorded, run continued
    assert summary.rejected == 7  # odd numbers except 13 (7 rejected as bad input)
    d = summary.decisions.set_index("key")
    assert d.loc["k3", "reason"] == "odd" and d.loc["k3", "m.parity"] == 1
    assert d.loc["k7", "reason"] == "truncated"
    assert "RuntimeError: unlucky" in d.loc["k13", "reason"]
    assert d.loc["k4", "m.value"] == 4 and bool(d.loc["k4", "accepted"])
    written = [m["value"] for p in sorted(tmp_path.glob("out-*.json")) for m in json.loads(p.read_text())]
    assert written == [0, 2, 4, 6, 8, 10, 12, 14]
    assert summary.by_reason["measure: odd"] == 6


def test_rerun_skips_finished_partitions_and_redoes_missing_ones(tmp_path):
    run_stages([Measure()], _items(12), tmp_path, JsonSink(str(tmp_path)), partition_size=4)
    decision_path(tmp_path, 1).unlink()  # as if partition 1 crashed before finishing
    (tmp_path / "out-00001.json").unlink()
    again = run_stages([Measure()], _items(12), tmp_path, JsonSink(str(tmp_path)), partition_size=4)
    assert again.skipped_partitions == 2
    assert (tmp_path / "out-00001.json").exists()
    assert len(again.decisions) == 12
    assert not list(tmp_path.rglob("*.tmp"))


def test_partitions_keep_order():
    parts = partition_items(_items(7), 3)
    assert [[i.key for i in p] for p in parts] == [["k0", "k1", "k2"], ["k3", "k4", "k5"], ["k6"]]


def test_decision_log_is_parquet_readable_without_inscene(tmp_path):
    run_stages([Measure()], _items(3), tmp_path, JsonSink(str(tmp_path)), partition_size=10)
    df = pd.read_parquet(decision_path(tmp_path, 0))
    assert list(df["key"]) == ["k0", "k1", "k2"]
    assert {"accepted", "stage", "reason", "m.value", "backends"} <= set(df.columns)


def test_error_rows_keep_the_backends_of_the_values_measured_before_the_failure(tmp_path):
    summary = run_stages([Measure()], _items(14), tmp_path, JsonSink(str(tmp_path)), partition_size=20)
    row = summary.decisions.set_index("key").loc["k13"]
    assert bool(row["error"]) and row["m.value"] == 13
    assert json.loads(row["backends"]) == {"value": "int()"}


@dataclass
class ReturnsNothing(Measure):
    name: str = "forgetful"

    def __call__(self, item):
        return None if item.key == "k1" else item


def test_a_stage_returning_neither_item_nor_rejection_is_an_error_row_and_the_run_goes_on(tmp_path):
    summary = run_stages([ReturnsNothing()], _items(3), tmp_path, JsonSink(str(tmp_path)), partition_size=10)
    assert (summary.accepted, summary.errors) == (2, 1)
    row = summary.decisions.set_index("key").loc["k1"]
    assert row["stage"] == "forgetful" and row["reason"] == "error: stage returned NoneType"


# -- resume checks the shards a finished partition committed --------------------------------------


@dataclass
class TarSink:
    """A shard sink like the pipelines' (shard index = partition index under root/split/subset)."""

    root: str
    split: str = "val"
    subset: str = "s"

    def __call__(self, partition, items):
        from inscene.shards import ShardWriter

        if not items:
            return
        with ShardWriter(self.root, self.split, self.subset, start_shard=partition, max_count=len(items)) as w:
            for item in items:
                w.write(item.key, {"txt": item.key.encode() * 100}, item.meta)


def test_rerun_rebuilds_a_deleted_shard_of_a_finished_partition_byte_identical(tmp_path, capsys):
    from inscene.shards import verify_dataset

    first = run_stages([Measure()], _items(12), tmp_path / "run", TarSink(str(tmp_path / "data")), partition_size=4)
    shard = tmp_path / "data" / "val" / "s-00001.tar"
    original = shard.read_bytes()
    for path in shard.parent.glob("s-00001.*"):
        path.unlink()
    again = run_stages([Measure()], _items(12), tmp_path / "run", TarSink(str(tmp_path / "data")), partition_size=4)
    assert shard.read_bytes() == original
    assert again.skipped_partitions == 2 and again.accepted == first.accepted == 6
    assert "redoing 1 finished partition(s)" in capsys.readouterr().err
    assert json.loads((tmp_path / "data" / "index.json").read_text())["count"] == 6
    assert verify_dataset(tmp_path / "data").ok


def test_rerun_redoes_a_finished_partition_whose_shard_was_truncated(tmp_path, capsys):
    run_stages([Measure()], _items(8), tmp_path / "run", TarSink(str(tmp_path / "data")), partition_size=4)
    shard = tmp_path / "data" / "val" / "s-00000.tar"
    original = shard.read_bytes()
    shard.write_bytes(original[:1000])
    again = run_stages([Measure()], _items(8), tmp_path / "run", TarSink(str(tmp_path / "data")), partition_size=4)
    assert again.skipped_partitions == 1 and again.accepted == 4
    assert shard.read_bytes() == original
    err = capsys.readouterr().err
    assert "0: " in err and "s-00000.tar is 1000 bytes" in err


def test_a_sink_can_name_its_committed_files_and_a_partition_without_accepted_items_needs_none(tmp_path):
    class NamingSink(JsonSink):
        def committed_paths(self, partition):
            return [Path(self.root) / f"out-{partition:05d}.json"]

    items = [Item(key=f"k{i}", source=str(v)) for i, v in enumerate([0, 1, 3, 5, 2])]  # partition 1: none accepted
    run_stages([Measure()], items, tmp_path, NamingSink(str(tmp_path)), partition_size=2)
    (tmp_path / "out-00000.json").unlink()
    (tmp_path / "out-00001.json").unlink()  # written but not committed as output: nothing accepted
    again = run_stages([Measure()], items, tmp_path, NamingSink(str(tmp_path)), partition_size=2)
    assert again.skipped_partitions == 2
    assert json.loads((tmp_path / "out-00000.json").read_text()) == [{"value": 0}]
    assert not (tmp_path / "out-00001.json").exists()
