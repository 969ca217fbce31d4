"""The handbook's pytest plumbing: what each test report carries, and the claims gathered from the reports.

1. :func:`attach` puts each test's claim (its docstring, where it lives), its
   parameter id, its evidence records and, when a claim skipped because it
   does not apply to a family, its :class:`~bertspec.proof.scope.Verdict` on
   the test report, as plain data, so they also travel from pytest-xdist
   workers to the controller.
2. :class:`Collector` (a plugin object) gathers those reports into one
   :class:`ClaimResult` per claim function, each with its runs (eager, sdpa, a
   dtype, ...) side by side.

:func:`synthetic_report` makes such a report without running the claim, for
the claims about the handbook itself.
"""

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from bertspec.handbook import claims
from bertspec.handbook.evidence import EVIDENCE
from bertspec.proof import scope


# ---- 1. on the report ----

def attach(item, call, report) -> None:
    """Put the claim, its parameter id, its evidence and its verdict on the report of the phase that decides the
    outcome."""
    final = report.when == "call" or (report.when == "setup" and not report.passed)
    function = getattr(item, "function", None)
    if not final or function is None:
        return
    path, line, _ = item.location
    callspec = getattr(item, "callspec", None)
    report.bertspec = {
        "function": getattr(item, "originalname", item.name),
        "path": path,
        "line": line + 1,
        "param": callspec.id if callspec else "",
        "family": callspec.params.get("family") if callspec else None,
        "doc": function.__doc__ or "",
        "evidence": item.stash[EVIDENCE].records if EVIDENCE in item.stash else [],
        "counterfeits": [name for mark in item.iter_markers("counterfeits") for name in mark.args],
        "benchmark": "benchmark" in getattr(item, "fixturenames", ()),
        "teeth": dict(item.user_properties).get("teeth"),
        "verdict": _verdict(call),
    }


NO_EVIDENCE = ("a claim that passed recorded no evidence: record what it asserted on with the `evidence` fixture "
               "(evidence.table/text/figure), so that the handbook shows it")


def demand_evidence(report) -> None:
    """A claim passes only with the evidence it asserted on: the handbook shows every passing claim's evidence, and
    a pass that shows nothing is a verdict without its grounds. Counterfeit runs (their evidence is not read),
    benchmarks (their evidence is the saved run) and tests that are no claim (a claim's own stand-in test files) are
    exempt."""
    record = getattr(report, "bertspec", None)
    if (report.when == "call" and report.passed and record and not record["evidence"] and not record["teeth"]
            and not record["benchmark"] and _is_claim(record["doc"])):
        report.outcome, report.longrepr = "failed", NO_EVIDENCE


def _is_claim(doc: str) -> bool:
    try:
        return bool(claims.parse(doc))
    except claims.ClaimFormatError:
        return False


def _verdict(call) -> dict | None:
    """The verdict a scope skip carries (bertspec.proof.scope.OutOfScope), as a dict: reports travel as plain data."""
    skip = call.excinfo.value if call.excinfo else None
    return dataclasses.asdict(skip.verdict) if isinstance(skip, scope.OutOfScope) else None


def synthetic_report(claim: claims.Discovered, param: str = "", family: str | None = None,
                     verdict: scope.Verdict | None = None, failure: str = ""):
    """A test report for a claim as :func:`attach` fills it, without running the claim: what the handbook's own
    claims render pages from. The run passed, or skipped with ``verdict``, or failed with the message ``failure``."""
    outcome = "failed" if failure else "skipped" if verdict else "passed"
    skip = ("", 0, f"Skipped: {verdict.reason}") if verdict else None  # what pytest puts in a skip's longrepr
    record = {"function": claim.function, "path": claim.path, "line": claim.line, "param": param, "family": family,
              "doc": claim.doc, "evidence": [{"kind": "text", "title": "evidence", "text": "…"}],
              "counterfeits": list(claim.counterfeits), "benchmark": False, "teeth": None,
              "verdict": dataclasses.asdict(verdict) if verdict else None}
    return SimpleNamespace(bertspec=record, nodeid=f"{claim.path}::{claim.function}[{param}]", when="call",
                           outcome=outcome, passed=outcome == "passed", failed=outcome == "failed",
                           skipped=outcome == "skipped", longrepr=skip, longreprtext=f"E   {failure}")


