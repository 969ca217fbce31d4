"""P7.3's comparison table as data: what each claim's runs say on each family the run covered.

A claim holds on a family where a run passed and fails where one failed; a run
that skipped with a :class:`bertspec.proof.scope.Verdict` says the mechanism
differs there (and which claim shows how) or that the question does not
arise; any other skip, or no run, is "not run". Nothing is read back from a
skip's text: the verdict came with the report.

The default run runs the claims marked ``across_families`` on every bundled
family, so its table holds those claims, one column per family; the others ran
once (on the bundled BERT, or on no model) and the section counts them instead
(the full matrix is ``--family all``).
"""

import dataclasses
from dataclasses import dataclass

from bertspec.models import source
from bertspec.proof import scope

VERDICTS = {  # kind -> (Chinese, English, mark), in the legend's order
    "holds": ("成立", "holds", "✓"),
    scope.DIFFERS: ("机制不同", "differs", "≠"),
    scope.NOT_APPLICABLE: ("不适用", "not applicable", "n/a"),
    "fails": ("失败", "fails", "✗"),
    "not-run": ("未运行", "not run", "·"),
}

# The parts a table's census splits the run's claims into (each claim in one), as the P7.3 claim's evidence names them.
PARTS = {"rows": "rows of the table", "left out": "ran once, not rows", "benchmarks": "benchmarks",
         "unparsed": "not in the claim format"}


@dataclass(frozen=True)
class Cell:
    """One claim on one family (or, spanning every column, on whichever family: a claim run once)."""

    kind: str  # a key of VERDICTS
    why: str = ""  # the failure, the verdict's statement or the skip's text
    shown_by: str = ""  # differs: the claim (test function) that shows the family's own mechanism
    span: int = 1
    verdict: scope.Verdict | None = None  # the skip's verdict, whose reason neighbouring cells may share

    @property
    def says_why(self) -> bool:
        """n/a and failures put their reason in the cell; the others only in its tooltip."""
        return self.kind in (scope.NOT_APPLICABLE, "fails")


class Table:
    """Claims × families: one row per claim that ran per family (with --family or --bert-model, every claim), how
    many cells of each verdict every family column holds, and where each of the run's claims went."""

    def __init__(self, results, families: list[str], per_family: bool, every_claim: bool):
        self.families = families
        self.names = [source.name_of(family) for family in families]
        self.per_family = per_family  # each claim's runs are told apart by their family (--family, the default run)
        claims = [result for result in results if result.claim is not None]
        placed = [result for result in claims if not result.benchmark]  # benchmarks measure, they claim nothing
        once = [result for result in placed if all(run.family is None for run in result.runs)] if per_family else []
        self.rows = [(result, self._cells(result)) for result in placed if every_claim or result not in once]
        self.counts = {kind: [sum(self.verdict(result, family).kind == kind for result, _ in self.rows)
                              for family in families] for kind in VERDICTS}
        self.once = len(once)  # claims run once, whatever the family: spanning rows, or (default run) left out
        # The run's claims, each in one part, so the section can say from the front page's count what it leaves out.
        self.census = {"rows": len(self.rows), "left out": 0 if every_claim else len(once),
                       "benchmarks": len(claims) - len(placed), "unparsed": len(results) - len(claims)}

    @property
    def accounted(self) -> int:
        """The claims the census places: the front page's count of claims, when the two agree."""
        return sum(self.census.values())

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
        # A run the implementation cannot make (ELECTRA on 4.57's sdpa) says nothing; its sibling's verdict does.
        verdict = next((run.verdict for run in runs if run.verdict is not None), None)
        if verdict is None:
            return Cell("not-run", runs[0].reason)
        return Cell(verdict.kind, verdict.statement, verdict.shown_by, verdict=verdict)

    @property
    def shown_rows(self) -> list[tuple]:
        """The rows as the page shows them: neighbouring cells with one verdict for the same reason (a P8 claim on the
        six encoders) merged into one cell that spans them and names each architecture."""
        return [(result, merged(cells)) for result, cells in self.rows]

    def _cells(self, result) -> list[Cell]:
        if len(self.families) > 1 and all(run.family is None for run in result.runs):  # one run, whatever the family
            return [dataclasses.replace(self.verdict(result, self.families[0]), span=len(self.families))]
        return [self.verdict(result, family) for family in self.families]


def merged(cells: list[Cell]) -> list[Cell]:
    """Runs of neighbouring cells whose verdicts differ only in the architecture's name, as one spanning cell."""
    def reason(cell):
        v = cell.verdict
        return None if v is None else (v.kind, v.why, v.shown_by)

    out: list[Cell] = []
    for cell in cells:
        if out and reason(cell) is not None and reason(cell) == reason(out[-1]):
            verdict = dataclasses.replace(cell.verdict, family=f"{out[-1].verdict.family}, {cell.verdict.family}")
            out[-1] = dataclasses.replace(out[-1], why=verdict.statement, verdict=verdict, span=out[-1].span + 1)
        else:
            out.append(cell)
    return out
