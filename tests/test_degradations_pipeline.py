"""`inscene degrade`: K-version LQ shards, byte-identical per seed, resumable, replayable params."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inscene import imageio
from inscene.degradations import apply, load_params
from inscene.errors import BadInputError
from inscene.schema import Face, Provenance, Sample
from inscene.shards import ShardReader, ShardWriter, verify_dataset
from pipelines.degrade import DegradeOptions, render_preview, run_degrade

SHA = "0" * 64


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    import skimage.data

    folder = tmp_path_factory.mktemp("imgs")
    for name, size in (("astronaut", (72, 64)), ("coffee", (64, 80)), ("chelsea", (96, 64))):
        Image.fromarray(getattr(skimage.data, name)()).resize(size).save(folder / f"{name}.png")
    (folder / "sub").mkdir()
    Image.fromarray(skimage.data.rocket()).resize((64, 64)).save(folder / "sub" / "rocket.jpg", quality=92)
    return folder


def _tars(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.tar"))}


def test_same_seed_gives_byte_identical_shards_and_params_replay(image_folder, tmp_path):
    opts = DegradeOptions(versions=2, seed=7)
    a = run_degrade(image_folder, tmp_path / "a", opts, partition_size=3)
    run_degrade(image_folder, tmp_path / "b", opts, partition_size=2)  # other partitioning
    assert a.ok and a.accepted == 4
    ta, tb = _tars(tmp_path / "a"), _tars(tmp_path / "b")
    assert len(ta) == 2 and len(tb) == 2
    samples_a = {s.key: s for s in ShardReader(tmp_path / "a")}
    samples_b = {s.key: s for s in ShardReader(tmp_path / "b")}
    assert set(samples_a) == {"astronaut", "coffee", "chelsea", "sub__rocket"}
    for key, s in samples_a.items():
        assert s.members == samples_b[key].members  # same bytes whatever the partitioning
    run_degrade(image_folder, tmp_path / "c", DegradeOptions(versions=2, seed=7), partition_size=3)
    assert _tars(tmp_path / "c") == ta  # same seed, same options: byte-identical shards
    d = run_degrade(image_folder, tmp_path / "d", DegradeOptions(versions=2, seed=8), partition_size=3)
    assert d.ok and _tars(tmp_path / "d") != ta
    assert verify_dataset(tmp_path / "a").ok

    s = samples_a["coffee"]
    assert sorted(s.members) == ["hq.png", "lq0.json", "lq0.png", "lq1.json", "lq1.png"]
    hq = s.images["hq.png"]
    assert s.images["lq0.png"].shape == hq.shape  # LQ stored at GT size
    assert s.meta["lq_versions"] == 2 and s.meta["split"] == "val"
    p0, p1 = (load_params(s.members[f"lq{k}.json"]) for k in range(2))
    assert p0 != p1
    np.testing.assert_array_equal(apply(hq, p0), s.images["lq0.png"])  # stored params replay exactly
    np.testing.assert_array_equal(apply(hq, p1), s.images["lq1.png"])
    assert json.loads(s.meta["lq_params"])[1] == json.loads(s.members["lq1.json"])


def test_rerun_resumes_and_changed_options_are_refused(image_folder, tmp_path):
    out = tmp_path / "o"
    first = run_degrade(image_folder, out, DegradeOptions(seed=1), partition_size=2)
    before = _tars(out)
    again = run_degrade(image_folder, out, DegradeOptions(seed=1), partition_size=2)
    summary = next(iter(again.summaries.values()))
    assert summary.skipped_partitions == summary.partitions == 2
    assert _tars(out) == before and again.accepted == first.accepted
    with pytest.raises(BadInputError, match="other options"):
        run_degrade(image_folder, out, DegradeOptions(seed=2), partition_size=2)


def test_shard_input_keeps_metadata_and_hq_bytes(tmp_path):
    import skimage.data

    src = tmp_path / "src"
    rgb = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((64, 64)))
    png = imageio.encode_image(rgb, "png")
    face = Face(box=[10, 10, 40, 44], landmarks=[[20, 20], [30, 20], [25, 28], [21, 36], [29, 36]],
                score=0.9, backend="test")
    sample = Sample(key="p001", split="train", subset="synthetic", width=64, height=64,
                    identity_id="id7", faces=[face], provenance=Provenance(source="x.png", sha256=SHA))
    with ShardWriter(src, "train", "synthetic") as w:
        w.write("p001", {"png": png}, sample.to_meta())
    res = run_degrade(src, tmp_path / "out", DegradeOptions(versions=1, seed=3, lq_size="lq"))
    assert res.ok
    (s,) = list(ShardReader(tmp_path / "out"))
    assert (s.split, s.subset) == ("train", "synthetic")
    assert s.members["hq.png"] == png
    assert s.images["lq0.png"].shape == (16, 16, 3)  # --lq-size lq: GT / 4
    back = Sample.from_meta(s.meta)
    assert back.identity_id == "id7" and back.faces == [face]
    assert back.degradation == load_params(s.members["lq0.json"])  # K = 1: the record's degradation
    assert back.provenance.backends["degradation"] == "inscene-realesrgan"


def test_preset_run_and_bad_options(image_folder, tmp_path):
    res = run_degrade(image_folder, tmp_path / "p", DegradeOptions(preset="d3"))
    assert res.ok and res.accepted == 4
    with pytest.raises(BadInputError, match="versions 1"):
        run_degrade(image_folder, tmp_path / "q", DegradeOptions(preset="d1", versions=2))
    with pytest.raises(BadInputError, match="unknown profile"):
        run_degrade(image_folder, tmp_path / "q", DegradeOptions(profile="nope"))
    with pytest.raises(BadInputError, match="not a folder"):
        run_degrade(tmp_path / "missing", tmp_path / "q", DegradeOptions())


def test_undecodable_file_is_a_rejection_not_a_crash(tmp_path, image_folder):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.png").write_bytes((image_folder / "coffee.png").read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    res = run_degrade(folder, tmp_path / "out", DegradeOptions())
    summary = next(iter(res.summaries.values()))
    assert res.accepted == 1 and summary.rejected == 1 and res.ok


def test_preview_grid(tmp_path, image_folder):
    out = render_preview(image_folder / "coffee.png", tmp_path / "grid.png", draws=2, tile=96)
    with Image.open(out) as im:
        assert im.size[0] >= 5 * 96 and im.size[1] > 2 * 96


@pytest.mark.slow
def test_cli_degrade_and_preview(tmp_path, image_folder):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "inscene", "degrade", *args],
                              capture_output=True, text=True, timeout=120)

    proc = run(str(image_folder), "--out", str(tmp_path / "o"), "--versions", "2", "--seed", "3", "--in-process")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "o").rglob("*.tar"))) == 1
    proc = run("--preview", str(image_folder / "astronaut.png"), "--out", str(tmp_path / "g.png"), "--draws", "1")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "g.png").stat().st_size > 1000
    proc = run(str(tmp_path / "missing"), "--out", str(tmp_path / "x"), "--in-process")
    assert proc.returncode == 2 and "not a folder" in proc.stderr
    proc = run(str(image_folder), "--out", str(tmp_path / "y"), "--preset", "d1", "--versions", "3", "--in-process")
    assert proc.returncode == 2 and "--versions 1" in proc.stderr


@pytest.mark.slow
def test_dask_workers_write_the_same_bytes_as_in_process(image_folder, tmp_path):
    from inscene.runtime import ClusterOptions

    opts = DegradeOptions(versions=2, seed=11)
    local = run_degrade(image_folder, tmp_path / "local", opts, partition_size=2)
    dask = run_degrade(image_folder, tmp_path / "dask", opts, partition_size=2,
                       cluster=ClusterOptions(workers=2))
    assert local.ok and dask.ok and dask.accepted == 4
    assert _tars(tmp_path / "dask") == _tars(tmp_path / "local")
