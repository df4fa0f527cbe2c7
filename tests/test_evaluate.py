"""The evaluator (benchmarks.evaluate): rows, variants, the score cache, bad input, n/a metrics.

Data are generated InScene-layout shards (benchmarks.synthetic): smooth scenes with the
scikit-image astronaut's face pasted in, its box and landmarks recorded as Sample.to_meta does.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.evaluate import apply_variant, evaluate, face_crop, load_rows
from benchmarks.methods import ExternalMethod, create_method, list_methods
from benchmarks.splits import FolderSource, Problem, ShardSource
from benchmarks.synthetic import generate_pairs, write_folders, write_split
from inscene.errors import BadInputError
from inscene.imageio import decode_image, encode_image

EMBEDDED = ("psnr", "ssim", "piqe", "id_score_dlib")
N = 5
SIZE = 96


@pytest.fixture()
def no_weights(tmp_path, monkeypatch):
    for var in ("INSCENE_HOME", "TORCH_HOME", "HF_HOME", "INSIGHTFACE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "weights" / var.lower()))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("inscene-data")
    write_split(root, "val-synthetic", n=N, size=SIZE)
    write_split(root, "test-real", n=3, size=SIZE, subset="real", with_gt=False)
    return root


def _preds_folder(path, keys_to_gt, transform=lambda k, gt: gt):
    path.mkdir(parents=True, exist_ok=True)
    for k, gt in keys_to_gt.items():
        (path / f"{k}.png").write_bytes(encode_image(transform(k, gt), "png"))
    return path


def _gts():
    return {p.key: p.gt for p in generate_pairs(N, SIZE, 4, 0, prefix="syn")}


def test_split_listing_reads_manifests_and_faces(dataset):
    src = ShardSource(dataset, "val-synthetic")
    refs, problems = src.refs()
    assert [r.key for r in refs] == sorted(_gts()) and not problems
    assert all(len(r.lq_hash) == 64 and len(r.gt_hash) == 64 for r in refs)
    (s,) = [x for x in src.read(refs[:1])]
    gen = next(iter(generate_pairs(1, SIZE, 4, 0)))
    np.testing.assert_array_equal(s.gt, gen.gt)
    np.testing.assert_array_equal(s.lq, gen.lq)
    assert s.face_box == pytest.approx(gen.box) and len(s.faces) == 1
    assert ShardSource(dataset, "test-real").has_gt is False
    with pytest.raises(BadInputError, match="no shards for split 'val-real'"):
        ShardSource(dataset, "val-real")


def test_embedded_run_scores_lq_and_bicubic_and_marks_learned_metrics_na(dataset, tmp_path, no_weights):
    res = tmp_path / "res"
    src = ShardSource(dataset, "val-synthetic")
    rep = evaluate(src, create_method("bicubic"), results=res, metrics=(*EMBEDDED, "musiq", "lpips", "fid"))
    (row,) = rep.rows
    assert row.complete and row.n_samples == N and not row.problems
    m = row.metrics
    assert m["musiq"].status == "n/a" and m["musiq"].reason == "weights missing: musiq_koniq_ckpt-e95806b9.pth"
    assert m["lpips"].reason == "weights missing: LPIPS_v0.1_alex-df73285e.pth"
    assert m["fid"].reason == "weights missing: pt_inception-2015-12-05-6726825d.pth"
    assert m["id_score_dlib"].status == "ok" and 0.5 < m["id_score_dlib"].mean <= 1.0
    assert m["id_score_dlib"].backend == "dlib-resnet"
    # the row's PSNR is the mean of per-image PSNRs of the bicubic predictions, S3Diff convention
    from inscene.quality import create_scorer

    psnr = create_scorer("psnr")
    method = create_method("bicubic")
    vals = [psnr.score(method.predict(s)[None].copy(), s.gt[None].copy())[0] for s in src.read(src.refs()[0])]
    assert m["psnr"].mean == pytest.approx(float(np.mean(vals)))
    assert m["psnr"].ci_low <= m["psnr"].mean <= m["psnr"].ci_high and m["psnr"].n == N
    assert "ycbcr" in m["psnr"].convention.lower()
    # the row JSON is what the leaderboard reads
    (saved,) = load_rows(res, "val-synthetic")
    assert saved.metrics["musiq"].reason == m["musiq"].reason and saved.complete


def test_cache_rerun_computes_nothing_and_new_method_only_its_rows(dataset, tmp_path):
    res = tmp_path / "res"
    src = ShardSource(dataset, "val-synthetic")
    first = evaluate(src, create_method("lq"), results=res, metrics=("psnr", "ssim"))
    assert first.computed == 2 * N and first.cached == 0
    again = evaluate(src, create_method("lq"), results=res, metrics=("psnr", "ssim"))
    assert again.computed == 0 and again.cached == 2 * N
    assert again.rows[0].metrics["psnr"].mean == first.rows[0].metrics["psnr"].mean
    other = evaluate(src, create_method("lanczos"), results=res, metrics=("psnr", "ssim"))
    assert other.computed == 2 * N and other.cached == 0
    more = evaluate(src, create_method("lq"), results=res, metrics=("psnr", "ssim", "ssim_rgb"))
    assert more.computed == N and more.cached == 2 * N


def test_changed_prediction_file_is_rescored_alone(dataset, tmp_path):
    res = tmp_path / "res"
    brighter = lambda k, gt: np.clip(gt.astype(int) + 3, 0, 255).astype(np.uint8)  # noqa: E731
    preds = _preds_folder(tmp_path / "preds", _gts(), brighter)
    src = ShardSource(dataset, "val-synthetic")
    evaluate(src, ExternalMethod(preds, "Mine"), results=res, metrics=("psnr",))
    key = sorted(_gts())[2]
    (preds / f"{key}.png").write_bytes(encode_image(_gts()[key], "png"))
    rep = evaluate(src, ExternalMethod(preds, "Mine"), results=res, metrics=("psnr",))
    assert rep.computed == 1 and rep.cached == N - 1


def test_identical_predictions_give_inf_per_image_and_the_pyiqa_bound_in_the_mean(dataset, tmp_path):
    preds = _preds_folder(tmp_path / "preds", _gts())
    rep = evaluate(ShardSource(dataset, "val-synthetic"), ExternalMethod(preds, "GT"), results=tmp_path / "r",
                   metrics=("psnr", "ssim"))
    m = rep.rows[0].metrics
    assert m["psnr"].mean == 80.0 and "identical" in m["psnr"].notes and m["ssim"].mean == pytest.approx(1.0)
    from benchmarks.cache import ScoreCache

    values = ScoreCache(tmp_path / "r" / "cache").table()["value"]
    assert (values[values > 2] == math.inf).all()


def test_face_only_crops_match_recorded_boxes(dataset):
    src = ShardSource(dataset, "val-synthetic")
    for s in src.read(src.refs()[0]):
        x1, y1, x2, y2 = s.face_box
        pred = np.ascontiguousarray(s.gt[:, ::-1])
        pv, gv = apply_variant("face-only", pred, s)
        i1, j1, i2, j2 = math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2)
        np.testing.assert_array_equal(pv, pred[j1:j2, i1:i2])
        np.testing.assert_array_equal(gv, s.gt[j1:j2, i1:i2])
    with pytest.raises(BadInputError):
        face_crop(pred, [10, 10, 12, 12])


def test_gt_face_insertion_changes_only_pixels_under_the_mask(dataset):
    from inscene.faces.align import estimate_alignment, face_blend_mask, warp_to_source

    src = ShardSource(dataset, "val-synthetic")
    s = next(iter(src.read(src.refs()[0][:1])))
    pred = np.full_like(s.gt, 7)
    out, ref = apply_variant("gt-face-inserted", pred, s)
    assert ref is s.gt
    mask = warp_to_source(face_blend_mask(512), estimate_alignment(s.faces[0], 512), s.gt.shape)
    changed = np.any(out != pred, axis=2)
    assert changed.any()
    assert not changed[mask <= 0].any(), "pixels outside the mask must stay the prediction's"
    core = mask >= 0.999
    assert core.any()
    np.testing.assert_allclose(out[core].astype(int), s.gt[core].astype(int), atol=1)


def test_variants_rows_and_liqe_and_id_skipped_as_in_the_paper(dataset, tmp_path, no_weights):
    rep = evaluate(ShardSource(dataset, "val-synthetic"), create_method("bicubic"), results=tmp_path / "r",
                   metrics=("psnr", "liqe", "id_score_dlib"), variants=("face-only", "gt-face-inserted"))
    by = {r.variant: r for r in rep.rows}
    assert by["face-only"].metrics["liqe"].reason.startswith("not computed for face-only")
    assert by["gt-face-inserted"].metrics["liqe"].reason.startswith("weights missing")
    assert by["face-only"].metrics["id_score_dlib"].status == "n/a"
    assert by["gt-face-inserted"].metrics["psnr"].mean > by["face-only"].metrics["psnr"].mean - 100
    assert all(r.complete for r in rep.rows)


def test_no_gt_split_scores_no_reference_metrics_only(dataset, tmp_path):
    rep = evaluate(ShardSource(dataset, "test-real"), create_method("bicubic", scale=2), results=tmp_path / "r",
                   metrics=("psnr", "piqe", "id_score_dlib"))
    m = rep.rows[0].metrics
    assert m["psnr"].reason == "no ground truth in this split" and m["id_score_dlib"].status == "n/a"
    assert m["piqe"].status == "ok" and m["piqe"].n == 3 and rep.complete


@pytest.mark.parametrize("problem", ["missing", "extra", "resolution", "corrupt"])
def test_bad_predictions_are_named_per_key_and_mark_the_row_incomplete(dataset, tmp_path, problem):
    gts = _gts()
    preds = _preds_folder(tmp_path / "preds", gts)
    key = sorted(gts)[1]
    if problem == "missing":
        (preds / f"{key}.png").unlink()
    elif problem == "extra":
        (preds / "not_a_key.png").write_bytes(encode_image(gts[key], "png"))
    elif problem == "resolution":
        (preds / f"{key}.png").write_bytes(encode_image(gts[key][: SIZE // 2], "png"))
    else:
        (preds / f"{key}.png").write_bytes((preds / f"{key}.png").read_bytes()[:200])
    rep = evaluate(ShardSource(dataset, "val-synthetic"), ExternalMethod(preds, "Mine"), results=tmp_path / "r",
                   metrics=("psnr", "ssim"))
    (row,) = rep.rows
    assert not row.complete
    kinds = {(p.key, p.kind) for p in row.problems}
    assert (("not_a_key" if problem == "extra" else key), problem) in kinds
    scored = N if problem == "extra" else N - 1
    assert row.metrics["psnr"].n == scored and row.metrics["psnr"].n_expected == N
    assert row.metrics["psnr"].status == ("ok" if problem == "extra" else "partial")


def test_folder_pair_mode(tmp_path):
    lq, gt = write_folders(tmp_path / "pair", n=3, size=64)
    src = FolderSource(lq, gt)
    rep = evaluate(src, create_method("bicubic"), results=tmp_path / "r", metrics=("psnr", "ssim"),
                   variants=("full", "face-only"))
    full, face = rep.rows
    assert full.complete and full.metrics["psnr"].n == 3 and full.split == "folders"
    assert face.metrics["psnr"].reason == "no face boxes in folder mode"
    (gt / f"{sorted(p.stem for p in gt.iterdir())[0]}.png").unlink()
    refs, problems = FolderSource(lq, gt).refs()
    assert len(refs) == 2 and problems[0].kind == "no-gt"


def test_methods_registry():
    assert {"lq", "bicubic", "lanczos", "external", "face2scene"} <= set(list_methods())
    # the restorer wing fills the hook; without it (or without a checkpoint) the error says why
    with pytest.raises(BadInputError, match="method 'face2scene' (is not available yet|needs --checkpoint)"):
        create_method("face2scene")
    with pytest.raises(BadInputError, match="unknown method"):
        create_method("nope")
    assert Problem("k", "missing", "x").line() == "k: missing: x"


def test_learned_metrics_in_the_evaluator_random_init(dataset, tmp_path, no_weights):
    rep = evaluate(ShardSource(dataset, "val-synthetic"), create_method("lq"), results=tmp_path / "r",
                   metrics=("lpips", "musiq"), pretrained=False, device="cpu")
    m = rep.rows[0].metrics
    assert m["lpips"].status == "ok" and "random-init" in m["lpips"].version and m["lpips"].n == N
    assert m["musiq"].status == "ok" and m["musiq"].lower_better is False


@pytest.mark.slow  # InceptionV3 on 2N images at 299x299
def test_fid_is_set_level_from_cached_per_image_features(dataset, tmp_path, no_weights, monkeypatch):
    # The Frechet distance itself (pyiqa's, a 2048x2048 matrix square root: tens of seconds on two
    # busy cores) is tested in test_quality; here it is replaced at that one boundary.
    import benchmarks.metrics as M

    calls = []

    def distance(a, b):
        calls.append((a.shape, b.shape))
        return float(np.sum((a.mean(0) - b.mean(0)) ** 2))

    monkeypatch.setattr(M, "fid_from_features", distance)
    res = tmp_path / "r"
    src = ShardSource(dataset, "val-synthetic")
    rep = evaluate(src, create_method("lq"), results=res, metrics=("fid",), pretrained=False, device="cpu")
    fid = rep.rows[0].metrics["fid"]
    assert fid.status == "ok" and fid.n == N and fid.mean >= 0 and fid.ci_low is None
    again = evaluate(src, create_method("lq"), results=res, metrics=("fid",), pretrained=False, device="cpu")
    assert again.computed == 0 and again.rows[0].metrics["fid"].mean == pytest.approx(fid.mean)
    assert calls == [((N, 2048), (N, 2048))] * 2  # restored set vs GT set, per-image features from the cache


@pytest.mark.slow  # starts a 2-worker Dask LocalCluster
def test_dask_partitions_give_the_same_rows(dataset, tmp_path):
    from inscene.runtime import ClusterOptions

    src = ShardSource(dataset, "val-synthetic")
    local = evaluate(src, create_method("bicubic"), results=tmp_path / "a", metrics=("psnr", "ssim"))
    dask = evaluate(src, create_method("bicubic"), results=tmp_path / "b", metrics=("psnr", "ssim"),
                    cluster=ClusterOptions(workers=2, dashboard=False), partition_size=2)
    for k in ("psnr", "ssim"):
        assert dask.rows[0].metrics[k].mean == pytest.approx(local.rows[0].metrics[k].mean)
    assert dask.rows[0].complete


def test_cli_evaluate_exit_codes(dataset, tmp_path):
    gts = _gts()
    preds = _preds_folder(tmp_path / "preds", gts)
    base = [sys.executable, "-m", "inscene", "evaluate", "--data", str(dataset), "--results", str(tmp_path / "r"),
            "--metrics", "psnr,ssim", "--in-process"]
    ok = subprocess.run([*base, "--method", "Mine", "--predictions", str(preds)], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "complete" in ok.stdout and "PSNR" in ok.stdout
    shutil.copy(preds / f"{sorted(gts)[0]}.png", preds / "stray.png")
    (preds / f"{sorted(gts)[1]}.png").unlink()
    bad = subprocess.run([*base, "--method", "Mine", "--predictions", str(preds)], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1
    assert f"{sorted(gts)[1]}: missing" in bad.stdout and "stray: extra" in bad.stdout
    usage = subprocess.run([*base, "--method", "bicubic", "--predictions", str(preds)], capture_output=True,
                           text=True, timeout=120)
    assert usage.returncode == 2 and "built-in method" in usage.stderr
    row = json.loads((tmp_path / "r" / "rows" / "val-synthetic" / "full" / "Mine.json").read_text())
    assert row["complete"] is False and any(p["kind"] == "missing" for p in row["problems"])
    assert decode_image(preds / "stray.png").shape == (SIZE, SIZE, 3)


def test_demo_entry_point_evaluates_lq_and_bicubic_and_prints_the_leaderboard(dataset, tmp_path):
    import io

    from rich.console import Console

    from benchmarks.commands import evaluate_demo_split

    buf = io.StringIO()
    demo = evaluate_demo_split(dataset, tmp_path / "demo-eval", split="val-synthetic", metrics=("psnr", "ssim"),
                               console=Console(file=buf, width=200))
    assert demo.ok and [r.rows[0].method for r in demo.reports] == ["lq", "bicubic"]
    text = buf.getvalue()
    assert "| bicubic | measured |" in text and "| lq | measured |" in text and "SUPIR" not in text
    assert demo.leaderboard.html.is_file()


def test_id_score_leaves_samples_without_a_face_out_and_says_so(tmp_path):
    from benchmarks.leaderboard import write_leaderboard

    root = tmp_path / "data"
    write_split(root, "val-synthetic", n=3, size=96, subset="synthetic")
    write_split(root, "val-synthetic", n=2, size=96, subset="nofaces", with_faces=False, seed=1)
    rep = evaluate(ShardSource(root, "val-synthetic"), create_method("bicubic"), results=tmp_path / "r",
                   metrics=("psnr", "id_score_dlib"))
    (row,) = rep.rows
    m = row.metrics["id_score_dlib"]
    # a sample without a face is outside the ID score, not a failure of the method
    assert row.complete and not row.problems
    assert m.status == "ok" and m.n == 3 and m.n_expected == 5
    assert "2 sample(s) without a recorded face" in m.notes
    assert row.metrics["psnr"].n == 5
    text = write_leaderboard(tmp_path / "r", include_reported=False).text
    assert "(3/5)" in text and "2 sample(s) without a recorded face are outside this score" in text


def test_gpu_resource_is_asked_for_by_gpu_metrics_and_gpu_methods():
    from types import SimpleNamespace

    from benchmarks.evaluate import wants_gpu
    from benchmarks.methods import Method
    from benchmarks.metrics import METRICS

    class OnGpu(Method):
        uses_gpu = True

    cpu_task = SimpleNamespace(method=create_method("bicubic"))
    gpu_task = SimpleNamespace(method=OnGpu())
    embedded = [METRICS[m] for m in ("psnr", "ssim", "id_score_dlib")]
    assert not wants_gpu([cpu_task], embedded)
    assert wants_gpu([gpu_task], embedded)
    assert wants_gpu([cpu_task], [*embedded, METRICS["musiq"]]) and wants_gpu([cpu_task], [METRICS["id_score"]])
