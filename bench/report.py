"""bench.report — the results table (terminal and markdown) and the JSON file.

SYNOPSIS
    rows = table_rows(reports)
    print(render_text(rows)); path.write_text(render_markdown(rows, header))
    write_json(path, document)

DESCRIPTION
    One row per case: scenario | case (unit) | postgate | Postfix | ratio | target |
    met?. Values are medians over the rounds; ratio is the median of the per-round
    postgate/Postfix ratios (lower is better for memory and latency rows, as the
    unit says). A side with no successful run shows ERROR; a side with some failed
    runs shows its median with a "!" and every error is listed under the table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results import Case, ScenarioReport, SideRuns

HEADERS = ("scenario", "case", "postgate", "Postfix", "ratio", "target", "met?")


@dataclass(frozen=True)
class Row:
    cells: tuple[str, str, str, str, str, str, str]


def format_number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10:
        return f"{value:,.0f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.2g}"


def _side_cell(runs: SideRuns) -> str:
    if runs.median is None:
        return "ERROR" if runs.errors else "-"
    return format_number(runs.median) + ("!" if runs.errors else "")


def _met_cell(case: Case) -> str:
    met = case.met()
    if met is None:
        return "-" if case.target is None else "n/a"
    return "yes" if met else "NO"


def case_row(case: Case) -> Row:
    return Row(
        (
            str(case.scenario),
            f"{case.name} ({case.unit})",
            _side_cell(case.postgate),
            _side_cell(case.postfix),
            format_ratio(case.ratio),
            case.target.describe(case.unit) if case.target else "",
            _met_cell(case),
        )
    )


def table_rows(reports: Sequence[ScenarioReport]) -> list[Row]:
    rows: list[Row] = []
    for report in reports:
        if not report.cases:
            rows.append(Row((str(report.number), report.title, "ERROR", "ERROR", "-", "", "n/a")))
        rows.extend(case_row(case) for case in report.cases)
    return rows


def footnotes(reports: Sequence[ScenarioReport]) -> list[str]:
    notes: list[str] = []
    for report in reports:
        notes.extend(f"[{report.number}] {error}" for error in report.errors)
        for case in report.cases:
            for side, runs in (("postgate", case.postgate), ("Postfix", case.postfix)):
                notes.extend(f"[{report.number}] {case.name}, {side}: {e}" for e in runs.errors)
            notes.extend(f"[{report.number}] {case.name}: {note}" for note in case.notes)
    return notes


def render_text(rows: Sequence[Row]) -> str:
    widths = [len(h) for h in HEADERS]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row.cells, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    out = [line(HEADERS), "-+-".join("-" * w for w in widths)]
    out.extend(line(row.cells) for row in rows)
    return "\n".join(out)


def render_markdown(rows: Sequence[Row]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    out = [line(HEADERS), "|" + "|".join("---" for _ in HEADERS) + "|"]
    out.extend(line(row.cells) for row in rows)
    return "\n".join(out)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
