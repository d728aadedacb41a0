"""bench.results — what one scenario case measured on each side, and whether it met its target.

SYNOPSIS
    case = Case(scenario=1, name="2 KB, 10 sessions", key="rate", unit="msg/s",
                higher_is_better=True, target=Target("ratio", ">=", 1.5))
    case.side("postgate").add(Measurement({"rate": 812.0}, {"seconds": 3.7}))
    case.side("postfix").fail(1, "smtp-source exited 1: ...")
    case.summary()            # medians, per-round ratios, their median, met

DESCRIPTION
    A Measurement is one run of one side: the values it produced (several cases can
    share one run, e.g. scenario 6 yields p50, p90, p99 and max at once) and details
    worth keeping (wall time, counts, settings). Every run of a case is kept, so the
    JSON shows the spread, not only the median.

    Ratios are postgate / Postfix for the case's own metric. Per round, the two runs
    that were made next to each other form a pair; the case's ratio is the median of
    those pair ratios (robust to a disturbed round), and the ratio of the medians is
    kept beside it. A run that failed is an error with its reason, never a number.

    Targets are checked on the ratio (``"ratio"``) or on postgate's own median
    (``"postgate"``), with ``>=`` or ``<=``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bench.stats import median, safe_ratio

Side = Literal["postgate", "postfix"]
SIDES: tuple[Side, Side] = ("postgate", "postfix")


@dataclass(frozen=True)
class Measurement:
    values: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    applies_to: Literal["ratio", "postgate"]
    comparison: Literal[">=", "<="]
    value: float

    def describe(self, unit: str) -> str:
        if self.applies_to == "ratio":
            return f"ratio {self.comparison} {self.value:g}"
        return f"{self.comparison} {self.value:g} {unit}"

    def met(self, observed: float | None) -> bool | None:
        if observed is None:
            return None
        return observed >= self.value if self.comparison == ">=" else observed <= self.value


@dataclass
class SideRuns:
    values: dict[int, float] = field(default_factory=dict)  # round -> value
    details: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, round_no: int, value: float, details: dict[str, Any]) -> None:
        self.values[round_no] = value
        self.details.append({"round": round_no, **details})

    def fail(self, round_no: int, reason: str) -> None:
        self.errors.append(f"round {round_no}: {reason}")

    @property
    def median(self) -> float | None:
        return median(list(self.values.values()))


@dataclass
class Case:
    scenario: int
    name: str
    key: str
    unit: str
    higher_is_better: bool
    target: Target | None = None
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    postgate: SideRuns = field(default_factory=SideRuns)
    postfix: SideRuns = field(default_factory=SideRuns)

    def side(self, which: Side) -> SideRuns:
        return self.postgate if which == "postgate" else self.postfix

    def pair_ratios(self) -> list[float]:
        ratios = []
        for round_no, value in sorted(self.postgate.values.items()):
            ratio = safe_ratio(value, self.postfix.values.get(round_no))
            if ratio is not None:
                ratios.append(ratio)
        return ratios

    @property
    def ratio(self) -> float | None:
        return median(self.pair_ratios())

    def met(self) -> bool | None:
        if self.target is None:
            return None
        observed = self.ratio if self.target.applies_to == "ratio" else self.postgate.median
        return self.target.met(observed)

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "case": self.name,
            "metric": self.key,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "postgate": _side_json(self.postgate),
            "postfix": _side_json(self.postfix),
            "ratio_postgate_over_postfix": self.ratio,
            "pair_ratios": self.pair_ratios(),
            "ratio_of_medians": safe_ratio(self.postgate.median, self.postfix.median),
            "target": self.target.describe(self.unit) if self.target else None,
            "met": self.met(),
            "notes": self.notes,
            "settings": self.settings,
        }


def _side_json(runs: SideRuns) -> dict[str, Any]:
    return {
        "runs": [runs.values[r] for r in sorted(runs.values)],
        "median": runs.median,
        "errors": runs.errors,
        "details": runs.details,
    }


@dataclass
class ScenarioReport:
    number: int
    title: str
    cases: list[Case] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.number,
            "title": self.title,
            "seconds": round(self.seconds, 1),
            "errors": self.errors,
            "settings": self.settings,
            "cases": [case.summary() for case in self.cases],
        }
