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
