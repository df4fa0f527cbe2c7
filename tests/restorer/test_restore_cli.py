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
    astronaut_face,
    degrade,
    eval_dataset,
    faceme_checkout,
    one_thread,
    scaled_face,
    scene_dataset,
    tiny_fadex,
    tiny_fadex_stride4,
    tiny_sd,
    trained_run,
    untrained_checkpoint,
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


def test_restore_ref_fr_gt_uses_the_samples_ground_truth(tmp_path):
    out = tmp_path / "out"
    res = _invoke("restore", eval_dataset(), "--split", "val", "--checkpoint", trained_run(), "--out", out,
                  "--device", "cpu", "--ref-fr", "gt", "--detector", "dlib")
    assert res.exit_code == 0, res.output + repr(res.exception)
    record = json.loads((out / "restore.json").read_text())
    by_name = {r["name"]: r for r in record["images"]}
    assert record["run"]["ref_fr"] == "gt"
    assert by_name["astro"]["face_found"] is True and by_name["astro"]["tokens"] == 21  # x_HQ = the hq member
    assert not by_name["coffee"]["face_found"] and not by_name["coffee"].get("error")


def test_restore_ref_fr_gt_refuses_image_inputs_up_front(tmp_path):
    img = tmp_path / "x.png"
    img.write_bytes(imageio.encode_image(astronaut(), "png"))
    res = _invoke("restore", img, "--checkpoint", trained_run(), "--out", tmp_path / "o", "--device", "cpu",
                  "--ref-fr", "gt", "--detector", "dlib")
    assert res.exit_code != 0
    msg = str(res.exception)
    assert "--ref-fr gt needs the ground-truth image" in msg and "--split" in msg and "\n" not in msg
    assert not (tmp_path / "o" / "restore.json").exists()  # nothing was restored


def test_restore_faceme_needs_references_up_front_and_runs_with_them(tmp_path, monkeypatch):
    monkeypatch.delenv("INSCENE_FACEME_PYTHON", raising=False)
    checkout = faceme_checkout(tmp_path)
    img = tmp_path / "x.png"
    img.write_bytes(imageio.encode_image(degrade(astronaut(), 1.5, 4.0, 0), "png"))
    args = ["restore", img, "--checkpoint", trained_run(), "--device", "cpu", "--ref-fr", "faceme",
            "--detector", "dlib"]
    res = _invoke(*args, "--out", tmp_path / "o", "--ref-fr-path", checkout)
    assert res.exit_code != 0 and "needs identity references (no --refs given)" in str(res.exception)
    refs = tmp_path / "refs"
    refs.mkdir()
    res = _invoke(*args, "--out", tmp_path / "o", "--ref-fr-path", checkout, "--refs", refs)
    assert res.exit_code != 0 and f"no reference photos in {refs}" in str(res.exception)
    (refs / "me.png").write_bytes(imageio.encode_image(astronaut(), "png"))
    monkeypatch.chdir(tmp_path)  # a relative checkout path works too
    res = _invoke(*args, "--out", tmp_path / "ok", "--ref-fr-path", "FaceMe", "--refs", refs)
    assert res.exit_code == 0, res.output + repr(res.exception)
    (image,) = json.loads((tmp_path / "ok" / "restore.json").read_text())["images"]
    assert image["face_found"] is True and image["tokens"] == 21


def _square(img: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)


def test_faces_below_the_fadex_minimum_are_restored_without_tokens():
    from restorer.restore import load_restorer

    # 16.5 px face, 27 px pair box: enough for the paper's 16 px, but a stride-4 FaDeX (the CPU
    # recipe's) would give MapNet a 7x7 Z_face; it needs 8 x 4 = 32 px.
    small = _square(astronaut(), 92)
    face = scaled_face(astronaut_face(), 92 / 256)
    opts = {"ref_fr": "passthrough", "detector": "dlib", "device": "cpu"}
    stride4 = load_restorer(untrained_checkpoint(tiny_fadex_stride4()), **opts)
    assert stride4.stage1.min_face_px == 32
    res = stride4.restore(small, face=face)
    assert not res.face_found and res.tokens == 0 and res.image.shape == small.shape
    assert "no usable face (face too small: 16.5 px < 32 px)" in res.reason
    assert stride4.restore(astronaut(), face=astronaut_face()).tokens == 21  # a 46 px face is fine
    stride2 = load_restorer(untrained_checkpoint(tiny_fadex()), **opts)
    assert stride2.stage1.min_face_px == 16 and stride2.restore(small, face=face).tokens == 21
