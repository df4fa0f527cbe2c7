"""`inscene train fadex` / `inscene analyze fadex` on a tiny generated set, offline on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from inscene.cli import app
from inscene.errors import BadInputError
from restorer.analysis import figure3, similarity_groups
from restorer.fadex import FaDeX, FadexConfig
from restorer.train_fadex import FadexTrainConfig, PairDataset, run_training

TINY = FadexConfig(widths=(8, 16, 32), strides=(2, 2, 1), proj_hidden=16, proj_dim=8)


def _cfg(**kw) -> FadexTrainConfig:
    base = dict(epochs=2, batch_size=8, views=2, crop=32, queue_size=16, momentum=0.9, model=TINY)
    base.update(kw)
    return FadexTrainConfig(**base)


def test_dataset_reads_pairs_with_labels(pair_dataset):
    ds = PairDataset([pair_dataset], crop=32, gt_prob=0.5)
    assert len(ds) == 16 and len(set(ds.labels.tolist())) == 8
    x, label = ds[0]
    assert x.shape == (6, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert label == int(ds.labels[0])
    assert np.allclose(ds[(3, 1)][0].numpy(), ds[(3, 1)][0].numpy())  # deterministic per (index, draw)


def test_training_writes_checkpoints_log_and_resumes(pair_dataset, tmp_path):
    out = tmp_path / "run"
    res = run_training([pair_dataset], out, _cfg(), cpu=True, threads=1)
    assert res.epochs_done == 2 and res.steps == 2 * 2  # 8 labels / (8 // 2) per batch = 2 steps per epoch
    lines = [json.loads(s) for s in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in lines)
    ck = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ck == ["epoch-0001", "epoch-0002"]
    assert {p.name for p in (out / "checkpoints" / "epoch-0002").iterdir()} >= {
        "fadex.safetensors", "fadex_config.json", "momentum.safetensors", "queue.safetensors", "optimizer.pt",
        "trainer_state.json"}
    model = FaDeX.from_pretrained(out)
    assert model.config.widths == (8, 16, 32)
    # resume: two more epochs continue from the last checkpoint (epoch 2, step 4)
    res2 = run_training([pair_dataset], out, _cfg(epochs=4, keep=1), cpu=True, threads=1)
    assert res2.epochs_done == 4 and res2.steps == 8
    lines = [json.loads(s) for s in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 9))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-0004"]
    with pytest.raises(BadInputError, match="other settings.*lr"):
        run_training([pair_dataset], out, _cfg(epochs=5, lr=0.1), cpu=True)


def test_time_limit_stops_with_a_resumable_checkpoint(pair_dataset, tmp_path):
    out = tmp_path / "run"
    res = run_training([pair_dataset], out, _cfg(epochs=50, max_minutes=1e-4), cpu=True, threads=1)
    assert res.stopped_early and res.steps == 1 and res.checkpoint.name == "step-0000001"
    state = json.loads((res.checkpoint / "trainer_state.json").read_text())
    assert state["epoch"] == 0 and state["batches_in_epoch"] == 1
    res2 = run_training([pair_dataset], out, _cfg(epochs=1), cpu=True, threads=1)
    assert res2.steps == 2 and res2.epochs_done == 1  # finished the interrupted epoch


def test_similarity_groups_and_gap():
    rng = np.random.default_rng(0)
    dirs = np.linalg.qr(rng.normal(size=(8, 4)))[0].T  # 4 orthonormal preset directions
    emb = np.stack([np.stack([dirs[d] + 0.01 * rng.normal(size=8) for _ in range(5)]) for d in range(4)])
    same_deg, same_img, mat = similarity_groups(emb)
    assert len(same_deg) == 4 * 10 and len(same_img) == 5 * 6
    assert same_deg.mean() > 0.99 and abs(same_img.mean()) < 0.05
    assert mat.shape == (4, 4) and np.allclose(np.diag(mat), same_deg.reshape(4, 10).mean(1))


def test_figure3_on_generated_images(tmp_path):
    from restorer.recipes.fadex_cpu import generated_image

    rng = np.random.default_rng(5)
    imgs = [generated_image(rng, 80) for _ in range(3)]
    model = FaDeX(TINY).eval()
    res = figure3(model, imgs, tmp_path / "fig.png", size=64)
    assert (tmp_path / "fig.png").stat().st_size > 1000
    assert res.gap == pytest.approx(res.same_degradation[0] - res.same_image[0])
    assert res.presets == ["d1", "d2", "d3", "d4"] and len(res.matrix) == 4
    assert "gap =" in res.summary()
    with pytest.raises(BadInputError, match="at least 2 images"):
        figure3(model, imgs[:1], None, size=64)


def test_cli_prepare_train_analyze_offline(degraded_dataset, tmp_path):
    """The three commands end to end, as a user runs them (Done-when of issue 9)."""
    from inscene.imageio import encode_image
    from restorer.recipes.fadex_cpu import generated_image

    runner = CliRunner()
    pairs = tmp_path / "pairs"
    r = runner.invoke(app, ["restorer", "prepare-pairs", str(degraded_dataset), "--out", str(pairs), "--share", "1",
                            "--no-face", "center", "--in-process", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "16 pairs" in r.output
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "fadex", str(pairs), "--out", str(run), "--epochs", "1", "--batch-size", "8",
                            "--views", "2", "--crop", "32", "--widths", "8,16,256", "--strides", "2,1,1",
                            "--queue-size", "16", "--cpu", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert (run / "fadex.safetensors").is_file()
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        (imgs / f"{i}.png").write_bytes(encode_image(generated_image(rng, 72), "png"))
    fig = tmp_path / "fig3.png"
    r = runner.invoke(app, ["analyze", "fadex", "--checkpoint", str(run), "--images", str(imgs), "--out", str(fig),
                            "--size", "64"])
    assert r.exit_code == 0, r.output
    assert "gap =" in r.output and fig.is_file()
    r = runner.invoke(app, ["analyze", "fadex", "--checkpoint", str(tmp_path / "nope"), "--images", str(imgs)])
    assert r.exit_code != 0
