"""Funnel reports of filtering runs: Markdown + HTML with PNG charts (matplotlib, Agg backend).

The funnel follows the paper's Figure 6 (Face2Scene §6.2): how many images entered, were decoded,
left Stage 1 (size, face), Stage 2 (content) and Stage 3 (quality), and were written. Beside it:
the rejections per stage and reason, and histograms of every measured score with its threshold.
Everything is computed from the decision log alone, so a report can be rebuilt at any time.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

#: Stage names in pipeline order, and the funnel step each one ends.
STAGE_ORDER = ("decode", "size", "faces", "content", "quality", "encode")
FUNNEL_STEPS = (
    ("input", "inputs", None),
    ("decoded", "decoded", "decode"),
    ("stage1", "Stage 1: size + face", "faces"),
    ("stage2", "Stage 2: content (face area, blur)", "content"),
    ("stage3", "Stage 3: quality (IQA)", "quality"),
    ("written", "written", "encode"),
)
#: (measured column, label, threshold key, direction) of each histogram.
HISTOGRAMS = (
    ("short_side", "shorter side (px)", "min_short_side", ">="),
    ("face_area_fraction", "face area / crop area", "min_face_area_fraction", ">="),
    ("blur_face", "Laplacian variance, face", "min_blur_face", ">="),
    ("blur_image", "Laplacian variance, image", "min_blur_image", ">="),
    ("musiq", "MUSIQ", "min_musiq", ">="),
    ("clipiqa", "CLIP-IQA", "min_clipiqa", ">="),
    ("maniqa", "MANIQA", "min_maniqa", ">="),
    ("piqe", "PIQE (embedded fallback; lower is better)", "max_piqe", "<="),
)


def _rank(stage: Any) -> int:
    try:
        return STAGE_ORDER.index(str(stage))
    except ValueError:
        return len(STAGE_ORDER)


def funnel_counts(decisions: pd.DataFrame) -> dict[str, int]:
    """How many rows reached past each funnel step (``input``, ``decoded``, ``stage1`` ... ``written``)."""
    n = len(decisions)
    if n == 0:
        return {key: 0 for key, _, _ in FUNNEL_STEPS}
    accepted = decisions["accepted"].astype(bool)
    ranks = decisions["stage"].map(_rank)
    out = {"input": n}
    for key, _, last in FUNNEL_STEPS[1:]:
        r = STAGE_ORDER.index(last)
        out[key] = int((accepted | (ranks > r)).sum())
    out["written"] = int(accepted.sum())
    return out


#: The measured column holding what exactly failed behind a short decode reason (see filter_real).
DETAIL_COLUMN = "m.decode_detail"


def _first_detail(values: pd.Series, limit: int = 160) -> str:
    text = " ".join(next((v for v in values if isinstance(v, str) and v), "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rejections(decisions: pd.DataFrame) -> pd.DataFrame:
    """Rejected rows counted per stage and reason (errors included), in pipeline order.

    Rows are grouped by their short reason (``unreadable``, ``truncated`` ...); when the log has
    :data:`DETAIL_COLUMN`, an ``example`` column shows the first row's detail of each group (e.g.
    ``FileNotFoundError: ...``), so the table stays one line per reason and still says what failed.
    """
    rej = decisions[~decisions["accepted"].astype(bool)]
    if rej.empty:
        return pd.DataFrame(columns=["stage", "reason", "count"])
    groups = rej.groupby(["stage", "reason"], dropna=False, sort=False)
    counts = groups.size().reset_index(name="count")
    if DETAIL_COLUMN in rej:
        examples = groups[DETAIL_COLUMN].agg(_first_detail).reset_index(name="example")
        counts = counts.merge(examples, on=["stage", "reason"], how="left")
    counts["_rank"] = counts["stage"].map(_rank)
    return counts.sort_values(["_rank", "count"], ascending=[True, False], kind="stable").drop(columns="_rank")


def _plot_funnel(funnel: dict[str, int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for _, label, _ in FUNNEL_STEPS]
    values = [funnel[key] for key, _, _ in FUNNEL_STEPS]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    bars = ax.barh(range(len(values))[::-1], values, color="#4c72b0")
    ax.set_yticks(range(len(values))[::-1], labels)
    top = max(values) or 1
    for bar, v in zip(bars, values, strict=True):
        pct = f" ({v / top:.0%})" if top else ""
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, f"{v}{pct}", va="center")
    ax.set_xlim(0, top * 1.25)
    ax.set_xlabel("images")
    ax.set_title("Real-photo filter funnel (Face2Scene Figure 6)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_histograms(decisions: pd.DataFrame, thresholds: dict[str, Any], path: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for col, label, tkey, direction in HISTOGRAMS:
        name = f"m.{col}"
        if name in decisions:
            values = pd.to_numeric(decisions[name], errors="coerce").dropna()
            if len(values):
                panels.append((col, label, values, thresholds.get(tkey), direction))
    if not panels:
        return []
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.8 * rows), dpi=100, squeeze=False)
    for ax, (_, label, values, limit, direction) in zip(axes.flat, panels, strict=False):
        ax.hist(values, bins=min(40, max(5, len(values) // 2)), color="#55a868")
        if limit is not None:
            ax.axvline(float(limit), color="#c44e52", linestyle="--", label=f"keep {direction} {limit:g}")
            ax.legend(fontsize=8)
        ax.set_title(f"{label} (n={len(values)})", fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return [p[0] for p in panels]


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(
    out_dir: str | os.PathLike[str],
    decisions: pd.DataFrame,
    *,
    thresholds: dict[str, Any],
    iqa: str,
    detector: str,
    title: str = "filter-real",
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``funnel.png`` and ``histograms.png`` into ``out_dir``.

    Args:
        out_dir: the run folder.
        decisions: the run's decision log (all partitions).
        thresholds: threshold name -> value (drawn on the histograms, listed in the report).
        iqa: ``paper`` (MUSIQ/CLIP-IQA/MANIQA) or ``piqe`` (the embedded fallback).
        detector: the face detector's registry name.
        title: report title.

    Returns:
        Paths by kind: ``markdown``, ``html``, ``funnel``, ``histograms`` (the last when any score).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    funnel = funnel_counts(decisions)
    paths = {"markdown": out / "report.md", "html": out / "report.html", "funnel": out / "funnel.png"}
    _plot_funnel(funnel, paths["funnel"])
    hist = out / "histograms.png"
    if _plot_histograms(decisions, thresholds, hist):
        paths["histograms"] = hist
    roles: dict[str, set[str]] = {}
    for blob in decisions.get("backends", pd.Series(dtype=str)).dropna().unique():
        try:
            for role, name in json.loads(blob).items():
                roles.setdefault(str(role), set()).add(str(name))
        except (ValueError, AttributeError):
            continue
    backend_rows = [[role, ", ".join(sorted(names))] for role, names in sorted(roles.items())]
    iqa_line = (
        "MUSIQ / CLIP-IQA / MANIQA (the paper's Stage 3, §6.2)"
        if iqa == "paper"
        else "embedded PIQE (weight-free fallback: the paper's MUSIQ/CLIP-IQA/MANIQA weights were not found; "
        "these decisions are NOT the paper's Stage 3)"
    )
    funnel_rows = []
    previous = None
    for key, label, _ in FUNNEL_STEPS:
        v = funnel[key]
        left = "" if previous is None else str(previous - v)
        funnel_rows.append([label, v, left])
        previous = v
    rej = rejections(decisions)
    rej_header = ["stage", "reason", "count"]
    rej_rows = [[r.stage, r.reason, r.count] for r in rej.itertuples()]
    if "example" in rej and rej["example"].astype(bool).any():
        rej_header.append("example detail")
        rej_rows = [row + [ex] for row, ex in zip(rej_rows, rej["example"].fillna(""), strict=True)]
    thr_rows = [[k, v] for k, v in sorted(thresholds.items())]
    errors = int(decisions["error"].fillna(False).astype(bool).sum()) if "error" in decisions else 0

    md = [f"# {title}", "", f"- detector: `{detector}`", f"- Stage 3 IQA: {iqa_line}",
          f"- inputs: {funnel['input']}, written: {funnel['written']}, errors: {errors}", "",
          "## Funnel", "", _md_table(["step", "images", "rejected"], funnel_rows), "",
          "![funnel](funnel.png)", "", "## Rejections by stage and reason", "",
          _md_table(rej_header, rej_rows) if rej_rows else "(none)", "",
          "## Thresholds", "", _md_table(["threshold", "value"], thr_rows), ""]
    if "histograms" in paths:
        md += ["## Scores", "", "![histograms](histograms.png)", ""]
    if backend_rows:
        md += ["## Backends", "", _md_table(["role", "backend"], backend_rows), ""]
    paths["markdown"].write_text("\n".join(md))

    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}")
    body = [f"<h1>{html.escape(title)}</h1>", "<ul>", f"<li>detector: <code>{html.escape(detector)}</code></li>",
            f"<li>Stage 3 IQA: {html.escape(iqa_line)}</li>",
            f"<li>inputs: {funnel['input']}, written: {funnel['written']}, errors: {errors}</li>", "</ul>",
            "<h2>Funnel</h2>", _html_table(["step", "images", "rejected"], funnel_rows),
            '<p><img src="funnel.png" alt="funnel"></p>', "<h2>Rejections by stage and reason</h2>",
            _html_table(rej_header, rej_rows) if rej_rows else "<p>(none)</p>",
            "<h2>Thresholds</h2>", _html_table(["threshold", "value"], thr_rows)]
    if "histograms" in paths:
        body += ["<h2>Scores</h2>", '<p><img src="histograms.png" alt="score histograms"></p>']
    if backend_rows:
        body += ["<h2>Backends</h2>", _html_table(["role", "backend"], backend_rows)]
    paths["html"].write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
    return paths
