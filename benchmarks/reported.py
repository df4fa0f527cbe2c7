"""The paper's published rows, shipped as data (``benchmarks/data/reported.csv``).

Provenance: Face2Scene (arXiv 2603.16570), transcribed exactly from the paper's text:
Table 2 (InScene synthetic and real validation sets, ten metrics), Table 3 (synthetic validation,
"GT Face Inserted" and "Face only" rows, with Wins), Table 4 (InScene real test set, five
no-reference metrics) and Table 7 (ID score on both validation sets). Values are kept as the text
the paper prints (``24.85``, ``0.1000``), so they are displayed exactly; citations are kept as
printed too (Table 2 cites SinSR as [52], Tables 4 and 7 as [49]).

CSV columns: ``table, split, variant, method, citation, steps, metric, value`` (one row per cell;
``metric`` is a :mod:`benchmarks.metrics` name, or ``wins`` for Table 3's Wins column).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["REPORTED_CSV", "ReportedRow", "load_reported"]

REPORTED_CSV = Path(__file__).with_name("data") / "reported.csv"


@dataclass
class ReportedRow:
    """One published row: a method on a split/variant, as printed in one table."""

    table: str
    split: str
    variant: str
    method: str
    citation: str
    steps: str
    values: dict[str, str] = field(default_factory=dict)
    wins: str | None = None

    @property
    def label(self) -> str:
        return f"{self.method} {self.citation}".strip()

    def value(self, metric: str) -> float | None:
        text = self.values.get(metric)
        return float(text) if text not in (None, "") else None


def load_reported(
    split: str | None = None, variant: str | None = None, path: str | Path = REPORTED_CSV
) -> list[ReportedRow]:
    """Published rows, in the paper's order; Table 7's ID scores are merged into the Table 2 rows
    of the same method and split (they are one method on one split), keeping both table numbers."""
    rows: dict[tuple[str, str, str, str], ReportedRow] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            if split is not None and rec["split"] != split:
                continue
            if variant is not None and rec["variant"] != variant:
                continue
            key = (rec["split"], rec["variant"], rec["method"], "" if rec["table"] in ("2", "7") else rec["table"])
            row = rows.get(key)
            if row is None:
                row = rows[key] = ReportedRow(
                    rec["table"], rec["split"], rec["variant"], rec["method"], rec["citation"], rec["steps"]
                )
            elif rec["table"] not in row.table.split("+"):
                row.table = f"{row.table}+{rec['table']}"
            if rec["steps"] and not row.steps:
                row.steps = rec["steps"]
            if rec["metric"] == "wins":
                row.wins = rec["value"]
            else:
                row.values[rec["metric"]] = rec["value"]
    return list(rows.values())
