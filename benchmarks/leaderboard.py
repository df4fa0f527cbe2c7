"""The leaderboard: measured rows beside the paper's reported rows, as Markdown, CSV, HTML and PNG.

Provenance: Face2Scene (arXiv 2603.16570) Tables 2-4 and 7 (layout, column order, best and
second-best cells highlighted, arrows for direction) and Table 3 (the Wins column: on how many
metrics a row beats a reference row).

One board per (split, variant). Measured rows (from ``inscene evaluate``, under ``results/rows/``)
come first, then the reported rows (``benchmarks/data/reported.csv``), each labelled with its
source: they are never merged or averaged together. Best and second best are marked within each
source by default (``rank_scope="source"``: the best measured row and the best reported row each
get bold), since measured rows are scored on other data than the paper's; ``rank_scope="all"``
ranks every row together (to see where a method run on the paper's own split would stand).
Measured rows scored on different samples (another folder, shard set or sample count) are never
ranked against each other: the board says so and marks best/second and Wins within rows of the
same data only. Incomplete measured rows are shown, flagged, and never ranked. A metric a machine
could not compute shows ``n/a`` (the reason, e.g. ``weights missing: <file>``, is listed once
under the board). The Wins column counts the metrics on which a row beats a reference method
(``wins_ref``) among rows of the same data; a reported row without such a count shows the paper's
own Wins, marked ``(paper)``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.evaluate import DEFAULT_RESULTS, VARIANTS, EvalRow, load_rows
from benchmarks.metrics import METRICS, MetricSpec
from benchmarks.reported import ReportedRow, load_reported
from benchmarks.splits import SPLITS

__all__ = [
    "Board",
    "BoardRow",
    "Cell",
    "LeaderboardFiles",
    "build_boards",
    "plot_perception_distortion",
    "render_csv",
    "render_html",
    "render_markdown",
    "write_leaderboard",
]

BEST, SECOND = 1, 2


@dataclass
class Cell:
    """One value of a board."""

    value: float | None = None
    text: str = ""
    ci: tuple[float, float] | None = None
    n: int = 0
    n_expected: int = 0
    status: str = "ok"  # ok | partial | n/a | missing | empty
    reason: str = ""
    notes: str = ""
    rank: int = 0  # BEST, SECOND or 0


@dataclass
class BoardRow:
    method: str
    label: str
    source: str  # measured | reported
    cells: dict[str, Cell]
    steps: str = ""
    table: str = ""
    complete: bool = True
    problems: list[str] = field(default_factory=list)
    n_samples: int = 0
    wins: tuple[int, int] | None = None
    reported_wins: str | None = None
    notes: list[str] = field(default_factory=list)
    data_key: str = "reported"  # rows with equal keys were scored on the same samples
    data_desc: str = "the paper's data"

    @property
    def rankable(self) -> bool:
        return self.complete


@dataclass
class Board:
    split: str
    variant: str
    columns: list[MetricSpec]
    rows: list[BoardRow]
    wins_ref: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        desc = SPLITS[self.split].description if self.split in SPLITS else ""
        return f"{self.split} — {self.variant}" + (f" ({desc})" if desc else "")

    @property
    def slug(self) -> str:
        return f"{self.split}-{self.variant}"

    @property
    def show_wins(self) -> bool:
        """A Wins column: a reference is on the board, or a reported row has the paper's Wins."""
        return self.wins_ref is not None or any(r.reported_wins for r in self.rows)


# --------------------------------------------------------------------------------------------
# Building


