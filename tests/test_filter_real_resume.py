"""filter-real through its CLI: resume after kill -9, --rethreshold, exit codes, the SLURM dry run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import skimage.data
from typer.testing import CliRunner

from inscene import imageio
from inscene.cli import app
from inscene.shards import verify_dataset

from .test_filter_real import make_gallery


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "inscene", "filter-real", *args]


def _inputs(root: Path) -> Path:
    """Ten inputs, five partitions of two: accepted photos, and rejections at every stage."""
    make_gallery(root)
    astro = skimage.data.astronaut()
    extra = {
        "more/astronaut-rolled.png": np.ascontiguousarray(np.roll(astro, 60, axis=1)),
        "more/astronaut-bright.png": cv2.convertScaleAbs(astro, alpha=1.05, beta=4),
    }
    for rel, rgb in extra.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(imageio.encode_image(rgb, "png"))
    (root / "more" / "truncated.jpg").write_bytes(imageio.encode_image(astro, "jpeg")[:5000])
    return root


def _members(out: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for tar in sorted((out / "dataset").rglob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                assert m.name not in found, f"duplicate member {m.name}"
                found[m.name] = tf.extractfile(m).read()
    return found


def _decisions(out: Path) -> pd.DataFrame:
    d = pd.read_parquet(out / "decisions")
    return d[["key", "accepted", "stage", "reason"]].sort_values("key").reset_index(drop=True)


@pytest.mark.slow
def test_rerun_after_kill_9_resumes_with_nothing_lost_or_duplicated(tmp_path):
    src = _inputs(tmp_path / "in")
    args = [str(src), "--min-side", "256", "--partition-size", "2", "--detector", "dlib", "--iqa", "piqe"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # an uninterrupted run of the same command: the reference
    ref = tmp_path / "reference"
    done = CliRunner().invoke(app, ["filter-real", *args, "--out", str(ref), "--in-process"])
    assert done.exit_code == 0, done.output
    # the same command, killed with SIGKILL (its whole process group) once two partitions are committed
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(*args, "--out", str(out), "--in-process"), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    logs = out / "decisions"
    deadline = time.time() + 240
    while len(list(logs.glob("part-*.parquet"))) < 2:
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len(list(logs.glob("part-*.parquet")))
    assert 2 <= committed < 5, committed
    # rerun the same command, this time on a Dask worker: committed partitions are skipped
    rerun = subprocess.run(_cli(*args, "--out", str(out), "--workers", "1"), env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{committed} partitions already done" in rerun.stderr
    pd.testing.assert_frame_equal(_decisions(out), _decisions(ref))
    assert _members(out) == _members(ref)  # same keys, same bytes, no duplicates
    assert int(_decisions(out)["accepted"].sum()) >= 3
    assert verify_dataset(out / "dataset").ok
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_cli_rethreshold_and_exit_codes(tmp_path):
    from inscene.config import InsceneConfig  # noqa: F401  (the CLI runs with the paper's settings)

    root = tmp_path / "in"
    root.mkdir()
    astro = skimage.data.astronaut()
    (root / "astronaut.png").write_bytes(imageio.encode_image(astro, "png"))
    (root / "coffee.png").write_bytes(imageio.encode_image(skimage.data.coffee(), "png"))
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(app, ["filter-real", str(root), "--out", str(out), "--min-side", "256", "--iqa", "piqe",
                            "--detector", "dlib", "--in-process"])
    assert r.exit_code == 0, r.output
    assert "written 1" in r.output and "IQA: piqe" in r.output
    r = runner.invoke(app, ["filter-real", "--rethreshold", str(out / "decisions"), "--out", str(tmp_path / "re"),
                            "--max-piqe", "1"])
    assert r.exit_code == 0, r.output
    assert "written 0" in r.output
    d = pd.read_parquet(tmp_path / "re" / "decisions").set_index("key")
    assert d.loc["astronaut", "reason"] == "PIQE > 1 (embedded fallback)" and bool(d.loc["astronaut", "prev_accepted"])
    # the same out with other settings is refused (exit 2, one line)
    r = runner.invoke(app, ["filter-real", str(root), "--out", str(out), "--min-side", "300", "--iqa", "piqe",
                            "--detector", "dlib", "--in-process"])
    assert r.exit_code != 0 and "other inputs or settings" in str(r.exception)
    r = runner.invoke(app, ["filter-real", "--out", str(tmp_path / "x"), "--in-process"])
    assert r.exit_code != 0 and "INPUT" in str(r.exception)


def test_cli_slurm_dry_run_prints_a_job_script(tmp_path):
    r = CliRunner().invoke(app, ["filter-real", str(tmp_path), "--out", str(tmp_path / "o"), "--cluster", "slurm",
                                 "--gpus", "1", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "#SBATCH" in r.output
