"""`inscene restore`, `inscene train restorer` and `inscene evaluate --method face2scene`, end to end on
CPU with the tiny SD-Turbo, a tiny FaDeX and a 2-step checkpoint (Face2Scene §3, §4.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from inscene import imageio
from inscene.cli import app
from tests.restorer.stage2_helpers import (
    astronaut,
    degrade,
    eval_dataset,
    one_thread,
    scene_dataset,
    tiny_fadex,
    tiny_sd,
    trained_run,
)

runner = CliRunner()
CPU = ["--device", "cpu", "--ref-fr", "passthrough", "--detector", "dlib"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


def _invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    return result


def test_restore_one_image_writes_it_and_what_was_done(tmp_path):
    src = tmp_path / "lq.png"
    src.write_bytes(imageio.encode_image(degrade(astronaut(), 1.5, 4.0, 0), "png"))
    out = tmp_path / "out.png"
    res = _invoke("restore", src, "--checkpoint", trained_run(), "--out", out, "--cfg", "1.05", *CPU)
    assert res.exit_code == 0, res.output + repr(res.exception)
    img = imageio.decode_image(out)
    assert img.shape == (256, 256, 3)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["run"]["ref_fr"] == "passthrough" and record["run"]["tokens"] == 21
    assert record["run"]["dtype"] == "float32" and record["run"]["cfg_scale"] == 1.05
    (image,) = record["images"]
    assert image["face_found"] is True and image["tokens"] == 21 and image["cfg_scale"] == 1.05
    assert len(image["stage1"]["box"]) == 4 and len(image["stage1"]["matrix"]) == 2  # the Stage I transform
    assert {"stage1", "tokens", "restore", "total"} <= set(image["timings"])


def test_restore_a_folder_with_a_faceless_image_says_so(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(imageio.encode_image(degrade(astronaut(), 1.0, 3.0, 1), "png"))
    (folder / "flat.jpg").write_bytes(imageio.encode_image(np.full((40, 56, 3), 128, np.uint8), "jpeg"))
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    res = _invoke("restore", folder, "--checkpoint", trained_run(), "--out", out, "--scale", "2", *CPU)
    assert res.exit_code == 1  # one input failed; the others are restored
    record = json.loads((out / "restore.json").read_text())
    by_name = {r["name"]: r for r in record["images"]}
    assert by_name["a"]["face_found"] and imageio.decode_image(out / "a.png").shape == (512, 512, 3)
    assert not by_name["flat"]["face_found"] and by_name["flat"]["tokens"] == 0
    assert "no usable face" in by_name["flat"]["reason"]
    assert imageio.decode_image(out / "flat.png").shape == (80, 112, 3)
    assert by_name["broken"]["error"] and not (out / "broken.png").exists()


def test_restore_a_dataset_split(tmp_path):
    out = tmp_path / "out"
    res = _invoke("restore", eval_dataset(), "--split", "val", "--checkpoint", trained_run(), "--out", out, *CPU)
    assert res.exit_code == 0, res.output + repr(res.exception)
    record = json.loads((out / "restore.json").read_text())
    assert [r["name"] for r in record["images"]] == ["astro", "coffee"]
    assert record["images"][0]["identity"] == "id0001"
    assert (out / "astro.png").is_file() and (out / "coffee.png").is_file()


def test_evaluate_method_face2scene_scores_a_split(tmp_path):
    results = tmp_path / "results"
    args = ["evaluate", "--method", "face2scene", "--checkpoint", trained_run(), "--data", eval_dataset(),
            "--split", "val", "--metrics", "psnr,ssim", "--results", results, "--in-process",
            "--method-opt", "ref_fr=passthrough", "--method-opt", "detector=dlib", "--method-opt", "device=cpu"]
    res = _invoke(*args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    rows = list((results / "rows").rglob("*.json"))
    assert rows
    row = json.loads(rows[0].read_text())
    assert row["method"] == "face2scene" and row["complete"] and row["n_samples"] == 2
    assert row["metrics"]["psnr"]["n"] == 2 and np.isfinite(row["metrics"]["psnr"]["mean"])
    assert row["method_info"]["ref_fr"] == "passthrough" and len(row["method_info"]["checkpoint_sha256"]) == 64
    again = _invoke(*args)  # predictions and scores are cached: a rerun computes nothing new
    assert again.exit_code == 0
    from benchmarks.methods import create_method

    # scoring partitions ask for a GPU worker unless the method is pinned to the CPU
    assert create_method("face2scene", checkpoint=trained_run(), device="cpu").uses_gpu is False
    assert create_method("face2scene", checkpoint=trained_run()).uses_gpu is True


def test_train_restorer_command(tmp_path):
    out = tmp_path / "run"
    res = _invoke("train", "restorer", scene_dataset(), "--fadex", tiny_fadex(), "--base", tiny_sd(), "--out", out,
                  "--iterations", "1", "--batch-size", "1", "--crop", "64", "--vae-rank", "2", "--unet-rank", "2",
                  "--lambda-lpips", "0", "--lambda-gan", "0", "--loader-workers", "0", "--cpu")
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert (out / "face2scene.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["unet_lora_rank"] == 2


def test_bad_inputs_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    img = tmp_path / "x.png"
    img.write_bytes(imageio.encode_image(astronaut(), "png"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "inscene", "restore", str(img), "--checkpoint", str(bad),
                           "--out", str(tmp_path / "o"), "--device", "cpu"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read checkpoint")
    res = _invoke("evaluate", "--method", "face2scene", "--data", eval_dataset(), "--split", "val", "--in-process")
    assert res.exit_code != 0 and "needs --checkpoint" in str(res.exception)
    res = _invoke("restore", img, "--checkpoint", trained_run(), "--out", tmp_path / "o.gif", *CPU)
    assert "write png, jpg or webp" in str(res.exception)