# ---- 2. collected ----

@dataclass
class Run:
    param: str
    outcome: str  # passed, failed, error, skipped
    reason: str  # why skipped, or the failure's last line
    evidence: list
    family: str | None = None  # the family it ran on (--family, or an across_families claim); None: one model
    verdict: scope.Verdict | None = None  # skipped by bertspec.proof.scope: why the claim does not apply


@dataclass
class ClaimResult:
    function: str
    path: str
    line: int
    claim: claims.Claim | None
    format_error: str
    counterfeits: list
    benchmark: bool
    runs: list = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return claims.anchor(self.claim.claim_id if self.claim else "unparsed", self.function)

    @property
    def outcome(self) -> str:
        outcomes = {run.outcome for run in self.runs}
        for worst in ("failed", "error", "passed", "skipped"):
            if worst in outcomes:
                return worst
        return "not run"


class Collector:
    """Gathers reports into claims; registered as a plugin so it sees every report, the xdist workers' too."""

    def __init__(self):
        self.claims: dict[tuple, ClaimResult] = {}
        self.teeth: list[dict] = []
        self.expected: set[str] = set()
        self.reported: set[str] = set()
        self.exitstatus = 0

    def expect(self, nodeids) -> None:
        self.expected.update(nodeids)

    def add(self, report) -> None:
        record = getattr(report, "bertspec", None)
        if record is None:
            return
        self.reported.add(report.nodeid)
        verdict = scope.Verdict(**record["verdict"]) if record["verdict"] else None
        run = Run(record["param"], _outcome(report), _reason(report), record["evidence"], record["family"], verdict)
        if record["teeth"]:
            self.teeth.append({**record["teeth"], "outcome": _teeth_outcome(report, run.outcome), "reason": run.reason})
            return
        key = (record["path"], record["function"])
        if key not in self.claims:
            try:
                claim, error = claims.parse(record["doc"]), ""
            except claims.ClaimFormatError as err:
                claim, error = None, str(err)
            self.claims[key] = ClaimResult(record["function"], record["path"], record["line"], claim, error,
                                           record["counterfeits"], record["benchmark"])
        self.claims[key].runs.append(run)

    def finish(self, session, exitstatus) -> None:
        # session.items, not pytest_collection_finish: an interrupt can land between collection and that hook.
        self.expect(item.nodeid for item in session.items)
        self.exitstatus = int(exitstatus)

    @property
    def not_run(self) -> int:
        return len(self.expected - self.reported)

    def ordered(self) -> list[ClaimResult]:
        def key(result):
            claim_id = result.claim.claim_id if result.claim else "P9.9"
            return claims.id_order(claim_id), result.path, result.line
        return sorted(self.claims.values(), key=key)

    def by_function(self) -> dict[str, ClaimResult]:
        return {result.function: result for result in self.claims.values()}

    # hooks: the collector is registered as a plugin
    def pytest_runtest_logreport(self, report):
        self.add(report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self.expect(ids)


def _outcome(report) -> str:
    if report.when != "call" and report.failed:
        return "error"
    return report.outcome


def _teeth_outcome(report, outcome: str) -> str:
    """A counterfeit run is a strict xfail (bertspec.proof.teeth): xfailed means the claim went red on the
    counterfeit, caught, which the counterfeit table records as "passed"; an XPASS fails, not caught."""
    return "passed" if report.skipped and hasattr(report, "wasxfail") else outcome


def _reason(report) -> str:
    """What the handbook says of a run that did not pass: the skip's text, or the failure's first ``E`` line."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        lines = [line for line in str(report.longreprtext).splitlines() if line.startswith("E ")]
        return lines[0][1:].strip() if lines else str(report.longreprtext).strip().splitlines()[-1:][0]
    return ""
