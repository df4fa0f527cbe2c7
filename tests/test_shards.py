"""Shards: writer, reader, manifests, index, integrity checks, loading with HF and webdataset."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inscene.errors import BadInputError, ShardError
from inscene.shards import (
    ShardReader,
    ShardWarning,
    ShardWriter,
    format_report,
    hf_data_files,
    shard_paths,
    verify_dataset,
    write_index,
)


def _png(seed: int, size: tuple[int, int] = (12, 10)) -> tuple[np.ndarray, bytes]:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return arr, buf.getvalue()


def _samples(n: int) -> list[tuple[str, dict[str, bytes], dict, dict[str, np.ndarray]]]:
    out = []
    for i in range(n):
        lq, lq_bytes = _png(2 * i)
        gt, gt_bytes = _png(2 * i + 1)
        meta = {
            "identity_id": f"id{i // 2:03d}",
            "score": 0.25 * i,
            "landmarks": [[1.5 * i, 2.0], [3.0, 4.0]],
        }
        out.append(
            (
                f"s{i:04d}",
                {"lq.png": lq_bytes, "gt.png": gt_bytes},
                meta,
                {"lq.png": lq, "gt.png": gt},
            )
        )
    return out


def _write(root: Path, n: int = 5, *, max_count: int = 2, subset: str = "syn") -> list:
    samples = _samples(n)
    with ShardWriter(root, "train", subset, max_count=max_count) as w:
        for key, members, meta, _ in samples:
            w.write(key, members, meta)
    return samples


def _member_data_offset(tar_path: Path, member: str) -> int:
    with tarfile.open(tar_path) as tf:
        return tf.getmember(member).offset_data


# -- writer ----------------------------------------------------------------------------------


def test_round_trip_keys_meta_and_images(tmp_path):
    samples = _write(tmp_path, 5)
    got = list(ShardReader(tmp_path))
    assert [s.key for s in got] == [key for key, *_ in samples]
    for sample, (_, members, meta, arrays) in zip(got, samples, strict=True):
        assert sample.meta == meta
        assert sample.members == members  # every member back, bytes untouched, json excluded
        assert sample.split == "train" and sample.subset == "syn"
        assert sample.shard.name.startswith("syn-") and sample.shard.suffix == ".tar"
        for name, arr in arrays.items():
            assert sample.images[name].dtype == np.uint8
            np.testing.assert_array_equal(sample.images[name], arr)
    # decode_images=False leaves bytes only
    assert all(not s.images for s in ShardReader(tmp_path, decode_images=False))


def test_rollover_by_count_and_shard_names(tmp_path):
    _write(tmp_path, 5, max_count=2)
    names = [p.name for p in shard_paths(tmp_path)]
    assert names == ["syn-00000.tar", "syn-00001.tar", "syn-00002.tar"]
    index = json.loads((tmp_path / "index.json").read_text())
    shards = index["splits"]["train"]["subsets"]["syn"]["shards"]
    assert [s["count"] for s in shards] == [2, 2, 1]
    assert index["count"] == 5 and index["splits"]["train"]["count"] == 5


def test_rollover_by_bytes(tmp_path):
    rng = np.random.default_rng(0)
    # a 2500-byte member takes 3072 tar bytes (512 header + data padded to 512)
    blobs = [rng.bytes(2500) for _ in range(5)] + [rng.bytes(20_000)]
    with ShardWriter(tmp_path, "train", "b", max_count=1000, max_bytes=8000) as w:
        for i, blob in enumerate(blobs):
            w.write(f"k{i}", {"bin": blob})
    assert len(list(ShardReader(tmp_path, decode_images=False))) == 6
    index = json.loads((tmp_path / "index.json").read_text())
    per_shard = [s["count"] for s in index["splits"]["train"]["subsets"]["b"]["shards"]]
    # two samples (+ end-of-archive blocks) fit in 8000 bytes, a third would not;
    # the 20 KB sample is over the budget on its own and gets a shard of its own
    assert per_shard == [2, 2, 1, 1]


def test_no_tmp_left_and_manifest_before_tar(tmp_path):
    _write(tmp_path, 5)
    assert not list(tmp_path.rglob("*.tmp"))
    for tar in shard_paths(tmp_path):
        assert tar.with_suffix(".parquet").exists()
        assert tar.with_name(tar.name + ".json").exists()


def test_exception_inside_with_keeps_finished_shards_only(tmp_path):
    samples = _samples(3)
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(tmp_path, "train", "syn", max_count=2) as w:
            for key, members, meta, _ in samples:
                w.write(key, members, meta)
            raise RuntimeError("boom")
    assert [p.name for p in shard_paths(tmp_path)] == ["syn-00000.tar"]
    assert not list(tmp_path.rglob("*.tmp"))
    assert [s.key for s in ShardReader(tmp_path)] == ["s0000", "s0001"]


def test_reproducible_tar_bytes(tmp_path):
    _write(tmp_path / "a", 5)
    _write(tmp_path / "b", 5)
    a, b = shard_paths(tmp_path / "a"), shard_paths(tmp_path / "b")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=True):
        assert x.read_bytes() == y.read_bytes()


@pytest.mark.parametrize("key", ["a.b", "a/b", "", "sp ace", "ü"])
def test_invalid_key_rejected(tmp_path, key):
    with ShardWriter(tmp_path, "train", "syn") as w:
        with pytest.raises(BadInputError, match="invalid sample key"):
            w.write(key, {"bin": b"x"})


def test_duplicate_key_rejected(tmp_path):
    with ShardWriter(tmp_path, "train", "syn", max_count=1) as w:
        w.write("k", {"bin": b"x"})
        with pytest.raises(BadInputError, match="duplicate sample key 'k'"):
            w.write("k", {"bin": b"y"})


def test_inconsistent_meta_rejected(tmp_path):
    with ShardWriter(tmp_path, "train", "syn") as w:
        w.write("a", {"bin": b"x"}, {"identity_id": "i1", "score": 1.0})
        with pytest.raises(BadInputError, match="'score'"):
            w.write("b", {"bin": b"x"}, {"identity_id": "i1"})
        with pytest.raises(BadInputError, match="'extra'"):
            w.write("c", {"bin": b"x"}, {"identity_id": "i1", "score": 1.0, "extra": 2})
        with pytest.raises(BadInputError, match="'score' is str"):
            w.write("d", {"bin": b"x"}, {"identity_id": "i1", "score": "high"})
        with pytest.raises(BadInputError, match="'nested'"):
            w.write("e", {"bin": b"x"}, {"identity_id": "i1", "score": 1.0, "nested": {"a": 1}})
        with pytest.raises(BadInputError, match="reserved"):
            w.write("f", {"json": b"{}"}, {"identity_id": "i1", "score": 1.0})
        w.write("g", {"bin": b"x"}, {"identity_id": None, "score": 2.0})  # None always fits
    assert [s.key for s in ShardReader(tmp_path)] == ["a", "g"]


def test_existing_shard_not_overwritten_by_accident(tmp_path):
    _write(tmp_path, 1)
    with pytest.raises(BadInputError, match="already exists"):
        _write(tmp_path, 1)
    with ShardWriter(tmp_path, "train", "syn", overwrite=True) as w:
        w.write("new", {"bin": b"x"})
    assert [s.key for s in ShardReader(tmp_path)] == ["new"]


def test_manifest_columns_and_hashes(tmp_path):
    samples = _write(tmp_path, 3, max_count=10)
    df = pd.read_parquet(tmp_path / "train" / "syn-00000.parquet")
    assert list(df.columns) == [
        "__key__",
        "identity_id",
        "landmarks",
        "score",
        "sha256_gt_png",
        "size_gt_png",
        "sha256_json",
        "size_json",
        "sha256_lq_png",
        "size_lq_png",
    ]
    assert list(df["__key__"]) == [key for key, *_ in samples]
    tar = tmp_path / "train" / "syn-00000.tar"
    with tarfile.open(tar) as tf:
        for row, (key, members, meta, _) in zip(df.itertuples(), samples, strict=True):
            assert row.identity_id == meta["identity_id"] and row.score == meta["score"]
            assert row.sha256_lq_png == hashlib.sha256(members["lq.png"]).hexdigest()
            assert row.size_gt_png == len(members["gt.png"])
            stored_json = tf.extractfile(f"{key}.json").read()
            assert json.loads(stored_json) == meta
            assert row.sha256_json == hashlib.sha256(stored_json).hexdigest()


def test_index_lists_every_shard_with_size_and_sha(tmp_path):
    _write(tmp_path, 5, subset="syn")
    _write(tmp_path, 3, subset="real", max_count=10)
    index = json.loads((tmp_path / "index.json").read_text())
    subsets = index["splits"]["train"]["subsets"]
    assert {k: v["count"] for k, v in subsets.items()} == {"syn": 5, "real": 3}
    assert index["count"] == 8
    for sub in subsets.values():
        for shard in sub["shards"]:
            path = tmp_path / shard["file"]
            assert shard["bytes"] == path.stat().st_size
            assert shard["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert sub["bytes"] == sum(s["bytes"] for s in sub["shards"])


def test_concurrent_writers_disjoint_ranges_share_one_index(tmp_path):
    # Two partitions of one subset, interleaved, closing in reverse order.
    w1 = ShardWriter(tmp_path, "train", "syn", max_count=1, start_shard=0)
    w2 = ShardWriter(tmp_path, "train", "syn", max_count=1, start_shard=1000)
    w1.write("a", {"bin": b"1"})
    w2.write("b", {"bin": b"2"})
    w1.write("c", {"bin": b"3"})
    w2.close()
    w1.close()
    names = [p.name for p in shard_paths(tmp_path)]
    assert names == ["syn-00000.tar", "syn-00001.tar", "syn-01000.tar"]
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["count"] == 3
    assert verify_dataset(tmp_path).ok


# -- verify ----------------------------------------------------------------------------------


def test_verify_clean_folder_ok(tmp_path):
    _write(tmp_path, 5)
    report = verify_dataset(tmp_path)
    assert report.ok, format_report(report)
    assert report.shards_checked == 3 and report.samples_checked == 5
    assert format_report(report).startswith("OK: 3 shards, 5 samples")


def _damage(root: Path, how: str) -> Path:
    tar = root / "train" / "syn-00001.tar"
    if how == "truncated":
        data = tar.read_bytes()
        tar.write_bytes(data[: len(data) // 2])
    elif how == "corrupt":
        offset = _member_data_offset(tar, "s0003.lq.png") + 40
        data = bytearray(tar.read_bytes())
        data[offset] ^= 0xFF
        tar.write_bytes(bytes(data))
    elif how == "missing":
        tar.unlink()
    elif how == "orphan_tmp":
        tar = root / "train" / "syn-00003.tar.tmp"
        tar.write_bytes(b"partial")
    elif how == "no_manifest":
        tar.with_suffix(".parquet").unlink()
    elif how == "hash_mismatch":
        index = json.loads((root / "index.json").read_text())
        index["splits"]["train"]["subsets"]["syn"]["shards"][1]["sha256"] = "0" * 64
        (root / "index.json").write_text(json.dumps(index))
    elif how == "unindexed":
        index = json.loads((root / "index.json").read_text())
        del index["splits"]["train"]["subsets"]["syn"]["shards"][1]
        (root / "index.json").write_text(json.dumps(index))
    return tar


@pytest.mark.parametrize(
    "how",
    ["truncated", "corrupt", "missing", "orphan_tmp", "no_manifest", "hash_mismatch", "unindexed"],
)
def test_verify_names_damaged_shard_and_kind(tmp_path, how):
    _write(tmp_path, 5)
    path = _damage(tmp_path, how)
    report = verify_dataset(tmp_path)
    assert not report.ok
    assert [(p.path, p.kind) for p in report.problems] == [(path, how)]
    text = format_report(report)
    assert text.startswith("FAILED: 1 problem") and str(path) in text and how in text
    if how == "corrupt":
        assert "s0003.lq.png" in report.problems[0].detail


def test_verify_detects_cut_at_member_boundary_without_sidecar_or_index(tmp_path):
    _write(tmp_path, 5)
    tar = tmp_path / "train" / "syn-00001.tar"
    for meta_file in (tar.with_name(tar.name + ".json"), tmp_path / "index.json"):
        meta_file.unlink()
    cut = _member_data_offset(tar, "s0003.gt.png") - 512  # right before the s0003 headers
    tar.write_bytes(tar.read_bytes()[:cut])
    kinds = {(p.path.name, p.kind) for p in verify_dataset(tmp_path).problems}
    assert ("syn-00001.tar", "truncated") in kinds
    assert ("index.json", "missing") in kinds


# -- reader error policy -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["truncated", "corrupt_header", "missing"])
def test_reader_skip_warns_and_reads_good_shards(tmp_path, how):
    _write(tmp_path, 5)
    tar = tmp_path / "train" / "syn-00001.tar"
    if how == "corrupt_header":
        data = bytearray(tar.read_bytes())
        data[_member_data_offset(tar, "s0003.gt.png") - 512 + 3] ^= 0xFF  # a header byte
        tar.write_bytes(bytes(data))
    else:
        _damage(tmp_path, how)
    with pytest.warns(ShardWarning, match="syn-00001.tar"):
        keys = [s.key for s in ShardReader(tmp_path, on_error="skip")]
    assert "s0000" in keys and "s0001" in keys and "s0004" in keys
    assert "s0003" not in keys


def test_reader_detects_cut_at_member_boundary_without_sidecar(tmp_path):
    _write(tmp_path, 5)
    tar = tmp_path / "train" / "syn-00001.tar"
    tar.with_name(tar.name + ".json").unlink()
    cut = _member_data_offset(tar, "s0003.gt.png") - 512
    tar.write_bytes(tar.read_bytes()[:cut])
    with pytest.warns(ShardWarning, match=r"syn-00001\.tar: truncated"):
        keys = [s.key for s in ShardReader(tmp_path)]
    # s0002 precedes the cut, but nothing marks it complete (a member could follow), so the
    # reader withholds it rather than yield a sample that may be missing a field.
    assert keys == ["s0000", "s0001", "s0004"]


def test_reader_raise_names_the_shard(tmp_path):
    _write(tmp_path, 5)
    _damage(tmp_path, "truncated")
    reader = ShardReader(tmp_path, on_error="raise")
    with pytest.raises(ShardError, match="syn-00001.tar") as info:
        list(reader)
    assert info.value.exit_code == 1


def test_reader_filters_split_and_subset(tmp_path):
    _write(tmp_path, 2, subset="syn")
    with ShardWriter(tmp_path, "test", "real") as w:
        w.write("t0", {"bin": b"x"})
    assert [s.key for s in ShardReader(tmp_path, split="test")] == ["t0"]
    assert [s.key for s in ShardReader(tmp_path, subset="syn")] == ["s0000", "s0001"]
    assert hf_data_files(tmp_path) == {
        "test": [str(tmp_path / "test" / "real-00000.tar")],
        "train": [str(tmp_path / "train" / "syn-00000.tar")],
    }


def test_write_index_rebuilds_from_sidecars(tmp_path):
    _write(tmp_path, 5)
    before = (tmp_path / "index.json").read_bytes()
    (tmp_path / "index.json").unlink()
    write_index(tmp_path)
    assert (tmp_path / "index.json").read_bytes() == before


# -- loading with HF datasets and webdataset --------------------------------------------------


def test_hf_datasets_loads_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    import datasets

    samples = _write(tmp_path / "ds", 5)
    ds = datasets.load_dataset(
        "webdataset",
        data_files={"train": f"{tmp_path / 'ds'}/train/*.tar"},
        split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert ds.num_rows == 5
    assert isinstance(ds.features["lq.png"], datasets.Image)
    assert isinstance(ds.features["gt.png"], datasets.Image)
    assert ds["__key__"] == [key for key, *_ in samples]
    for row, (_, _, meta, arrays) in zip(ds, samples, strict=True):
        assert row["json"] == meta
        np.testing.assert_array_equal(np.asarray(row["lq.png"].convert("RGB")), arrays["lq.png"])
    assert any((tmp_path / "hf-cache").rglob("*.arrow"))  # the cache went where we asked
    # every metadata field is a column after flatten() (as the README shows)
    flat = ds.flatten()
    assert {f"json.{k}" for k in samples[0][2]} <= set(flat.column_names)
    assert flat["json." + next(iter(samples[0][2]))] == [meta[next(iter(meta))] for _, _, meta, _ in samples]


def test_webdataset_loads_folder(tmp_path):
    import webdataset as wds

    samples = _write(tmp_path, 5)
    urls = hf_data_files(tmp_path)["train"]
    got = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in got] == [key for key, *_ in samples]
    for s, (_, members, meta, _) in zip(got, samples, strict=True):
        assert json.loads(s["json"]) == meta
        assert s["lq.png"] == members["lq.png"] and s["gt.png"] == members["gt.png"]
    assert os.path.basename(got[0]["__url__"]) == "syn-00000.tar"


def test_end_of_archive_padding_is_complete_for_every_tail_length(tmp_path):
    """Regression: the zero padding after the last member (up to 11263 bytes) was cut at 10240,
    so about one shard in ten came out truncated. Sweep member sizes over a whole record."""
    import tarfile as _tarfile

    from inscene.shards import ShardWriter, verify_dataset

    for i, size in enumerate(range(512, 10240 + 512, 512)):  # every 512-byte tail offset
        root = tmp_path / f"r{i}"
        with ShardWriter(root, "train", "pad") as writer:
            writer.write("a", {"bin": bytes(size)}, {"n": size})
        tar = next((root / "train").glob("*.tar"))
        assert tar.stat().st_size % 10240 == 0, size
        with _tarfile.open(tar) as tf:
            assert [m.name for m in tf.getmembers()] == ["a.bin", "a.json"]
        assert verify_dataset(root).ok, size


def test_reader_decodes_16bit_gray_like_the_safe_decoder_and_skips_only_a_bad_sample(tmp_path):
    from inscene.imageio import decode_image

    ramp = (np.arange(256, dtype=np.uint16)[None].repeat(32, 0) * 257)  # 0..65535
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG")
    gray16 = buf.getvalue()
    with ShardWriter(tmp_path, "train", "s") as w:
        w.write("a", {"png": gray16})
        w.write("b", {"png": b"\x89PNG\r\n\x1a\n not really"})
        w.write("c", {"png": gray16})
    with pytest.warns(ShardWarning, match=r"sample b of shard .*s-00000\.tar: corrupt"):
        got = {s.key: s.images["png"] for s in ShardReader(tmp_path)}
    assert sorted(got) == ["a", "c"]  # the bad sample alone is skipped
    np.testing.assert_array_equal(got["a"], decode_image(gray16))
    assert got["a"].shape == (32, 256, 3) and got["a"][0, 128, 0] == 128  # scaled, not clipped to 255
    with pytest.raises(ShardError, match="sample b"):
        list(ShardReader(tmp_path, on_error="raise"))


def test_hash_backlog_is_bounded_in_bytes():
    import threading
    import time

    from inscene.shards import _Worker

    gate, ran = threading.Event(), []
    w = _Worker("test", max_bytes=100)
    try:
        w.submit(gate.wait, 60)  # holds 60 bytes until the gate opens
        second = threading.Thread(target=lambda: (w.submit(lambda: ran.append(2), 60), ran.append("queued")))
        second.start()
        time.sleep(0.2)
        assert ran == []  # 60 + 60 > 100: the second submit waits for the first task
        gate.set()
        second.join(5)
        w.wait()
        assert "queued" in ran and 2 in ran
        w.submit(lambda: ran.append(3), 1000)  # larger than the budget alone: still runs
        w.wait()
        assert ran[-1] == 3
    finally:
        gate.set()
        w.stop()


@pytest.mark.parametrize("content", ["garbage\n", json.dumps({"count": 2, "bytes": 10240, "sha256": "0" * 64})])
def test_verify_names_an_unreadable_or_wrong_sidecar_as_corrupt(tmp_path, content):
    _write(tmp_path, 5)
    sidecar = tmp_path / "train" / "syn-00001.tar.json"
    sidecar.write_text(content)
    report = verify_dataset(tmp_path)
    assert [(p.path, p.kind) for p in report.problems] == [(sidecar, "corrupt")]
    assert "sidecar" in report.problems[0].detail and str(sidecar) in format_report(report)


def test_verify_refuses_a_folder_without_shards_or_index_in_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hi")
    with pytest.raises(BadInputError, match="not an inscene dataset folder"):
        verify_dataset(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "inscene", "verify", str(tmp_path)], capture_output=True, text=True)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1
    assert f"not an inscene dataset folder (no shards, no index.json): {tmp_path}" in lines[0]


def test_verify_missing_index_hint_is_a_command_a_user_can_run(tmp_path):
    import subprocess
    import sys

    _write(tmp_path, 5)
    (tmp_path / "index.json").unlink()
    problem = next(p for p in verify_dataset(tmp_path).problems if p.kind == "missing")
    assert "write_index(root)" not in problem.detail
    command = problem.detail.split("rebuild it with: ", 1)[1]
    assert command.startswith("python -c ")
    code = command.removeprefix("python -c ").strip('"')
    subprocess.run([sys.executable, "-c", code], check=True)
    assert verify_dataset(tmp_path).ok
