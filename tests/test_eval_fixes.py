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
from benchmarks.splits import FolderSource
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
    assert (res / "rows" / "folders" / "full" / "bicubic.json").is_file()
    assert not (res / "rows" / "val-synthetic").exists()
    # and the leaderboard keeps it off Table 2's board
    boards = build_boards(res)
    syn = next(b for b in boards if b.split == "val-synthetic" and b.variant == "full")
    assert all(r.source == "reported" for r in syn.rows)
    assert [r.method for b in boards if b.split == "folders" for r in b.rows] == ["bicubic"]


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
