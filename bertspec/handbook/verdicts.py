"""P7.3's comparison table as data: what each claim's runs say on each family the run covered.

A claim holds on a family where a run passed and fails where one failed; a run
that skipped with a :class:`bertspec.proof.scope.Verdict` says the mechanism
differs there (and which claim shows how) or that the question does not
arise; any other skip, or no run, is "not run". Nothing is read back from a
skip's text: the verdict came with the report.
"""

import dataclasses
from dataclasses import dataclass

from bertspec.models import anatomy
from bertspec.proof import scope

VERDICTS = {  # kind -> (Chinese, English, mark), in the legend's order
    "holds": ("成立", "holds", "✓"),
    scope.DIFFERS: ("机制不同", "differs", "≠"),
    scope.NOT_APPLICABLE: ("不适用", "not applicable", "n/a"),
    "fails": ("失败", "fails", "✗"),
    "not-run": ("未运行", "not run", "·"),
}


@dataclass(frozen=True)
class Cell:
    """One claim on one family (or, spanning every column, on whichever family: a claim run once)."""

    kind: str  # a key of VERDICTS
    why: str = ""  # the failure, the verdict's statement or the skip's text
    shown_by: str = ""  # differs: the claim (test function) that shows the family's own mechanism
    span: int = 1

    @property
    def says_why(self) -> bool:
        """n/a and failures put their reason in the cell; the others only in its tooltip."""
        return self.kind in (scope.NOT_APPLICABLE, "fails")


class Table:
    """Claims × families: one row per claim (benchmarks measure, they claim nothing per family), and how many
    cells of each verdict every family column holds."""

    def __init__(self, results, families: list[str], per_family: bool):
        self.families = families
        self.names = [anatomy.FAMILIES[family].name for family in families]
        self.per_family = per_family  # --family: each claim's runs are told apart by their family
        self.rows = [(result, self._cells(result)) for result in results
                     if result.claim is not None and not result.benchmark]
        self.counts = {kind: [sum(self.verdict(result, family).kind == kind for result, _ in self.rows)
                              for family in families] for kind in VERDICTS}

    def verdict(self, result, family: str) -> Cell:
        """What a claim's runs on one family say."""
        once = not self.per_family or all(run.family is None for run in result.runs)
        runs = [run for run in result.runs if once or run.family == family]
        if not runs:
            return Cell("not-run")
        failed = [run for run in runs if run.outcome in ("failed", "error")]
        if failed:
            return Cell("fails", failed[0].reason)
        if any(run.outcome == "passed" for run in runs):
            return Cell("holds")
        verdict = runs[0].verdict
        if verdict is None:
            return Cell("not-run", runs[0].reason)
        return Cell(verdict.kind, verdict.statement, verdict.shown_by)

    def _cells(self, result) -> list[Cell]:
        if len(self.families) > 1 and all(run.family is None for run in result.runs):  # one run, whatever the family
            return [dataclasses.replace(self.verdict(result, self.families[0]), span=len(self.families))]
        return [self.verdict(result, family) for family in self.families]
