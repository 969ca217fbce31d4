"""The handbook page: the templates in templates/ filled from the collected claims, and the same content as JSON.

pytest-html stays the engine (it writes the page and its run log); :class:`Page`
fills the page's summary prefix: the front page, the Q&A index, one section
per claim, the knowledge-base sections, the comparison and the counterfeit
tables. All markup is in the templates, escaped by Jinja unless marked safe;
this module decides what they show, and its filters turn docstring markup and
evidence values into what a template places.
"""

import base64
import functools
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from bertspec.handbook import claims, facts, knowledge, verdicts
from bertspec.handbook.atomic import write_atomically

ASSETS = Path(__file__).resolve().parent / "assets"
OUTCOME_MARK = {"passed": "✓", "failed": "✗", "error": "✗", "skipped": "–", "not run": "·"}
# Claims whose evidence another part of the page shows.
QUICK_REFERENCE = "test_the_quick_reference_card_is_read_off_the_model_under_test"
SAVED_BENCHMARK_RUN = "test_the_saved_benchmark_run_reports_every_cost_as_a_ratio_within_that_run"


# ---- filters: text to what a template places ----

def inline(text: str) -> Markup:
    """Docstring markup as HTML: ``code`` and `code`, **strong**, *emphasis*; everything else escaped."""
    out = str(escape(text))
    out = re.sub(r"``(.+?)``", r"<code>\1</code>", out)
    out = re.sub(r"(?<![\w`])`([^`]+?)`(?![\w`])", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(\S(?:.*?\S)?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])", r"<em>\1</em>", out)
    return Markup(out)


def paragraphs(text: str, joiner: str) -> list[str]:
    """Docstring paragraphs, their hard line breaks undone (Chinese joins without spaces)."""
    blocks = [joiner.join(line.strip() for line in block.splitlines()) for block in text.split("\n\n")]
    return [block for block in blocks if block.strip()]


def cell(value) -> str:
    """One table cell: floats to 4 significant digits, the rest as text."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "-", text).strip("-").lower() or "term"


def data_uri(svg: str) -> str:
    """An SVG as the data: URI of an <img>: the one-file page carries every figure inside itself."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def json_script(record: dict) -> Markup:
    """The attention view's data as the text of a <script type="application/json">; "</" escaped so no value can
    close the script element."""
    payload = json.dumps({k: record[k] for k in ("tokens", "padded", "probs", "layers", "heads")}, ensure_ascii=False)
    return Markup(payload.replace("</", "<\\/"))


def asset(name: str) -> Markup:
    """The handbook's own style or script, inlined: the page is one file and fetches nothing."""
    return Markup((ASSETS / name).read_text(encoding="utf-8"))


