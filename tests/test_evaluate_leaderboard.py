"""The leaderboard (benchmarks.leaderboard) and the paper's reported rows (benchmarks.reported)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.evaluate import EvalRow, MetricSummary, row_path
from benchmarks.leaderboard import BEST, SECOND, build_boards, render_markdown, write_leaderboard
from benchmarks.reported import REPORTED_CSV, load_reported
from benchmarks.splits import Problem

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "face2scene-2603.16570.txt"


# ---- reported rows ------------------------------------------------------------------------------


def _reported(split, variant="full"):
    return {r.method: r for r in load_reported(split, variant)}


def test_reported_rows_reproduce_the_papers_numbers():
    syn, real, test = _reported("val-synthetic"), _reported("val-real"), _reported("test-real")
    # Table 2, InScene synthetic validation, SUPIR and Face2Scene rows
    assert [syn["SUPIR"].values[m] for m in ("dists", "lpips", "psnr", "ssim", "fid")] == [
        "0.1361", "0.3123", "24.0834", "0.6293", "24.85"]
    assert syn["Face2Scene"].values["musiq"] == "74.7630" and syn["Face2Scene"].steps == "1+N"
    assert syn["ResShift"].steps == "4" and syn["ResShift"].citation == "[58]"
    # Table 2, real validation
    assert real["Face2Scene"].values["psnr"] == "22.8975" and real["S3Diff"].values["fid"] == "38.64"
    # Table 4, real test set: five no-reference metrics only
    assert test["Face2Scene"].values == {"musiq": "73.3047", "clipiqa": "0.6407", "maniqa": "0.4859",
                                         "liqe": "4.6973", "topiq": "0.6846"}
    assert test["SinSR"].citation == "[49]"
    # Table 7, ID score, merged into the same method's row
    assert syn["S3Diff"].values["id_score"] == "0.4684" and real["OSEDiff"].values["id_score"] == "0.3766"
    assert syn["S3Diff"].table == "2+7"
    # Table 3 variants and their Wins
    face = _reported("val-synthetic", "face-only")
    assert face["Face2Scene"].values["fid"] == "18.50" and "liqe" not in face["Face2Scene"].values
    assert face["Face2Scene"].wins == "7/9"
    ins = _reported("val-synthetic", "gt-face-inserted")
    assert ins["S3Diff"].values["dists"] == "0.1000" and ins["S3Diff"].wins == "2/10"
    assert len(syn) == len(real) == len(test) == 9


@pytest.mark.skipif(not PAPER.is_file(), reason="the paper's text is not next to this checkout")
def test_every_reported_value_appears_in_the_paper_text():
    text = PAPER.read_text(encoding="utf-8")
    tables = {n: text[text.index(f"Table {n}: "):] for n in ("2", "3", "4", "7")}
    for rec in load_reported():
        for metric, value in [*rec.values.items(), *([("wins", rec.wins)] if rec.wins else [])]:
            tables_of = rec.table.split("+")
            assert any(re.search(rf"(?<![\d.]){re.escape(value)}(?![\d])", tables[t][:6000]) for t in tables_of), (
                rec.method, metric, value)
    # and a whole line: Table 2's synthetic S3Diff row, cell by cell, in order
    line = next(ln for ln in text.splitlines() if ln.startswith("S3Diff") and "0.1131" in ln)
    cells = [re.sub(r"\\cellcolor(purple|light)", "", t) for t in line.split()[-10:]]
    syn = _reported("val-synthetic")["S3Diff"]
    assert cells == [syn.values[m] for m in ("dists", "lpips", "psnr", "ssim", "fid", "musiq", "clipiqa",
                                              "maniqa", "liqe", "topiq")]


def test_reported_file_is_plain_csv_with_known_metrics():
    from benchmarks.metrics import METRICS

    header = REPORTED_CSV.read_text().splitlines()[0]
    assert header == "table,split,variant,method,citation,steps,metric,value"
    for rec in load_reported():
        assert set(rec.values) <= set(METRICS)


# ---- boards -------------------------------------------------------------------------------------


def _summary(name, label, lower, mean, n=4, status="ok", reason=""):
    lo, hi = (None, None) if mean is None else (mean - 1, mean + 1)
    return MetricSummary(metric=name, label=label, status=status, mean=mean, ci_low=lo, ci_high=hi, n=n,
                         n_expected=4, lower_better=lower, reason=reason)


MUSIQ_NA = "weights missing: musiq_koniq_ckpt-e95806b9.pth"


def _write_row(results, method, psnr, lpips, complete=True, musiq_reason=MUSIQ_NA):
    metrics = {
        "lpips": _summary("lpips", "LPIPS", True, lpips),
        "psnr": _summary("psnr", "PSNR", False, psnr, n=4 if complete else 3, status="ok" if complete else "partial"),
        "musiq": _summary("musiq", "MUSIQ", False, None, n=0, status="n/a", reason=musiq_reason),
    }
    row = EvalRow(split="val-synthetic", variant="full", method=method, complete=complete, n_samples=4,
                  metrics=metrics, problems=[] if complete else [Problem("k1", "missing", "no prediction k1.*")])
    path = row_path(results, row.split, row.variant, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row.to_json()))


@pytest.fixture()
def results(tmp_path):
    r = tmp_path / "results"
    _write_row(r, "bicubic", psnr=24.0, lpips=0.50)
    _write_row(r, "A", psnr=26.0, lpips=0.30)
    _write_row(r, "B", psnr=25.0, lpips=0.20)
    _write_row(r, "C", psnr=99.0, lpips=0.01, complete=False)  # never ranked
    return r


def _board(results, **kw):
    (board,) = [b for b in build_boards(results, **kw) if b.split == "val-synthetic" and b.variant == "full"]
    return board


def test_ranking_respects_direction_and_skips_incomplete_rows(results):
    board = _board(results, include_reported=False)
    rows = {r.method: r for r in board.rows}
    assert rows["A"].cells["psnr"].rank == BEST and rows["B"].cells["psnr"].rank == SECOND
    assert rows["B"].cells["lpips"].rank == BEST and rows["A"].cells["lpips"].rank == SECOND
    assert rows["C"].cells["psnr"].rank == 0 and not rows["C"].complete
    assert rows["C"].cells["psnr"].text == "99.0000 (3/4)"
    assert rows["bicubic"].cells["psnr"].rank == 0
    assert rows["A"].cells["musiq"].text == "n/a" and "musiq_koniq" in rows["A"].cells["musiq"].reason


def test_ranking_with_reported_rows_and_per_source(results):
    board = _board(results, rank_scope="all")
    rows = {(r.method, r.source): r for r in board.rows}
    # LPIPS: B (0.20) beats every published row (best 0.2421); A's 0.30 is third behind Face2Scene
    assert rows[("B", "measured")].cells["lpips"].rank == BEST
    assert rows[("Face2Scene", "reported")].cells["lpips"].rank == SECOND
    assert rows[("A", "measured")].cells["lpips"].rank == 0
    sep = {(r.method, r.source): r for r in _board(results).rows}  # the default: within each source
    assert sep[("Face2Scene", "reported")].cells["lpips"].rank == BEST
    assert sep[("S3Diff", "reported")].cells["lpips"].rank == SECOND
    assert sep[("B", "measured")].cells["lpips"].rank == BEST
    # measured rows first, then the paper's, each labelled
    sources = [r.source for r in board.rows]
    assert sources == sorted(sources)  # "measured" < "reported"
    supir = rows[("SUPIR", "reported")]
    assert supir.label == "SUPIR [57]" and supir.cells["psnr"].text == "24.0834"


def test_wins_column(results):
    board = _board(results, include_reported=False, wins_ref="bicubic")
    wins = {r.method: r.wins for r in board.rows}
    assert wins["bicubic"] is None
    assert wins["A"] == (2, 2) and wins["B"] == (2, 2)  # MUSIQ is n/a: not counted
    assert _board(results, include_reported=False, wins_ref="nobody").wins_ref is None
    # published rows are not compared with a measured reference (different data); Table 3 keeps its own
    full = {(r.method, r.source): r for r in _board(results, wins_ref="bicubic").rows}
    assert full[("SUPIR", "reported")].wins is None and full[("A", "measured")].wins == (2, 2)
    (face,) = [b for b in build_boards(results, wins_ref="S3Diff") if b.variant == "face-only"]
    f2s = next(r for r in face.rows if r.method == "Face2Scene")
    assert f2s.reported_wins == "7/9" and f2s.wins == (7, 9)  # recomputed from the table: the paper's count


def test_files_markdown_csv_html_png(results, tmp_path):
    files = write_leaderboard(results, tmp_path / "out")
    md = files.markdown.read_text()
    # PSNR, ranked within each source: A (26.0) and B (25.0) among measured rows; PASD's published
    # 25.4177 and ResShift's 24.6416 among the paper's rows (as Table 2 marks them)
    assert "**26.0000**" in md and "<u>25.0000</u>" in md and "C ⚠ incomplete" in md
    assert "**25.4177**" in md and "<u>24.6416</u>" in md
    # the cell says n/a; the reason is listed once under the table
    assert "| n/a |" in md and "| n/a (weights" not in md
    assert md.count("weights missing: musiq_koniq_ckpt-e95806b9.pth") == 1
    assert "- n/a: weights missing: musiq_koniq_ckpt-e95806b9.pth: MUSIQ (A), MUSIQ (B)" in md
    assert "reported (Table 2+7)" in md and "C: k1: missing: no prediction k1.*" in md
    csv_text = files.csv.read_text()
    assert csv_text.splitlines()[0].startswith("split,variant,method,label,source")
    assert ",reported," in csv_text and ",measured," in csv_text and "24.0834" in csv_text
    page = files.html.read_text()
    assert "<td class='best'" in page and "<td class='second'" in page
    assert "weights missing: musiq_koniq_ckpt-e95806b9.pth" in page and "LPIPS↓" in page and "PSNR↑" in page
    assert not re.search(r"(src|href)=['\"]https?://", page), "the page must be self-contained"
    assert "data:image/png;base64," in page
    png = files.plots["val-synthetic-full"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files.incomplete == ["val-synthetic/full/C"]
    assert "val-real" in render_markdown(build_boards(results))  # reported-only boards are shown too


def test_cli_leaderboard(results, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "inscene", "leaderboard", "--results", str(results), "--out",
                           str(tmp_path / "lb"), "--split", "val-synthetic"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr  # row C is incomplete
    assert "incomplete rows: val-synthetic/full/C" in proc.stderr
    assert "### val-synthetic — full" in proc.stdout and (tmp_path / "lb" / "leaderboard.html").is_file()
    (results / "rows" / "val-synthetic" / "full" / "C.json").unlink()
    ok = subprocess.run([sys.executable, "-m", "inscene", "leaderboard", "--results", str(results), "--out",
                         str(tmp_path / "lb"), "--no-reported"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "SUPIR" not in ok.stdout