def _fmt(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _data_identity(row: EvalRow) -> tuple[str, str]:
    """What a measured row was scored on: a comparable key and a short description.

    Two rows share a key when they record the same source (GT folder, or shard folder, split,
    subset and member names) and the same number of samples.
    """
    d = row.data or {}
    if d.get("kind") == "folders":
        where = d.get("gt") or d.get("lq")
        ident: dict[str, Any] = {"kind": "folders", "where": where}
        desc = f"folder {where}"
    elif d.get("kind") == "shards":
        ident = {k: d.get(k) for k in ("kind", "root", "shard_split", "subset", "lq_fields", "gt_fields")}
        desc = f"shards {d.get('root')}/{d.get('shard_split')}" + (f" ({d['subset']})" if d.get("subset") else "")
    else:
        ident, desc = {}, "unrecorded data"
    key = json.dumps([ident, row.n_samples], sort_keys=True)
    return key, f"{desc}, {row.n_samples} sample{'s' if row.n_samples != 1 else ''}"


def _measured_row(row: EvalRow, columns: list[MetricSpec]) -> BoardRow:
    cells = {}
    for spec in columns:
        m = row.metrics.get(spec.name)
        if m is None:
            cells[spec.name] = Cell(status="empty", text="—", reason="not evaluated")
            continue
        if m.status == "n/a":
            cells[spec.name] = Cell(status="n/a", text="n/a", reason=m.reason, n_expected=m.n_expected)
            continue
        ci = (m.ci_low, m.ci_high) if m.ci_low is not None and m.ci_high is not None else None
        text = _fmt(m.mean, spec.digits)
        if m.status != "ok" or m.n != m.n_expected:  # partial, or samples outside the score (no face)
            text += f" ({m.n}/{m.n_expected})"
        cells[spec.name] = Cell(m.mean, text, ci, m.n, m.n_expected, m.status, notes=m.notes)
    data_key, data_desc = _data_identity(row)
    return BoardRow(
        method=row.method, label=row.method, source="measured", cells=cells, complete=row.complete,
        problems=[p.line() for p in row.problems], n_samples=row.n_samples, notes=list(row.notes),
        data_key=data_key, data_desc=data_desc,
    )


def _reported_row(rep: ReportedRow, columns: list[MetricSpec]) -> BoardRow:
    cells = {}
    for spec in columns:
        text = rep.values.get(spec.name)
        if text is None:
            cells[spec.name] = Cell(status="empty", text="—", reason=f"not reported in Table {rep.table}")
        else:
            cells[spec.name] = Cell(float(text), text)
    return BoardRow(method=rep.method, label=rep.label, source="reported", cells=cells, steps=rep.steps,
                    table=rep.table, reported_wins=rep.wins)


def _rank(rows: list[BoardRow], spec: MetricSpec) -> None:
    vals = sorted({
        r.cells[spec.name].value for r in rows
        if r.rankable and r.cells[spec.name].status == "ok" and r.cells[spec.name].value is not None
        and math.isfinite(r.cells[spec.name].value)  # type: ignore[arg-type]
    }, reverse=not spec.lower_better)
    if not vals:
        return
    best = vals[0]
    second = vals[1] if len(vals) > 1 else None
    for r in rows:
        c = r.cells[spec.name]
        if not r.rankable or c.status != "ok" or c.value is None:
            continue
        if c.value == best:
            c.rank = BEST
        elif second is not None and c.value == second:
            c.rank = SECOND


def _wins_text(r: BoardRow) -> str:
    if r.wins is not None:
        return f"{r.wins[0]}/{r.wins[1]}"
    if r.reported_wins:
        return f"{r.reported_wins} (paper)"
    return "—"


def _better(a: float, b: float, lower_better: bool) -> bool:
    return a < b if lower_better else a > b


def _wins(board: Board, ref: str | None) -> None:
    if ref is None:
        return
    ref_row = next((r for r in board.rows if r.method == ref and r.source == "measured"), None)
    ref_row = ref_row or next((r for r in board.rows if r.method == ref), None)
    if ref_row is None:
        board.notes.append(f"Wins: reference method '{ref}' is not on this board (choose one with --wins-ref)")
        board.wins_ref = None
        return
    board.wins_ref = ref_row.label
    for r in board.rows:
        # Wins compare methods on the same data: measured rows against a measured reference scored
        # on the same samples, reported rows against a reported one (the paper's own Wins are kept).
        if r is ref_row or r.data_key != ref_row.data_key:
            continue
        won = total = 0
        for spec in board.columns:
            a, b = r.cells[spec.name], ref_row.cells[spec.name]
            if a.status != "ok" or b.status != "ok" or a.value is None or b.value is None:
                continue
            total += 1
            won += _better(a.value, b.value, spec.lower_better)
        r.wins = (won, total)


def build_boards(
    results: str | os.PathLike = DEFAULT_RESULTS,
    *,
    splits: list[str] | None = None,
    variants: list[str] | None = None,
    include_reported: bool = True,
    wins_ref: str | None = "bicubic",
    rank_scope: str = "source",
    metrics: list[str] | None = None,
) -> list[Board]:
    """Boards for every (split, variant) with measured or reported rows.

    Args:
        results: the folder ``inscene evaluate`` wrote (``rows/``).
        splits: only these splits (default: all found).
        variants: only these variants.
        include_reported: add the paper's rows.
        wins_ref: method the Wins column compares against (None: no computed Wins; reported rows
            still show the paper's Wins).
        rank_scope: ``source`` (best/second within measured rows and within reported rows,
            separately) or ``all`` (measured and reported rows ranked together).
        metrics: columns to show (default: every metric any row has, in the paper's order).
    """
    if rank_scope not in ("all", "source"):
        raise ValueError(f"rank_scope must be 'all' or 'source', got {rank_scope!r}")
    measured = load_rows(results)
    reported = load_reported() if include_reported else []
    keys: list[tuple[str, str]] = []
    for r in [*measured, *reported]:
        k = (r.split, r.variant)
        if k not in keys:
            keys.append(k)
    order = {s: i for i, s in enumerate(SPLITS)}
    keys.sort(key=lambda k: (order.get(k[0], len(order)), k[0], VARIANTS.index(k[1]) if k[1] in VARIANTS else 9))
    boards = []
    for split, variant in keys:
        if splits and split not in splits:
            continue
        if variants and variant not in variants:
            continue
        mrows = [r for r in measured if r.split == split and r.variant == variant]
        rrows = [r for r in reported if r.split == split and r.variant == variant]
        names: set[str] = set()
        for r in mrows:
            names |= set(r.metrics)
        for r in rrows:
            names |= set(r.values)
        if metrics:
            names &= set(metrics)
        columns = [spec for name, spec in METRICS.items() if name in names]
        rows = [_measured_row(r, columns) for r in sorted(mrows, key=lambda r: r.method.lower())]
        rows += [_reported_row(r, columns) for r in rrows]
        board = Board(split, variant, columns, rows)
        groups = _data_groups(rows)
        mixed = sum(1 for key in groups if key != "reported") > 1
        if mixed:
            board.notes.append(_mixed_data_note(groups))
        for spec in columns:
            if rank_scope == "all" and not mixed:
                _rank(rows, spec)
            else:
                for group in groups.values():
                    _rank(group, spec)
        _wins(board, wins_ref)
        if any(r.source == "reported" for r in rows) and any(r.source == "measured" for r in rows):
            board.notes.append(
                "Reported rows are the paper's numbers on the paper's data; measured rows are computed here."
            )
        boards.append(board)
    return boards


def _data_groups(rows: list[BoardRow]) -> dict[str, list[BoardRow]]:
    """Rows by the data they were scored on (all reported rows form one group)."""
    groups: dict[str, list[BoardRow]] = {}
    for r in rows:
        groups.setdefault(r.data_key, []).append(r)
    return groups


def _mixed_data_note(groups: dict[str, list[BoardRow]]) -> str:
    parts = [f"{', '.join(r.label for r in g)} on {g[0].data_desc}" for k, g in groups.items() if k != "reported"]
    return ("Measured rows were scored on different data (" + "; ".join(parts) + "): best/second and Wins "
            "are marked only among rows scored on the same data.")


# --------------------------------------------------------------------------------------------
# Markdown / CSV


def _footnotes(board: Board) -> list[str]:
    reasons: dict[str, list[str]] = {}
    for r in board.rows:
        for spec in board.columns:
            c = r.cells[spec.name]
            if c.status == "n/a" and c.reason:
                reasons.setdefault(c.reason, [])
                label = f"{spec.label} ({r.label})"
                if label not in reasons[c.reason]:
                    reasons[c.reason].append(label)
    return [f"n/a: {reason}: {', '.join(cols)}" for reason, cols in reasons.items()] + _cell_notes(board)


def _cell_notes(board: Board) -> list[str]:
    """One line per distinct cell note (e.g. PSNR +inf counted at pyiqa's bound), naming its cells."""
    noted: dict[str, list[str]] = {}
    for r in board.rows:
        for spec in board.columns:
            c = r.cells[spec.name]
            if c.notes:
                noted.setdefault(c.notes, []).append(f"{spec.label} ({r.label})")
    return [f"{', '.join(cols)}: {note}" for note, cols in noted.items()]


def render_markdown(boards: list[Board]) -> str:
    """GitHub Markdown: best **bold**, second <u>underlined</u>, ``n/a`` in the cell (reasons below).

    ``N`` is the number of samples a measured row was scored on (empty for the paper's rows).
    """
    out = []
    for b in boards:
        out.append(f"### {b.title}\n")
        head = ["Method", "Source", "Step", "N", *[f"{s.label}{s.arrow}" for s in b.columns]]
        if b.show_wins:
            head.append("Wins↑")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|")
        for r in b.rows:
            name = r.label if r.complete else f"{r.label} ⚠ incomplete"
            src = "measured" if r.source == "measured" else f"reported (Table {r.table})"
            cells = []
            for s in b.columns:
                c = r.cells[s.name]
                t = c.text
                if c.rank == BEST:
                    t = f"**{t}**"
                elif c.rank == SECOND:
                    t = f"<u>{t}</u>"
                cells.append(t)
            line = [name, src, r.steps or "", str(r.n_samples) if r.source == "measured" else "", *cells]
            if b.show_wins:
                line.append(_wins_text(r))
            out.append("| " + " | ".join(line) + " |")
        notes = list(b.notes)
        if b.wins_ref:
            notes.append(f"Wins: metrics on which a row beats {b.wins_ref} (rows of the same source).")
        if any(r.wins is None and r.reported_wins for r in b.rows):
            notes.append("Wins '(paper)': the count the paper prints (Table 3), not recomputed here.")
        notes += _footnotes(b)
        for r in b.rows:
            notes += [f"{r.label}: {n}" for n in r.notes]
            for ln in r.problems[:20]:
                notes.append(f"{r.label}: {ln}")
            if len(r.problems) > 20:
                notes.append(f"{r.label}: ... and {len(r.problems) - 20} more problems")
        if notes:
            out.append("")
            out += [f"- {n}" for n in notes]
        out.append("")
    return "\n".join(out)


def render_csv(boards: list[Board]) -> str:
    """One line per row: means, 95% CI bounds, counts and status per metric.

    Numeric columns hold numbers or nothing (``{metric}_status`` and ``_reason`` say why a cell is
    empty); ``wins`` is the count computed here, ``wins_paper`` the paper's printed Wins.
    """
    import csv

    names = []
    for b in boards:
        for s in b.columns:
            if s.name not in names:
                names.append(s.name)
    names.sort(key=list(METRICS).index)
    header = ["split", "variant", "method", "label", "source", "table", "steps", "complete", "n_samples",
              "problems", "wins", "wins_paper"]
    for n in names:
        header += [n, f"{n}_ci_low", f"{n}_ci_high", f"{n}_n", f"{n}_status", f"{n}_rank", f"{n}_reason"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for b in boards:
        for r in b.rows:
            line: list[Any] = [b.split, b.variant, r.method, r.label, r.source, r.table, r.steps, r.complete,
                               r.n_samples, len(r.problems),
                               "" if r.wins is None else f"{r.wins[0]}/{r.wins[1]}",  # computed here
                               r.reported_wins or ""]  # as the paper prints it
            for n in names:
                c = r.cells.get(n)
                if c is None:
                    line += ["", "", "", "", "", "", ""]
                    continue
                if c.value is None:  # not reported / not evaluated / n/a: an empty cell, the status says why
                    value = ""
                else:  # the paper's digits as printed; measured means at full precision
                    value = c.text if r.source == "reported" else repr(float(c.value))
                line += [value, "" if c.ci is None else c.ci[0], "" if c.ci is None else c.ci[1],
                         c.n if r.source == "measured" else "", c.status, c.rank or "", c.reason]
            w.writerow(line)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Perception-distortion plot


_PERCEPTION_Y = ("lpips", "dists", "piqe", "musiq", "clipiqa")
_LABEL_DY, _LABEL_STEP = 7, 9  # points above a marker: first number label, each stacked one


def _label_offsets(points: list[tuple[float, float]], tol: float = 0.01) -> list[int]:
    """Vertical offsets (points) of each marker's number label, stacking those of coinciding markers.

    Markers closer than ``tol`` of the axis spans in both x and y count as coinciding: the n-th of
    them gets its label ``n`` steps higher, so the numbers never print over each other.
    """
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    span_x = (max(xs) - min(xs)) or 1.0
    span_y = (max(ys) - min(ys)) or 1.0
    offsets: list[int] = []
    for i, (x, y) in enumerate(points):
        below = sum(1 for px, py in points[:i] if abs(px - x) <= tol * span_x and abs(py - y) <= tol * span_y)
        offsets.append(_LABEL_DY + _LABEL_STEP * below)
    return offsets


def plot_perception_distortion(
    board: Board, path: str | os.PathLike, x: str = "psnr", y: str | None = None
) -> Path | None:
    """Scatter of a perception metric against PSNR (distortion), measured filled, reported hollow.

    ``y`` defaults to LPIPS, or the first of DISTS, PIQE, MUSIQ, CLIP-IQA that a measured row has.
    Returns None when fewer than one row has both values.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = {s.name: s for s in board.columns}
    if x not in cols:
        return None
    if y is None:
        candidates = [m for m in _PERCEPTION_Y if m in cols]
        y = next((m for m in candidates if any(
            r.source == "measured" and r.cells[m].status in ("ok", "partial") for r in board.rows)), None)
        y = y or next(iter(candidates), None)
    if y is None or y not in cols:
        return None
    pts = [(r, r.cells[x].value, r.cells[y].value) for r in board.rows
           if r.cells[x].value is not None and r.cells[y].value is not None
           and r.cells[x].status in ("ok", "partial") and r.cells[y].status in ("ok", "partial")]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(8.6, 4.8), dpi=110)
    # Markers carry a number; the names are listed beside the plot (labels of close points would
    # overlap otherwise). Numbers of points that (nearly) coincide are stacked above them.
    names = []
    pts = sorted(pts, key=lambda p: (p[0].source, p[1]))
    offsets = _label_offsets([(vx, vy) for _, vx, vy in pts])
    for i, ((r, vx, vy), dy) in enumerate(zip(pts, offsets, strict=True), start=1):
        measured = r.source == "measured"
        color = "#6a3d9a" if measured else "#555555"
        ax.scatter([vx], [vy], s=60, marker="o" if measured else "s",
                   facecolors=color if measured else "none", edgecolors=color, linewidths=1.5, zorder=3)
        ax.annotate(str(i), (vx, vy), textcoords="offset points", xytext=(0, dy), ha="center", fontsize=7,
                    color=color)
        names.append(f"{i:>2}  {r.label}{'' if r.complete else ' (incomplete)'}"
                     f"{'' if measured else ' *'}")
    fig.text(0.71, 0.93, "\n".join(names), va="top", ha="left", fontsize=8, family="monospace")
    kinds = {r.source for r, _, _ in pts}
    if "reported" in kinds:
        fig.text(0.71, 0.06, "* reported (the paper's numbers)", fontsize=7, color="#555555")
    sx, sy = cols[x], cols[y]
    ax.set_xlabel(f"{sx.label} {sx.arrow}  (distortion)")
    ax.set_ylabel(f"{sy.label} {sy.arrow}  (perception)")
    ax.set_title(f"Perception–distortion: {board.split}, {board.variant}", fontsize=10)
    ax.grid(True, alpha=0.3)
    from matplotlib.lines import Line2D

    handles = []  # only the kinds of point drawn
    if "measured" in kinds:
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="#6a3d9a", markeredgecolor="#6a3d9a",
                              label="measured"))
    if "reported" in kinds:
        handles.append(Line2D([], [], marker="s", ls="", markerfacecolor="none", markeredgecolor="#555555",
                              label="reported (paper)"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    missing = len(board.rows) - len(pts)
    if missing:
        fig.text(0.01, 0.005, f"{missing} row(s) without both {sx.label} and {sy.label} are not shown",
                 fontsize=7, color="#777777")
    fig.tight_layout(rect=(0, 0.03 if missing else 0, 0.70, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# HTML


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin:28px 0 8px}
.sub{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{padding:4px 8px;border-bottom:1px solid #e3e3e3;text-align:right;white-space:nowrap}
th{background:#f4f4f7;border-bottom:2px solid #bbb}
td.name,th.name{text-align:left}
tr.reported td{color:#444;background:#fbfbfb}
tr.sep td{border-top:2px solid #999}
td.best{background:#cdb8ef;font-weight:700}
td.second{background:#e6f0fb;text-decoration:underline}
td.na{color:#999;font-style:italic}
.ci{display:block;color:#888;font-size:10px}
.badge{display:inline-block;font-size:10px;padding:1px 5px;border-radius:8px;margin-left:6px;vertical-align:1px}
.b-measured{background:#e8f5e9;color:#1b5e20}.b-reported{background:#eee;color:#555}
.b-incomplete{background:#ffebee;color:#b71c1c}
ul.notes{font-size:12px;color:#555;margin:4px 0 0 0}
details{font-size:12px;margin:4px 0} img{max-width:560px;border:1px solid #ddd;margin-top:6px}
.legend span{display:inline-block;padding:1px 8px;margin-right:8px;font-size:12px}
"""


def render_html(boards: list[Board], plots: dict[str, Path] | None = None, title: str = "InScene leaderboard") -> str:
    """A self-contained page (inline CSS, plots as data URIs)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        "<div class='sub'>Face2Scene (arXiv 2603.16570) metrics; arrows give the better direction. "
        "Measured rows are computed by <code>inscene evaluate</code>; reported rows are the paper's published "
        "numbers (Tables 2, 3, 4, 7), never mixed with measured ones.</div>",
        "<p class='legend'><span style='background:#cdb8ef;font-weight:700'>best</span>"
        "<span style='background:#e6f0fb;text-decoration:underline'>second best</span>"
        "<span style='color:#999;font-style:italic'>n/a: not computable here (hover for why)</span></p>",
    ]
    for b in boards:
        parts.append(f"<h2 id='{e(b.slug)}'>{e(b.title)}</h2>")
        head = ["<th class='name'>Method</th>", "<th>Step</th>", "<th title='samples scored'>N</th>"]
        head += [f"<th title='{e(s.convention)}'>{e(s.label)}{s.arrow}</th>" for s in b.columns]
        if b.show_wins:
            tip = f"metrics on which the row beats {b.wins_ref}" if b.wins_ref else "the paper's Wins (Table 3)"
            head.append(f"<th title='{e(tip)}'>Wins↑</th>")
        parts.append("<table><tr>" + "".join(head) + "</tr>")
        prev = None
        for r in b.rows:
            cls = [r.source]
            if prev == "measured" and r.source == "reported":
                cls.append("sep")
            prev = r.source
            badge = ("<span class='badge b-measured'>measured</span>" if r.source == "measured"
                     else f"<span class='badge b-reported'>reported · Table {e(r.table)}</span>")
            if not r.complete:
                badge += f"<span class='badge b-incomplete'>incomplete · {len(r.problems)} problem(s)</span>"
            tds = [f"<td class='name'>{e(r.label)}{badge}</td>", f"<td>{e(r.steps)}</td>",
                   f"<td>{r.n_samples if r.source == 'measured' else ''}</td>"]
            for s in b.columns:
                c = r.cells[s.name]
                klass = {BEST: "best", SECOND: "second"}.get(c.rank, "")
                if c.status in ("n/a", "empty"):
                    tip = c.reason or "not available"
                    why = f"<span class='ci'>{e(c.reason)}</span>" if c.status == "n/a" and c.reason else ""
                    tds.append(f"<td class='na' title='{e(tip)}'>{e(c.text)}{why}</td>")
                    continue
                ci = ""
                if c.ci is not None:
                    ci = f"<span class='ci'>[{_fmt(c.ci[0], s.digits)}, {_fmt(c.ci[1], s.digits)}]</span>"
                tip = "; ".join(x for x in (f"n={c.n}/{c.n_expected}" if r.source == "measured" else "",
                                            c.notes) if x)
                tds.append(f"<td class='{klass}' title='{e(tip)}'>{e(c.text)}{ci}</td>")
            if b.show_wins:
                tds.append(f"<td>{e(_wins_text(r))}</td>")
            parts.append(f"<tr class='{' '.join(cls)}'>" + "".join(tds) + "</tr>")
        parts.append("</table>")
        notes = list(b.notes)
        if b.wins_ref:
            notes.append(f"Wins: metrics on which a row beats {b.wins_ref}, among rows of the same source "
                         "(Table 3); '(paper)' marks the paper's own Wins.")
        elif b.show_wins:
            notes.append("Wins '(paper)': the count the paper prints (Table 3), not recomputed here.")
        notes.append("Measured cells: mean over images, with its bootstrap 95% interval below.")
        notes += _footnotes(b)
        notes += [f"{r.label}: {n}" for r in b.rows for n in r.notes]
        parts.append("<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
        for r in b.rows:
            if r.problems:
                items = "".join(f"<li>{e(p)}</li>" for p in r.problems[:200])
                more = f"<li>... and {len(r.problems) - 200} more</li>" if len(r.problems) > 200 else ""
                parts.append(f"<details><summary>{e(r.label)}: {len(r.problems)} problem(s)</summary>"
                             f"<ul>{items}{more}</ul></details>")
        png = (plots or {}).get(b.slug)
        if png is not None and Path(png).is_file():
            data = base64.b64encode(Path(png).read_bytes()).decode()
            parts.append(f"<div><img alt='perception-distortion plot' src='data:image/png;base64,{data}'></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------


@dataclass
class LeaderboardFiles:
    markdown: Path
    csv: Path
    html: Path
    plots: dict[str, Path]
    boards: list[Board]
    text: str

    @property
    def incomplete(self) -> list[str]:
        return [f"{b.split}/{b.variant}/{r.label}" for b in self.boards for r in b.rows
                if r.source == "measured" and not r.complete]


def write_leaderboard(
    results: str | os.PathLike = DEFAULT_RESULTS,
    out: str | os.PathLike | None = None,
    **kwargs: Any,
) -> LeaderboardFiles:
    """Build the boards and write ``leaderboard.md``, ``.csv``, ``.html`` and one PNG per board.

    Args:
        results: the evaluation results folder.
        out: output folder (default ``results/leaderboard``).
        **kwargs: :func:`build_boards` options.
    """
    out = Path(out) if out is not None else Path(results) / "leaderboard"
    out.mkdir(parents=True, exist_ok=True)
    boards = build_boards(results, **kwargs)
    plots = {}
    for b in boards:
        p = plot_perception_distortion(b, out / f"perception-distortion-{b.slug}.png")
        if p is not None:
            plots[b.slug] = p
    text = render_markdown(boards)
    md = out / "leaderboard.md"
    md.write_text("# InScene leaderboard\n\n" + text, encoding="utf-8")
    csv_path = out / "leaderboard.csv"
    csv_path.write_text(render_csv(boards), encoding="utf-8")
    html_path = out / "leaderboard.html"
    html_path.write_text(render_html(boards, plots), encoding="utf-8")
    return LeaderboardFiles(md, csv_path, html_path, plots, boards, text)
