"""Audit fixes to ``inscene evaluate`` / ``inscene leaderboard``: folder rows stay off the paper's
boards, measured and reported rows are ranked apart, the paper's Wins show, the CSV is numeric."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from benchmarks.evaluate import EvalRow, MetricSummary, row_path
from benchmarks.leaderboard import BEST, SECOND, build_boards, render_csv, render_markdown, write_leaderboard
from benchmarks.splits import FolderSource, folder_label
from benchmarks.synthetic import write_folders
from inscene.errors import BadInputError


def _inscene(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "inscene", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


# ---- gap 1: folder pairs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_folders(tmp_path_factory.mktemp("pair"), n=2, size=48)


def test_folder_pair_rows_are_filed_under_folders_not_an_inscene_split(pair, tmp_path):
    lq, gt = pair
    res = tmp_path / "r"
    proc = _inscene("evaluate", "--method", "bicubic", "--lq", lq, "--gt", gt, "--results", res, "--metrics", "psnr",
                    "--in-process")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    label = folder_label(lq, gt)
    assert (res / "rows" / label / "full" / "bicubic.json").is_file()
    assert not (res / "rows" / "val-synthetic").exists()
    # and the leaderboard keeps it off Table 2's board
    boards = build_boards(res)
    syn = next(b for b in boards if b.split == "val-synthetic" and b.variant == "full")
    assert all(r.source == "reported" for r in syn.rows)
    assert [r.method for b in boards if b.split == label for r in b.rows] == ["bicubic"]


def test_folder_pair_refuses_an_inscene_split_name(pair, tmp_path):
    lq, gt = pair
    proc = _inscene("evaluate", "--method", "bicubic", "--lq", lq, "--gt", gt, "--split", "val-synthetic",
                    "--results", tmp_path / "r", "--metrics", "psnr", "--in-process")
    assert proc.returncode == 2
    assert "val-synthetic is an InScene split" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "rows").exists()
    with pytest.raises(BadInputError, match="InScene split"):
        FolderSource(lq, gt, split="test-real")
    assert FolderSource(lq, gt, split="my-photos").split == "my-photos"


@pytest.mark.parametrize("flag", ["--face-only", "--gt-face-inserted"])
def test_folder_pair_refuses_face_variants(pair, tmp_path, flag):
    lq, gt = pair
    proc = _inscene("evaluate", "--method", "bicubic", "--lq", lq, "--gt", gt, flag, "--results", tmp_path / "r",
                    "--metrics", "psnr", "--in-process")
    assert proc.returncode == 2
    assert f"{flag} needs face boxes" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "rows").exists()


# ---- gaps 2-4: the leaderboard -------------------------------------------------------------------


def _write_row(results, method, psnr, lpips, split="val-synthetic", variant="full"):
    def m(name, label, lower, mean):
        return MetricSummary(metric=name, label=label, status="ok", mean=mean, ci_low=mean - 1, ci_high=mean + 1,
                             n=6, n_expected=6, lower_better=lower)

    row = EvalRow(split=split, variant=variant, method=method, complete=True, n_samples=6,
                  metrics={"lpips": m("lpips", "LPIPS", True, lpips), "psnr": m("psnr", "PSNR", False, psnr),
                           "piqe": m("piqe", "PIQE", True, 40.0)})  # a metric the paper does not report
    path = row_path(results, split, variant, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row.to_json()))


@pytest.fixture()
def results(tmp_path):
    r = tmp_path / "results"
    _write_row(r, "bicubic", psnr=31.0, lpips=0.35)  # above every published PSNR (tiny generated images)
    _write_row(r, "lq", psnr=30.0, lpips=0.60)
    return r


def _syn(boards, variant="full"):
    return next(b for b in boards if b.split == "val-synthetic" and b.variant == variant)


def test_default_ranks_measured_and_reported_rows_apart(results):
    rows = {(r.method, r.source): r for r in _syn(build_boards(results)).rows}
    assert rows[("bicubic", "measured")].cells["psnr"].rank == BEST
    assert rows[("lq", "measured")].cells["psnr"].rank == SECOND
    # the paper's rows keep Table 2's own marks (purple = best, light = second), whatever was measured
    table2 = {"psnr": ("PASD", "ResShift"), "lpips": ("Face2Scene", "S3Diff"), "ssim": ("SUPIR", "OSEDiff")}
    for metric, (best, second) in table2.items():
        ranks = {m: r.cells[metric].rank for (m, src), r in rows.items() if src == "reported" and r.cells[metric].rank}
        assert ranks == {best: BEST, second: SECOND}, metric
    # 'all' is still there on request: bicubic then outranks every published PSNR
    together = {(r.method, r.source): r for r in _syn(build_boards(results, rank_scope="all")).rows}
    assert together[("PASD", "reported")].cells["psnr"].rank == 0
    assert together[("lq", "measured")].cells["psnr"].rank == SECOND


def test_cli_leaderboard_default_rank_scope_is_source(results, tmp_path):
    proc = _inscene("leaderboard", "--results", results, "--out", tmp_path / "lb", "--split", "val-synthetic")
    assert proc.returncode == 0, proc.stderr
    assert "**31.0000**" in proc.stdout and "<u>30.0000</u>" in proc.stdout
    assert "**25.4177**" in proc.stdout and "<u>24.6416</u>" in proc.stdout


@pytest.mark.parametrize("variant, wins", [("face-only", {"S3Diff": "2/9", "Face2Scene": "7/9"}),
                                           ("gt-face-inserted", {"S3Diff": "2/10", "Face2Scene": "8/10"})])
def test_papers_wins_show_without_the_measured_reference(results, variant, wins):
    board = _syn(build_boards(results), variant)  # default --wins-ref bicubic: not on the Table 3 boards
    assert board.wins_ref is None and board.show_wins
    md = render_markdown([board])
    assert "Wins↑" in md.splitlines()[2]
    for method, text in wins.items():
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {method}"))
        assert line.rstrip(" |").endswith(f"{text} (paper)"), line
    rows = list(csv.DictReader(io.StringIO(render_csv([board]))))
    assert {r["method"]: r["wins_paper"] for r in rows} == wins
    # a board with neither a reference nor published Wins has no Wins column
    full = _syn(build_boards(results, include_reported=False, wins_ref=None))
    assert not full.show_wins and "Wins" not in render_markdown([full])


def test_csv_reported_rows_leave_unreported_numeric_cells_empty(results, tmp_path):
    files = write_leaderboard(results, tmp_path / "out")
    rows = list(csv.DictReader(io.StringIO(files.csv.read_text(encoding="utf-8"))))
    assert "—" not in files.csv.read_text(encoding="utf-8")
    numeric = [k for k in rows[0] if k in ("psnr", "lpips", "piqe", "fid", "id_score") or k.endswith("_ci_low")]
    for r in rows:
        for k in numeric:
            assert r[k] == "" or float(r[k]) == float(r[k]), (r["method"], k, r[k])
    # the paper reports no PIQE: its rows on the measured board get an empty cell, the status says why
    supir = next(r for r in rows if r["split"] == "val-synthetic" and r["variant"] == "full"
                 and r["method"] == "SUPIR")
    assert supir["piqe"] == "" and supir["piqe_status"] == "empty" and supir["psnr"] == "24.0834"
    assert next(r for r in rows if r["method"] == "bicubic")["piqe"] == "40.0"


# ---- journey audit: boards of different data, n/a reasons, resize = lq, split outputs, the plot ----


def _data_row(results, method, psnr, *, split="folders-mine", n=3, where="/data/a/gt", notes=()):
    m = MetricSummary(metric="psnr", label="PSNR", status="ok", mean=psnr, n=n, n_expected=n)
    row = EvalRow(split=split, variant="full", method=method, complete=True, n_samples=n, metrics={"psnr": m},
                  data={"kind": "folders", "lq": None, "gt": where, "split": split, "has_gt": True},
                  notes=list(notes))
    path = row_path(results, split, "full", method)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row.to_json()))


def test_folder_pairs_of_different_images_get_their_own_boards(tmp_path):
    a_lq, a_gt = write_folders(tmp_path / "A", n=2, size=48)
    b_lq, b_gt = write_folders(tmp_path / "B", n=1, size=48, seed=1)
    res = tmp_path / "r"
    for lq, gt in ((a_lq, a_gt), (b_lq, b_gt)):
        proc = _inscene("evaluate", "--method", "lq", "--lq", lq, "--gt", gt, "--results", res, "--metrics", "psnr",
                        "--in-process")
        assert proc.returncode == 0, proc.stderr
        assert f"rows filed under split '{folder_label(lq, gt)}'" in proc.stderr
    la, lb = folder_label(a_lq, a_gt), folder_label(b_lq, b_gt)
    assert la != lb and la.startswith("folders-gt-") and len(la) == len("folders-gt-") + 8
    boards = {b.split: b for b in build_boards(res, include_reported=False)}
    assert [r.n_samples for r in boards[la].rows] == [2] and [r.n_samples for r in boards[lb].rows] == [1]
    # the printed label is accepted back with --split (another method joins that board)
    proc = _inscene("evaluate", "--method", "bicubic", "--lq", a_lq, "--gt", a_gt, "--split", la, "--results", res,
                    "--metrics", "psnr", "--in-process")
    assert proc.returncode == 0, proc.stderr
    assert sorted(r.method for r in build_boards(res, splits=[la], include_reported=False)[0].rows) == [
        "bicubic", "lq"]


def test_rows_scored_on_different_data_are_not_ranked_against_each_other(tmp_path):
    res = tmp_path / "r"
    _data_row(res, "bicubic", 20.0)
    _data_row(res, "mine", 22.0)
    _data_row(res, "lq", 30.0, n=1, where="/data/b/gt")  # one other image: easier, not better
    (board,) = build_boards(res, include_reported=False, wins_ref="bicubic")
    rows = {r.method: r for r in board.rows}
    assert rows["mine"].cells["psnr"].rank == BEST and rows["bicubic"].cells["psnr"].rank == SECOND
    assert rows["lq"].cells["psnr"].rank == BEST  # best of its own data only
    assert rows["mine"].wins == (1, 1) and rows["lq"].wins is None
    note = next(n for n in board.notes if "different data" in n)
    assert "bicubic, mine on folder /data/a/gt, 3 samples" in note and "lq on folder /data/b/gt, 1 sample)" in note
    assert note in render_markdown([board])
    # 'all' cannot rank across data either
    (together,) = build_boards(res, include_reported=False, rank_scope="all")
    assert {r.method: r.cells["psnr"].rank for r in together.rows} == {"bicubic": SECOND, "mine": BEST, "lq": BEST}
    # rows of the same data: no note
    (res / "rows" / "folders-mine" / "full" / "lq.json").unlink()
    (same,) = build_boards(res, include_reported=False)
    assert not any("different data" in n for n in same.notes)


def test_markdown_has_short_na_cells_and_an_n_column(results):
    board = _syn(build_boards(results))
    for r in board.rows:  # a learned metric without weights on the measured rows
        if r.source == "measured":
            r.cells["lpips"].status, r.cells["lpips"].text, r.cells["lpips"].rank = "n/a", "n/a", 0
            r.cells["lpips"].reason = "weights missing: DISTS_weights-f5e65c96.pth"
    md = render_markdown([board])
    lines = md.splitlines()
    assert lines[2].startswith("| Method | Source | Step | N | ")
    assert md.count("DISTS_weights-f5e65c96.pth") == 1 and max(map(len, lines)) < 250
    bic = next(ln for ln in lines if ln.startswith("| bicubic |"))
    assert bic.startswith("| bicubic | measured |  | 6 | ") and "| n/a |" in bic
    supir = next(ln for ln in lines if ln.startswith("| SUPIR"))
    assert supir.split("|")[4].strip() == ""  # the paper's count is not ours to print


def test_bicubic_says_it_equals_lq_when_the_lq_is_stored_at_gt_size(tmp_path):
    import numpy as np
    from PIL import Image

    from benchmarks.evaluate import evaluate
    from benchmarks.methods import create_method

    lq, gt = write_folders(tmp_path / "pair", n=2, size=48)
    big = tmp_path / "lq-at-gt"
    big.mkdir()
    for f in sorted(lq.iterdir()):  # what `inscene degrade` writes by default (--lq-size gt)
        Image.open(f).resize(Image.open(gt / f.name).size, Image.BICUBIC).save(big / f.name)
    res = tmp_path / "r"
    proc = _inscene("evaluate", "--method", "bicubic", "--lq", big, "--gt", gt, "--results", res, "--metrics",
                    "psnr", "--in-process")
    assert proc.returncode == 0, proc.stderr
    assert "note: bicubic equals lq here: every LQ is stored at the GT size" in proc.stdout
    assert "--lq-size lq" in proc.stdout
    # a cached rerun still knows; the board shows the note; a small LQ gets none
    src = FolderSource(big, gt, split=folder_label(big, gt))
    (row,) = evaluate(src, create_method("lanczos"), results=res, metrics=["psnr"]).rows
    assert row.notes and row.notes[0].startswith("lanczos equals lq here")
    (row,) = evaluate(src, create_method("lanczos"), results=res, metrics=["psnr"]).rows
    assert row.notes and row.notes[0].startswith("lanczos equals lq here")
    md = render_markdown(build_boards(res, include_reported=False))
    assert "- bicubic: bicubic equals lq here" in md and "- lanczos: lanczos equals lq here" in md
    (small,) = evaluate(FolderSource(lq, gt), create_method("bicubic"), results=res, metrics=["psnr"]).rows
    assert small.notes == [] and np.isfinite(small.metrics["psnr"].mean)


def test_filtered_leaderboard_without_out_keeps_the_full_one(results):
    full = _inscene("leaderboard", "--results", results)
    assert full.returncode == 0, full.stderr
    md = results / "leaderboard" / "leaderboard.md"
    before = md.read_text()
    proc = _inscene("leaderboard", "--results", results, "--split", "val-synthetic", "--split", "val-real")
    assert proc.returncode == 0, proc.stderr
    assert md.read_text() == before and "val-real" in before and "test-real" in before
    sub = results / "leaderboard" / "val-synthetic+val-real" / "leaderboard.md"
    assert f"wrote {sub}" in proc.stderr.replace("\n", "")
    assert "test-real" not in sub.read_text()


def _plotted(board, monkeypatch, tmp_path):
    from matplotlib.figure import Figure

    from benchmarks.leaderboard import plot_perception_distortion

    figs = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figs.append(self), real(self, *a, **k))[1])
    assert plot_perception_distortion(board, tmp_path / "pd.png") is not None
    return figs[0]


def test_plot_legend_lists_only_drawn_kinds_and_stacks_coinciding_labels(tmp_path, monkeypatch):
    res = tmp_path / "r"
    _write_row(res, "bicubic", psnr=31.0, lpips=0.35)
    _write_row(res, "lanczos", psnr=31.0, lpips=0.35)  # the same point as bicubic
    _write_row(res, "lq", psnr=30.0, lpips=0.60)
    board = _syn(build_boards(res, include_reported=False))
    fig = _plotted(board, monkeypatch, tmp_path)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["measured"]
    assert not any("reported" in t.get_text() for t in fig.texts)
    labels = {t.get_text(): t for t in ax.texts}
    same = [labels[str(i)] for i, r in enumerate(sorted(board.rows, key=lambda r: r.cells["psnr"].value), 1)
            if r.method in ("bicubic", "lanczos")]
    assert len({t.xyann for t in same}) == 2  # stacked, not printed over each other
    with_paper = _plotted(_syn(build_boards(res)), monkeypatch, tmp_path)
    assert [t.get_text() for t in with_paper.axes[0].get_legend().get_texts()] == ["measured", "reported (paper)"]


# ---- restorer audit: n/a metrics named in the status line; dropped metrics warned -----------------


def test_status_line_names_na_metrics_of_a_complete_row():
    na = MetricSummary("lpips", "LPIPS", "n/a", reason="weights missing: vgg.pth")
    ok = MetricSummary("psnr", "PSNR", "ok", mean=20.0, n=2, n_expected=2)
    row = EvalRow(split="s", variant="full", method="m", complete=True, n_samples=2,
                  metrics={"lpips": na, "dists": na, "psnr": ok})
    assert row.status_line() == "m on s (full): complete (2 metrics n/a: weights missing)"
    row.metrics = {"psnr": ok}
    assert row.status_line() == "m on s (full): complete"


def test_rerun_with_fewer_metrics_warns_which_it_dropped(pair, tmp_path):
    lq, gt = pair
    res = tmp_path / "r"
    first = _inscene("evaluate", "--method", "bicubic", "--lq", lq, "--gt", gt, "--results", res, "--metrics",
                     "psnr,ssim", "--in-process")
    assert first.returncode == 0 and "warning" not in first.stderr
    assert "bicubic on folders-" in first.stdout and ": complete" in first.stdout
    again = _inscene("evaluate", "--method", "bicubic", "--lq", lq, "--gt", gt, "--results", res, "--metrics", "psnr",
                     "--in-process")
    assert again.returncode == 0, again.stderr
    assert "had ssim, which this run's --metrics dropped" in " ".join(again.stderr.split())


# ---- robustness: tiny images, metric names as printed, a --results that cannot be written ---------------


@pytest.mark.parametrize(("metric", "side"), [("piqe", 8), ("ssim", 11)])
def test_tiny_images_get_a_clear_per_sample_message(metric, side):
    import numpy as np

    from benchmarks.metrics import get_metric, score_images

    tiny, ok = np.full((1, 1, 3), 128, np.uint8), np.full((side, side, 3), 128, np.uint8)
    spec = get_metric(metric)
    (err,) = score_images(spec, [tiny], [tiny if spec.needs_gt else None])
    assert isinstance(err, BadInputError) and f"at least {side}x{side} pixels, got 1x1" in str(err)
    (value,) = score_images(spec, [ok], [ok if spec.needs_gt else None])
    assert isinstance(value, float)


def test_metrics_accept_the_printed_labels_in_any_case(pair, tmp_path):
    from benchmarks.metrics import get_metric

    assert get_metric("PSNR").name == "psnr" and get_metric("c-iqa").name == "clipiqa"
    lq, gt = pair
    proc = _inscene("evaluate", "--method", "bicubic", "--lq", lq, "--gt", gt, "--results", tmp_path / "r",
                    "--metrics", "PSNR,SSIM", "--in-process")
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(BadInputError, match="unknown metric 'PSNRX'"):
        get_metric("PSNRX")


def test_results_that_is_a_file_is_one_line_before_any_work(pair, tmp_path):
    lq, gt = pair
    afile = tmp_path / "afile"
    afile.write_text("x")
    for results in (afile, afile / "sub"):
        proc = _inscene("evaluate", "--method", "bicubic", "--lq", lq, "--gt", gt, "--results", results,
                        "--metrics", "psnr", "--in-process")
        assert proc.returncode == 2, proc.stderr
        assert "--results" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr and "cancelled" not in proc.stderr
