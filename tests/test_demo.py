"""The offline demo: real photos + generated + broken inputs -> verified, loadable shards."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from inscene.shards import ShardReader
from pipelines.demo import run_demo


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, cluster=None)


def test_demo_accepts_good_inputs_and_rejects_bad_ones_with_reasons(demo_run):
    s = demo_run.summary
    assert demo_run.ok
    assert s.errors == 0
    d = s.decisions.set_index("key")
    assert d.loc["truncated", "reason"] == "truncated"
    assert d.loc["not-an-image", "reason"] == "not_an_image"
    assert d.loc["thumbnail-48px", "reason"].startswith("short_side 48")
    for key in ["astronaut", "coffee", "chelsea", "insightface-group", "astronaut-exif-rotated",
                "coffee-cmyk", "ramp-16bit", "chelsea-palette-alpha"]:
        assert bool(d.loc[key, "accepted"]), key
    assert demo_run.hf_rows == demo_run.wds_rows == s.accepted == 8


def test_demo_shards_hold_upright_rgb_with_provenance(demo_run):
    samples = {s.key: s for s in ShardReader(demo_run.out / "dataset")}
    upright = skimage.data.astronaut().astype(int)
    rotated = samples["astronaut-exif-rotated"].images["png"].astype(int)
    assert rotated.shape == upright.shape
    assert np.abs(rotated - upright).mean() < 3  # EXIF orientation applied (JPEG error only)
    assert samples["coffee-cmyk"].images["png"].shape[2] == 3
    meta = samples["astronaut"].meta
    assert len(meta["sha256"]) == 64 and meta["source"] == "astronaut.png"
    assert "decoder" in meta["backends"]
    # no metadata leaks into the encoded members
    png = Image.open(io.BytesIO(samples["astronaut-exif-rotated"].members["png"]))
    assert not png.getexif()


def test_demo_tours_every_command_offline(demo_run):
    steps = demo_run.steps
    assert list(steps) == ["filter-real", "develop-raw", "degrade", "evaluate", "publish"]
    assert all(step["ok"] for step in steps.values()), {k: v["line"] for k, v in steps.items()}
    fr = steps["filter-real"]
    assert fr["funnel"]["input"] == 7 and fr["accepted"] >= 1 and fr["iqa"] == "piqe"
    assert (demo_run.out / "filter-real" / "funnel.png").is_file()
    assert steps["develop-raw"]["hf_rows"]["test"] == steps["develop-raw"]["developed"] == 3
    assert steps["degrade"]["accepted"] == demo_run.summary.accepted
    # lq and bicubic rows of the degraded demo split, in the leaderboard
    board = (demo_run.out / "evaluation" / "leaderboard" / "leaderboard.md").read_text()
    assert "| lq | measured |" in board and "| bicubic | measured |" in board
    assert "lq" in steps["evaluate"]["line"] and "bicubic" in steps["evaluate"]["line"]
    pub = steps["publish"]
    assert pub["hf_rows"] == pub["webdataset_rows"] == demo_run.summary.accepted


def test_a_failing_tour_step_fails_the_demo_and_the_rest_still_run(demo_run, monkeypatch, tmp_path):
    from pipelines import demo

    def broken(out, data_root, console, done):
        raise RuntimeError("planted failure")

    monkeypatch.setitem(demo.TOUR, "degrade", broken)
    import io

    from rich.console import Console

    buf = io.StringIO()
    result = run_demo(demo_run.out, cluster=None, console=Console(file=buf, width=200))
    assert not result.ok
    assert result.steps["degrade"]["ok"] is False and "planted failure" in result.steps["degrade"]["line"]
    assert (demo_run.out / "degrade-error.txt").read_text().count("planted failure") >= 1
    assert result.steps["evaluate"]["ok"] is False  # it needs degrade's LQ
    assert result.steps["publish"]["ok"] and result.steps["filter-real"]["ok"]
    assert "FAILED" in buf.getvalue()
    (demo_run.out / "degrade-error.txt").unlink()


def test_demo_rerun_resumes(demo_run):
    again = run_demo(demo_run.out, cluster=None)
    assert again.summary.skipped_partitions == again.summary.partitions
    assert again.ok


def test_demo_slurm_dry_run_prints_job_script():
    proc = subprocess.run(
        [sys.executable, "-m", "inscene", "demo", "--cluster", "slurm", "--dry-run", "--queue", "gpu",
         "--gpus", "1", "--walltime", "02:00:00"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH" in proc.stdout and "02:00:00" in proc.stdout and "gpu" in proc.stdout


@pytest.mark.slow
def test_demo_cli_on_local_dask_cluster(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "inscene", "demo", "--out", str(tmp_path / "d"), "--workers", "2"],
        capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "inscene demo summary" in proc.stdout and "ok" in proc.stdout


def test_verify_cli_names_a_truncated_shard_and_reader_skips_it(demo_run, tmp_path):
    import shutil
    import warnings

    root = tmp_path / "ds"
    shutil.copytree(demo_run.out / "dataset", root)
    ok = subprocess.run([sys.executable, "-m", "inscene", "verify", str(root)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    victim = sorted((root / "train").glob("*.tar"))[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    bad = subprocess.run([sys.executable, "-m", "inscene", "verify", str(root)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert victim.name in bad.stdout and "truncated" in bad.stdout
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = [s.key for s in ShardReader(root)]
    assert any(victim.name in str(w.message) for w in caught)
    assert 0 < len(keys) < demo_run.summary.accepted


def test_demo_records_faces_and_shows_alignment_round_trip(demo_run):
    from inscene.schema import Sample

    records = {s.key: Sample.from_meta(s.meta) for s in ShardReader(demo_run.out / "dataset", decode_images=False)}
    assert len(records["insightface-group"].faces) == 6  # the six people of the group photo
    assert len(records["astronaut"].faces) == 1
    assert len(records["coffee"].faces) == 0
    assert records["astronaut"].provenance.backends["detector"].startswith("dlib")
    shown = demo_run.faces
    assert shown["key"] == "insightface-group" and shown["faces"] == 6
    crop = np.asarray(Image.open(shown["aligned"]))
    assert crop.shape == (512, 512, 3)
    assert shown["pasteback_mean_abs_err"] < 1.0  # an unmodified crop pasted back reproduces the photo
