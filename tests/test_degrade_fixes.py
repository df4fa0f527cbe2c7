"""Audit fixes to ``inscene degrade``: §4.1 version counts by split, input metadata carried through,
``--preview`` without ``--out``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from inscene import imageio
from inscene.config import DegradationSettings
from inscene.errors import BadInputError
from inscene.schema import Face, Provenance, Sample
from inscene.shards import ShardReader, ShardWriter
from pipelines.degrade import DegradeOptions, preview_path, run_degrade

SHA = "0" * 64


def _png(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    return imageio.encode_image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "png")


def _builder_meta(key: str, split: str) -> dict:
    """A record as build-synthetic writes it: the Sample's fields plus the builder's own columns."""
    face = Face(box=[4, 4, 20, 22], landmarks=[[8, 9], [15, 9], [12, 13], [9, 17], [15, 17]], score=0.9,
                backend="test")
    sample = Sample(key=key, split=split, subset="synthetic", width=32, height=32, identity_id="id3",
                    faces=[face], prompt="a person in a park", provenance=Provenance(source="g.png", sha256=SHA))
    return {**sample.to_meta(), "file_id": f"file-{key}", "identity_similarity": 0.61,
            "identity_similarity_mean": 0.55, "identity_similarity_max": 0.7, "generator_version": "flux-1.0",
            "generator_config": '{"steps": 28}', "face_landmarks68": json.dumps([[1.0, 2.0]] * 68),
            "prompt_source": "llm", "tags": ["park", "outdoor"]}


@pytest.fixture()
def shard_input(tmp_path):
    src = tmp_path / "src"
    for split, keys in (("train", ["t001"]), ("val", ["v001", "v002"])):
        with ShardWriter(src, split, "synthetic") as w:
            for i, key in enumerate(keys):
                w.write(key, {"hq.png": _png(i)}, _builder_meta(key, split))
    return src


def test_versions_default_to_the_papers_counts_by_split(shard_input, tmp_path):
    buf = io.StringIO()
    res = run_degrade(shard_input, tmp_path / "out", DegradeOptions(seed=1), console=Console(file=buf, width=200))
    assert res.ok and res.accepted == 3
    by_key = {s.key: s for s in ShardReader(tmp_path / "out")}
    assert by_key["t001"].meta["lq_versions"] == 5  # §4.1: five degraded versions per training image
    assert sorted(m for m in by_key["t001"].members if m.startswith("lq") and m.endswith(".png")) == [
        f"lq{k}.png" for k in range(5)]
    assert by_key["v001"].meta["lq_versions"] == by_key["v002"].meta["lq_versions"] == 1  # one fixed LQ
    text = buf.getvalue()
    assert "train/synthetic: 1 images x 5 version(s)" in text and "val/synthetic: 2 images x 1 version(s)" in text
    assert "§4.1 default for split 'train'" in text
    record = json.loads((tmp_path / "out" / "degrade.json").read_text())
    assert record["versions"] is None and record["versions_by_split"] == {"train": 5, "other": 1}


def test_explicit_versions_and_presets_override_the_split_default(shard_input, tmp_path):
    res = run_degrade(shard_input, tmp_path / "k2", DegradeOptions(versions=2, seed=1), split="train",
                      console=Console(quiet=True))
    assert [s.meta["lq_versions"] for s in ShardReader(tmp_path / "k2")] == [2]
    assert json.loads((tmp_path / "k2" / "degrade.json").read_text())["versions"] == 2 and res.ok
    run_degrade(shard_input, tmp_path / "d1", DegradeOptions(preset="d1"), split="train", console=Console(quiet=True))
    assert [s.meta["lq_versions"] for s in ShardReader(tmp_path / "d1")] == [1]  # one fixed operator
    s = DegradationSettings()
    assert [s.versions_for(x) for x in ("train", "train-synthetic", "val", "val-synthetic", "trainee")] == [
        5, 5, 1, 1, 1]
    assert DegradationSettings(train_versions_per_image=3).versions_for("train") == 3


def test_shard_input_metadata_is_carried_through_whole(shard_input, tmp_path):
    run_degrade(shard_input, tmp_path / "out", DegradeOptions(versions=1, seed=2), console=Console(quiet=True))
    for s in ShardReader(tmp_path / "out"):
        want = _builder_meta(s.key, s.split)
        for field, value in want.items():
            if field in ("degradation", "backends"):
                continue  # updated by degrade
            assert s.meta[field] == value, field
        assert s.meta["degradation"] and json.loads(s.meta["backends"])["degradation"] == "inscene-realesrgan"
        assert s.meta["lq_versions"] == 1 and s.meta["lq_output"] == "gt" and json.loads(s.meta["lq_params"])


def test_foreign_shard_metadata_is_carried_too(tmp_path):
    src = tmp_path / "src"
    with ShardWriter(src, "val", "web") as w:
        w.write("x1", {"jpg": imageio.encode_image(np.full((24, 24, 3), 128, np.uint8), "jpeg")},
                {"url": "https://example.org/x1.jpg", "caption": "a cat", "aesthetic": 5.5})
    run_degrade(src, tmp_path / "out", DegradeOptions(seed=0), console=Console(quiet=True))
    (s,) = list(ShardReader(tmp_path / "out"))
    assert (s.meta["url"], s.meta["caption"], s.meta["aesthetic"]) == ("https://example.org/x1.jpg", "a cat", 5.5)
    assert Sample.from_meta(s.meta).key == "x1" and s.meta["lq_versions"] == 1


def test_preview_without_out_writes_next_to_the_cwd(tmp_path):
    img = tmp_path / "holiday.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(img)
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    proc = subprocess.run([sys.executable, "-m", "inscene", "degrade", "--preview", str(img), "--draws", "1"],
                          capture_output=True, text=True, timeout=180, cwd=run_dir)
    assert proc.returncode == 0, proc.stderr
    grid = run_dir / "holiday-preview.png"
    assert proc.stdout.strip() == "holiday-preview.png" and grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = subprocess.run([sys.executable, "-m", "inscene", "degrade", "--preview", str(img), "--out", "grid"],
                          capture_output=True, text=True, timeout=180, cwd=run_dir)
    assert proc.returncode == 2 and "--out for --preview is the grid image" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_preview_path():
    assert preview_path(Path("a/b/photo.jpg")) == Path("photo-preview.png")
    assert preview_path(Path("x.png"), Path("out/grid.JPG")) == Path("out/grid.JPG")
    with pytest.raises(BadInputError, match="ending in .png"):
        preview_path(Path("x.png"), Path("degraded"))


# ---- robustness: changed inputs, modes, paths, damaged shards, bad --out ----------------------------


def _image_folder(folder: Path, n: int, size: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"img{i:02d}.png").write_bytes(_png(i, size))
    return folder


def test_rerun_over_changed_inputs_is_refused(tmp_path):
    imgs = _image_folder(tmp_path / "imgs", 4)
    opts = DegradeOptions(versions=1, seed=3)
    quiet = Console(quiet=True)
    assert run_degrade(imgs, tmp_path / "out", opts, partition_size=2, console=quiet).accepted == 4
    assert run_degrade(imgs, tmp_path / "out", opts, partition_size=2, console=quiet).accepted == 4  # resumes
    (imgs / "img00a.png").write_bytes(_png(9))  # sorts between img00 and img01: partitions would shift
    with pytest.raises(BadInputError, match="over other input files .* use a new --out"):
        run_degrade(imgs, tmp_path / "out", opts, partition_size=2, console=quiet)
    res = run_degrade(imgs, tmp_path / "out2", opts, partition_size=2, console=quiet)
    keys = [s.key for s in ShardReader(tmp_path / "out2")]
    assert res.accepted == 5 and sorted(keys) == sorted(set(keys)) and "img00a" in keys


def test_record_without_inputs_digest_still_resumes(tmp_path):
    imgs = _image_folder(tmp_path / "imgs", 2)
    opts = DegradeOptions(versions=1, seed=3)
    run_degrade(imgs, tmp_path / "out", opts, console=Console(quiet=True))
    rec = tmp_path / "out" / "degrade.json"
    old = json.loads(rec.read_text())
    del old["inputs_digest"]  # as written before inputs were fingerprinted
    rec.write_text(json.dumps(old))
    res = run_degrade(imgs, tmp_path / "out", opts, console=Console(quiet=True))
    assert res.ok and res.accepted == 2 and "inputs_digest" in json.loads(rec.read_text())


def test_same_command_from_another_folder_resumes(tmp_path, monkeypatch):
    _image_folder(tmp_path / "imgs", 2)
    opts = DegradeOptions(versions=1, seed=3)
    monkeypatch.chdir(tmp_path)
    run_degrade(Path("imgs"), tmp_path / "out", opts, console=Console(quiet=True))
    assert json.loads((tmp_path / "out" / "degrade.json").read_text())["input"] == str((tmp_path / "imgs").resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = run_degrade(Path("../imgs"), tmp_path / "out", opts, console=Console(quiet=True))
    assert res.ok and res.accepted == 2


def test_in_process_and_dask_write_the_same_bytes_whatever_the_thread_count(tmp_path):
    import tarfile

    import skimage.data
    import torch

    from inscene.runtime import ClusterOptions

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    photo = skimage.data.astronaut()
    for i in range(2):
        (imgs / f"a{i}.png").write_bytes(imageio.encode_image(photo[i * 64: i * 64 + 192, :192], "png"))
    opts = DegradeOptions(versions=3, seed=5)
    before = torch.get_num_threads()
    torch.set_num_threads(8)  # an in-process run on a many-core machine
    try:
        local = run_degrade(imgs, tmp_path / "local", opts, console=Console(quiet=True))
    finally:
        torch.set_num_threads(before)
    dask = run_degrade(imgs, tmp_path / "dask", opts, console=Console(quiet=True),
                       cluster=ClusterOptions(workers=1))
    assert local.ok and dask.ok and dask.accepted == 2

    def members(root: Path) -> dict[str, bytes]:
        out = {}
        for tar in sorted(root.rglob("*.tar")):
            with tarfile.open(tar) as tf:
                out.update({m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith(".png")})
        return out

    assert members(tmp_path / "dask") == members(tmp_path / "local")


@pytest.mark.parametrize("damage", ["truncated", "bad_checksum"])
def test_a_damaged_input_shard_is_named_skipped_and_fails_the_run(shard_input, tmp_path, damage):
    import tarfile

    tar = sorted((shard_input / "val").glob("*.tar"))[0]
    data = bytearray(tar.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        with tarfile.open(tar) as tf:
            later = tf.getmembers()[2].offset  # a later member's header: tarfile would stop there silently
        data[later + 148] ^= 0xFF  # a byte of its checksum field
    tar.write_bytes(bytes(data))
    buf = io.StringIO()
    res = run_degrade(shard_input, tmp_path / "out", DegradeOptions(versions=1), console=Console(file=buf, width=300))
    assert not res.ok and res.damaged_inputs and str(tar) in res.damaged_inputs[0]
    assert f"skipping damaged input shard {tar}" in buf.getvalue()
    assert res.accepted == 1  # the train shard is still degraded


@pytest.mark.parametrize("case", ["file", "under_file"])
def test_out_that_is_a_file_is_one_line_exit_2(tmp_path, case):
    imgs = _image_folder(tmp_path / "imgs", 1)
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" if case == "file" else tmp_path / "afile" / "sub"
    proc = subprocess.run([sys.executable, "-m", "inscene", "degrade", str(imgs), "--out", str(out), "--in-process"],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "--out" in proc.stderr and "Traceback" not in proc.stderr and "FileExistsError" not in proc.stderr