@functools.cache
def environment() -> jinja2.Environment:
    """One per process: each template compiles on first use and stays compiled."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("bertspec.handbook"), autoescape=True, trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update(inline=inline, paragraphs=paragraphs, cell=cell, slug=slug, data_uri=data_uri,
                       json_script=json_script)
    env.globals.update(asset=asset, anchor=claims.anchor, OUTCOME_MARK=OUTCOME_MARK, VERDICTS=verdicts.VERDICTS,
                       CATALOGUE=claims.CATALOGUE, knowledge=knowledge)
    return env


# ---- the page ----

class Page:
    """The handbook for one session: its collected claims, the settings it ran with."""

    def __init__(self, collector, settings):
        self.collector = collector
        self.settings = settings
        self.results = collector.ordered()
        self.by_function = collector.by_function()

    def html(self) -> str:
        return self.part("handbook")

    def part(self, name: str) -> str:
        """One template of templates/ (``handbook`` is the whole page) rendered for this session."""
        return environment().get_template(f"{name}.html").render(page=self)

    # -- front page --

    @functools.cached_property
    def identity(self) -> dict[str, str]:
        return facts.identity(self.settings)

    def tally(self) -> tuple[dict[str, int], list[tuple[str, int]]]:
        """Claims verified, failed and not run, and why the ones not run did not, the commonest reason first."""
        counts = {"passed": 0, "failed": 0, "not run": 0}
        reasons = Counter()
        for result in self.results:
            if result.outcome in ("failed", "error"):
                counts["failed"] += 1
            elif result.outcome == "passed":
                counts["passed"] += 1
            else:
                counts["not run"] += 1
                reasons[_reason_class(result)] += 1
        return counts, reasons.most_common()

    @property
    def interrupted(self) -> bool:
        return self.collector.exitstatus == 2 or self.collector.not_run > 0

    def counterfeit_runs(self) -> tuple[int, int]:
        """(caught, run): counterfeit runs that skipped (the counterfeit does not apply) count in neither."""
        ran = [t for t in self.collector.teeth if t["outcome"] != "skipped"]
        return sum(t["outcome"] == "passed" for t in ran), len(ran)

    # -- Q&A index and chapters --

    @functools.cached_property
    def chapters(self) -> list[tuple[str, str, str, list]]:
        """(prefix, Chinese title, English title, its claims) for every chapter with a claim in this session."""
        found = [(prefix, zh, en, [r for r in self.results if r.claim and r.claim.chapter == prefix])
                 for prefix, (zh, en) in claims.CHAPTERS.items()]
        return [chapter for chapter in found if chapter[3]]

    @property
    def broken(self) -> list:
        """Tests whose docstring is not in the claim format."""
        return [r for r in self.results if r.claim is None]

    @staticmethod
    def items(results) -> list[tuple[str, list]]:
        """A chapter's claims under their catalogue item: (claim ID, its claims), in order."""
        return [(claim_id, list(group)) for claim_id, group in itertools.groupby(results, lambda r: r.claim.claim_id)]

    @staticmethod
    def one_badge(result) -> bool:
        """Many runs with one outcome take one badge."""
        return len(result.runs) > 4 and len({run.outcome for run in result.runs}) == 1

    @staticmethod
    def common_skip(result) -> str | None:
        """The one reason every run of a claim skipped for, or None."""
        reasons = {run.reason for run in result.runs}
        return reasons.pop() if all(run.outcome == "skipped" for run in result.runs) and len(reasons) == 1 else None

    @property
    def no_saved_benchmark_run(self) -> bool:
        """Whether chapter P4 says how to measure costs: with a saved run, that claim's section shows the ratios."""
        saved = self.by_function.get(SAVED_BENCHMARK_RUN)
        return saved is not None and saved.outcome != "passed"

    # -- the knowledge base --

    def claim(self, function: str):
        """The claim a knowledge-base entry links to, or None when it did not run (or is not a claim)."""
        result = self.by_function.get(function)
        return result if result is not None and result.claim is not None else None

    def caught(self, misconception) -> bool | None:
        """Whether every claim refuting a misconception went red on its counterfeit in each run that could build it
        (a run skipped as not applicable, e.g. on sdpa, says nothing); None until each claim ran on it once."""
        ran = {}
        for t in self.collector.teeth:
            if t["outcome"] != "skipped":
                ran.setdefault((t["counterfeit"], t["claim"]), []).append(t["outcome"])
        found = [ran.get((misconception.counterfeit, f)) for f in misconception.refuted_by]
        return None if None in found else all(outcome == "passed" for outcomes in found for outcome in outcomes)

    @property
    def card(self) -> list | None:
        """The quick-reference card: the evidence of the claim that reads it off the model, if it ran."""
        result = self.by_function.get(QUICK_REFERENCE)
        return result.runs[0].evidence if result and result.runs else None

    # -- P7.3 and the counterfeits --

    @functools.cached_property
    def family_table(self) -> verdicts.Table:
        return verdicts.Table(self.results, facts.families(self.settings), bool(self.settings.families))

    def counterfeits(self) -> list[tuple[str, str, dict[str, list]]]:
        """(counterfeit, what it breaks, {claim: its runs on it}) for every counterfeit."""
        from bertspec.proof import counterfeits  # imports torch, which the plugin must not at start-up

        rows = []
        for name, description in counterfeits.described().items():
            by_claim: dict[str, list] = {}
            for t in self.collector.teeth:
                if t["counterfeit"] == name:
                    by_claim.setdefault(t["claim"], []).append(t)
            rows.append((name, description, by_claim))
        return rows

    # -- the JSON beside the report --

    def write_json(self, html_path) -> Path | None:
        if not html_path:
            return None
        path = Path(html_path).with_suffix(".json")
        data = {
            "identity": self.identity,
            "exitstatus": self.collector.exitstatus,
            "not_run": self.collector.not_run,
            "claims": [{
                "anchor": r.anchor, "function": r.function, "source": f"{r.path}:{r.line}",
                **({"claim_id": r.claim.claim_id, "question": r.claim.question, "question_zh": r.claim.question_zh,
                    "sentence": r.claim.sentence, "sentence_zh": r.claim.sentence_zh} if r.claim else
                   {"format_error": r.format_error}),
                "outcome": r.outcome, "counterfeits": r.counterfeits,
                "runs": [{"param": run.param, "outcome": run.outcome, "reason": run.reason, "evidence": run.evidence}
                         for run in r.runs],
            } for r in self.results],
            "counterfeit_runs": self.collector.teeth,
        }
        return write_atomically(path, json.dumps(data, ensure_ascii=False))


def _reason_class(result) -> str:
    """Why a claim did not run, for the front page's count of claims not run."""
    if result.benchmark:
        return "benchmarks (``pytest --benchmark-only``)"
    reasons = {run.reason for run in result.runs if run.reason}
    return reasons.pop() if len(reasons) == 1 else "several reasons"


# ---- pytest-html's run log: a Claim column ----

def run_log_header() -> str:
    return str(environment().get_template("run_log.html").module.header())


def run_log_cell(report) -> str:
    """A test's Claim cell in the run log: its claim's ID, linked to the claim's section."""
    record = getattr(report, "bertspec", None)
    try:
        claim = claims.parse(record["doc"]) if record else None
    except claims.ClaimFormatError:
        claim = None
    return str(environment().get_template("run_log.html").module.cell(record, claim))
