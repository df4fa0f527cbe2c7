"""What ``inscene evaluate`` and ``inscene leaderboard`` do, callable from Python (and the demo).

The CLI commands in :mod:`inscene.cli` only parse options and call :func:`run_evaluate` /
:func:`run_leaderboard`; :func:`evaluate_demo_split` is the demo's entry point.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.evaluate import DEFAULT_RESULTS, EvalReport, _slug, evaluate
from benchmarks.leaderboard import LeaderboardFiles, write_leaderboard
from benchmarks.methods import ExternalMethod, create_method, list_methods
from benchmarks.metrics import EMBEDDED_METRICS
from benchmarks.splits import DEFAULT_GT_FIELDS, DEFAULT_LQ_FIELDS, FolderSource, ShardSource, folder_label
from inscene.errors import BadInputError
from inscene.outdir import prepare_out_dir

__all__ = ["DemoEvaluation", "evaluate_demo_split", "print_report", "run_evaluate", "run_leaderboard"]


def run_evaluate(
    method: str,
    *,
    predictions: str | os.PathLike | None = None,
    split: str | None = None,
    data: str | os.PathLike | None = None,
    lq: str | os.PathLike | None = None,
    gt: str | os.PathLike | None = None,
    shard_split: str | None = None,
    subset: str | None = None,
    lq_field: str | None = None,
    gt_field: str | None = None,
    metrics: Sequence[str] | None = None,
    variants: Sequence[str] = ("full",),
    results: str | os.PathLike = DEFAULT_RESULTS,
    scale: float | None = None,
    method_opts: dict[str, Any] | None = None,
    **kwargs: Any,
) -> EvalReport:
    """Build the source and method the CLI options describe, and :func:`~benchmarks.evaluate.evaluate`.

    ``method`` is a registry name (``lq``, ``bicubic``, ``lanczos``, ``face2scene``), or with
    ``predictions`` any row label (``S3Diff``) for a folder of external predictions.

    ``split`` is the InScene split read from ``data`` (default ``val-synthetic``); with ``lq``/``gt``
    folders it is only the label rows are filed under (default ``folders-<GT folder name>-<8 hex>``,
    :func:`~benchmarks.splits.folder_label`, so different folder pairs get different boards), and an
    InScene split name is refused there, so folder scores never land on the paper's boards. Folder pairs carry no
    face boxes, so the ``face-only`` and ``gt-face-inserted`` variants are refused with them.
    """
    if data is not None and (lq is not None or gt is not None):
        raise BadInputError("give either --data DIR (InScene shards) or --lq/--gt folders, not both")
    prepare_out_dir(results, "--results")  # a file or read-only folder: one line now, not after the scoring
    if data is not None:
        source: Any = ShardSource(
            data, split or "val-synthetic", shard_split=shard_split, subset=subset,
            lq_fields=lq_field or DEFAULT_LQ_FIELDS, gt_fields=gt_field or DEFAULT_GT_FIELDS,
        )
    elif lq is not None or gt is not None:
        face_variants = [v for v in variants if v != "full"]
        if face_variants:
            raise BadInputError(
                f"--{face_variants[0]} needs face boxes, which plain --lq/--gt folders do not have; "
                "score an InScene split with --data DIR"
            )
        source = FolderSource(lq, gt, split=split or folder_label(lq, gt))
        if split is None and kwargs.get("console") is not None:
            kwargs["console"].print(
                f"rows filed under split '{source.split}' (give --split {source.split} to file others beside them)",
                markup=False, highlight=False, soft_wrap=True,
            )
    else:
        raise BadInputError("give --data DIR (InScene shards) or --lq DIR/--gt DIR (plain folders)")
    if predictions is not None:
        if method in list_methods() and method != "external":
            raise BadInputError(
                f"'{method}' is a built-in method; with --predictions give your method's name, e.g. --method S3Diff"
            )
        m: Any = ExternalMethod(predictions, name=method)
    elif method == "external":
        raise BadInputError("--method external needs --predictions DIR")
    else:
        opts = {"scale": scale} if scale is not None and method in ("lq", "bicubic", "lanczos") else {}
        m = create_method(method, **opts, **(method_opts or {}))
    if m.needs_lq and isinstance(source, FolderSource) and source.lq is None:
        raise BadInputError(f"method '{method}' needs the LQ inputs: give --lq DIR")
    return evaluate(source, m, metrics=metrics, variants=variants, results=results, **kwargs)


def _cell(m: Any) -> str:
    if m.status == "n/a":
        return f"n/a ({m.reason})"
    if m.mean is None:
        return f"none ({m.n}/{m.n_expected})"
    text = f"{m.mean:.4f}"
    if m.ci_low is not None:
        text += f" [{m.ci_low:.4f}, {m.ci_high:.4f}]"
    if m.status != "ok":
        text += f" ({m.n}/{m.n_expected})"
    return text


def print_report(report: EvalReport, console: Console | None = None, max_problems: int = 50) -> None:
    """Each row: its metrics (mean, 95% CI, n/a reasons), completeness and every problem by key."""
    con = console or Console()
    for row in report.rows:
        state = "[green]complete[/]" if row.complete else f"[red]INCOMPLETE[/] ({len(row.problems)} problem(s))"
        t = Table(title=f"{row.method} on {row.split} ({row.variant}): {row.n_samples} samples, {state}",
                  title_justify="left")
        t.add_column("metric", no_wrap=True)
        t.add_column("value [95% CI]", overflow="fold")
        t.add_column("backend", overflow="fold")
        for m in row.metrics.values():
            arrow = "↓" if m.lower_better else "↑"
            t.add_row(f"{m.label}{arrow}", _cell(m), m.backend or "")
        con.print(t)
        for note in row.notes:
            con.print(f"  note: {note}", markup=False, highlight=False, soft_wrap=True)
        for m in row.metrics.values():
            if m.notes:
                con.print(f"  note: {m.label}: {m.notes}", markup=False, highlight=False, soft_wrap=True)
        for p in row.problems[:max_problems]:
            con.print(f"  {p.line()}", markup=False, highlight=False, soft_wrap=True)
        if len(row.problems) > max_problems:
            con.print(f"  ... and {len(row.problems) - max_problems} more problems (see the row JSON)")
    con.print(
        f"scored {report.computed} new value(s), reused {report.cached} from the cache "
        f"in {report.seconds:.1f}s; rows: {', '.join(str(p) for p in report.paths)}",
        markup=False, highlight=False,
    )


def run_leaderboard(
    results: str | os.PathLike = DEFAULT_RESULTS, out: str | os.PathLike | None = None, **kwargs: Any
) -> LeaderboardFiles:
    """Write the leaderboard files (see :func:`benchmarks.leaderboard.write_leaderboard`).

    Without ``out``, the full leaderboard goes to ``results/leaderboard``; one filtered by
    ``splits`` goes to ``results/leaderboard/<split>`` (several: joined by ``+``), so it never
    overwrites the full one.
    """
    if not Path(results).exists() and kwargs.get("include_reported") is False:
        raise BadInputError(f"no evaluation results in {results}; run `inscene evaluate` first")
    if out is None and kwargs.get("splits"):
        out = Path(results) / "leaderboard" / "+".join(_slug(s) for s in kwargs["splits"])
    return write_leaderboard(results, out, **kwargs)


@dataclass
class DemoEvaluation:
    reports: list[EvalReport]
    leaderboard: LeaderboardFiles

    @property
    def ok(self) -> bool:
        return all(r.complete for r in self.reports)


def evaluate_demo_split(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str,
    shard_split: str | None = None,
    subset: str | None = None,
    lq_field: str | None = None,
    gt_field: str | None = None,
    methods: Sequence[str] = ("lq", "bicubic"),
    metrics: Sequence[str] = EMBEDDED_METRICS,
    cluster: Any = None,
    console: Console | None = None,
) -> DemoEvaluation:
    """The demo's evaluation: ``lq`` and ``bicubic`` on a (tiny) shard split, then the leaderboard.

    Args:
        data: dataset folder holding the degraded split (LQ and GT members).
        out: results folder (rows, cache and ``leaderboard/``).
        split: the split name rows are filed under (and, without ``shard_split``, the folder read).
        shard_split: the shard split folder to read, when it differs from ``split``.
        subset: only this subset.
        lq_field, gt_field: member names (default: ``lq0.png``/``lq.png`` and ``hq.*``/``gt.*``).
        methods: methods to score.
        metrics: default: the weight-free ones (PSNR, SSIM, PIQE, dlib ID score).
        cluster: :class:`inscene.runtime.ClusterOptions` (None: in this process).
        console: where to print the leaderboard (Markdown).

    Returns:
        The reports and the written leaderboard files (``.ok``: every row complete).
    """
    con = console or Console()
    reports = [
        run_evaluate(m, split=split, data=data, shard_split=shard_split, subset=subset, lq_field=lq_field,
                     gt_field=gt_field, metrics=metrics, results=out, cluster=cluster, console=con)
        for m in methods
    ]
    files = write_leaderboard(out, splits=[split], include_reported=False, wins_ref=methods[0])
    con.print(files.text, markup=False, highlight=False, soft_wrap=True)
    con.print(f"leaderboard: {files.html}", markup=False, highlight=False)
    return DemoEvaluation(reports, files)
