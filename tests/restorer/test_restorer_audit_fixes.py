"""Restorer journey-audit fixes: evaluate's up-front backend check, absolute recorded paths, finished
reruns, ``--warmup-steps``, refusals before any model load or ``--out``, the pairs' detector record."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from rich.console import Console
from typer.testing import CliRunner

from inscene import imageio
from inscene.cli import app
from inscene.errors import BadInputError, MissingWeightsError
from tests.restorer.stage2_helpers import (
    astronaut,
    eval_dataset,
    one_thread,
    scene_dataset,
    tiny_fadex,
    tiny_sd,
    train_config,
    trained_run,
)

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


def _no_model_load(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the restorer was loaded")

    monkeypatch.setattr("restorer.restore.load_restorer", refuse)


# ---- 1: evaluate --method face2scene stops before any work when FaceMe is missing ----------------


def test_evaluate_face2scene_without_faceme_stops_up_front_with_one_line(tmp_path, monkeypatch):
    _no_model_load(monkeypatch)
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "me.png").write_bytes(imageio.encode_image(astronaut(), "png"))
    results = tmp_path / "results"
    res = runner.invoke(app, [str(a) for a in (
        "evaluate", "--method", "face2scene", "--checkpoint", trained_run(), "--data", eval_dataset(), "--split",
        "val", "--metrics", "psnr", "--results", results, "--in-process", "--method-opt", f"refs={refs}",
        "--method-opt", f"ref_fr_path={tmp_path / 'no-FaceMe'}", "--method-opt", "device=cpu")])
    assert isinstance(res.exception, MissingWeightsError), res.output  # `inscene` exits 2 with its one line
    assert res.exception.exit_code == 2 and "weights for 'faceme' not found" in str(res.exception)
    assert not (results / "rows").exists()  # no row, no sample scored


# ---- 2: checkpoints record absolute local paths; a missing recorded base is named ----------------


def test_relative_base_and_fadex_are_recorded_absolute(tmp_path, monkeypatch):
    from restorer.model import read_checkpoint_config
    from restorer.train_restorer import run_training

    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(tiny_sd(), work / "sd")
    shutil.copytree(tiny_fadex(), work / "fx")
    monkeypatch.chdir(work)
    res = run_training([scene_dataset()], "run", train_config(base="sd", fadex="fx", iterations=1), cpu=True,
                       resume=False, console=Console(file=io.StringIO()))
    monkeypatch.chdir(tmp_path)
    config = read_checkpoint_config(work / res.checkpoint)
    assert config["base"] == str(work / "sd")
    assert json.loads((work / "run" / "config.json").read_text())["fadex"] == str(work / "fx")
    assert train_config(base="stabilityai/sd-turbo").with_resolved_paths().base == "stabilityai/sd-turbo"


def test_a_missing_recorded_base_is_named_in_the_error(monkeypatch):
    from restorer.model import resolve_base

    def missing(name, *a, **k):
        raise MissingWeightsError(name, "model_index.json", ["/x"], "inscene weights fetch sd-turbo")

    monkeypatch.setattr("inscene.weights.locate", missing)
    with pytest.raises(BadInputError, match="base model /gone/sd-turbo-tiny is not on this machine.*--base"):
        resolve_base(None, "/gone/sd-turbo-tiny")


# ---- 3: rerunning a finished run says so ----------------------------------------------------------


def test_rerunning_a_finished_restorer_run_says_where_its_checkpoint_is(tmp_path):
    from restorer.train_restorer import run_training

    run = tmp_path / "run"
    shutil.copytree(trained_run(), run)
    buf = io.StringIO()
    res = run_training([scene_dataset()], run, train_config(), cpu=True, console=Console(file=buf, width=300))
    assert f"already finished at step 2: {run / 'checkpoints' / 'step-0000002.safetensors'}" in buf.getvalue()
    assert res.steps == 2 and res.checkpoint == run / "checkpoints" / "step-0000002.safetensors"


def test_rerunning_a_finished_fadex_run_says_so(pair_dataset, tmp_path):
    from restorer.fadex import FadexConfig
    from restorer.train_fadex import FadexTrainConfig, run_training

    cfg = FadexTrainConfig(epochs=1, batch_size=8, views=2, crop=32, queue_size=16, momentum=0.9,
                           model=FadexConfig(widths=(8, 16), strides=(2, 1), proj_hidden=16, proj_dim=8))
    out = tmp_path / "fx"
    first = run_training([pair_dataset], out, cfg, cpu=True, threads=1, console=Console(file=io.StringIO()))
    buf = io.StringIO()
    again = run_training([pair_dataset], out, cfg, cpu=True, threads=1, console=Console(file=buf, width=300))
    text = buf.getvalue()
    assert f"FaDeX: already finished at step {first.steps} (epoch 1): {out}" in text
    assert "nan" not in text and "steps/epoch" not in text and again.steps == first.steps


# ---- 4: --warmup-steps ----------------------------------------------------------------------------


def test_warmup_steps_reaches_the_optimisers_schedule(monkeypatch, tmp_path):
    from restorer.train_restorer import RestorerTrainer

    seen = {}
    monkeypatch.setattr("restorer.train_restorer.run_training", lambda data, out, cfg, **k: seen.setdefault("c", cfg))
    res = runner.invoke(app, ["train", "restorer", str(scene_dataset()), "--fadex", str(tiny_fadex()),
                              "--warmup-steps", "4", "--out", str(tmp_path / "r")])
    assert seen["c"].warmup == 4, res.output
    help_text = runner.invoke(app, ["train", "restorer", "--help"], env={"COLUMNS": "300"}).output
    assert "--warmup-steps" in help_text and "batch-size x grad-accum x processes" in help_text
    trainer = RestorerTrainer([scene_dataset()], tmp_path / "t", train_config(warmup=4, lr=1e-3), cpu=True)
    assert trainer.sched_g.get_last_lr()[0] == pytest.approx(0.0)  # step 0 of 4 warm-up steps
    trainer.sched_g.step()
    assert trainer.sched_g.get_last_lr()[0] == pytest.approx(1e-3 / 4)


# ---- 5: restore refusals come before the model load and before --out ------------------------------


def test_restore_refusals_load_nothing_and_create_no_out(tmp_path, monkeypatch):
    _no_model_load(monkeypatch)
    img = tmp_path / "x.png"
    img.write_bytes(imageio.encode_image(astronaut(), "png"))
    for ref_fr, needle in (("gt", "needs the ground-truth image"), ("faceme", "needs identity references")):
        out = tmp_path / f"o-{ref_fr}"
        res = runner.invoke(app, ["restore", str(img), "--checkpoint", str(trained_run()), "--out", str(out),
                                  "--device", "cpu", "--ref-fr", ref_fr])
        assert res.exit_code != 0 and needle in str(res.exception), res.output
        assert not out.exists()


# ---- 6: pairs.json records the resolved detector --------------------------------------------------


def test_pairs_json_records_the_detector_backend(pair_dataset):
    from inscene.config import FaceSettings
    from inscene.faces import create_detector

    record = json.loads((pair_dataset / "pairs.json").read_text())
    assert record["detector"] == create_detector(FaceSettings().detector).backend
    assert record["detector"]  # e.g. dlib-hog+dlib-shape68, never null
