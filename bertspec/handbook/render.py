"""The handbook page: the templates in templates/ filled from the collected claims, and the same content as JSON.

pytest-html stays the engine (it writes the page and its run log); :class:`Page`
fills the page's summary prefix: the front page, BERT in one page, the Q&A
index, one section per claim (BERT's chapters, then the appendix of claims about
the tool itself), the knowledge-base sections, the comparison and the
counterfeit tables. All markup is in the templates, escaped by Jinja unless marked safe;
this module decides what they show, and its filters turn docstring markup and
evidence values into what a template places.
"""

import base64
import dataclasses
import functools
import gzip
import html
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from bertspec.handbook import claims, facts, knowledge, verdicts, walkthrough
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


def data_uri(svg: str) -> str:
    """An SVG as the data: URI of an <img>: the one-file page carries every figure inside itself."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def json_script(record: dict) -> Markup:
    """The attention view's data as the text of a <script type="application/json">; "</" escaped so no value can
    close the script element."""
    payload = json.dumps({k: record[k] for k in ("batches", "layers", "heads")}, ensure_ascii=False)
    return Markup(payload.replace("</", "<\\/"))


def asset(name: str) -> Markup:
    """The handbook's own style or script, inlined: the page is one file and fetches nothing."""
    return Markup((ASSETS / name).read_text(encoding="utf-8"))


@functools.cache
def environment() -> jinja2.Environment:
    """One per process: each template compiles on first use and stays compiled."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("bertspec.handbook"), autoescape=True, trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update(inline=inline, paragraphs=paragraphs, cell=cell, data_uri=data_uri, json_script=json_script)
    env.globals.update(asset=asset, anchor=claims.anchor, OUTCOME_MARK=OUTCOME_MARK, VERDICTS=verdicts.VERDICTS,
                       CATALOGUE=claims.CATALOGUE, knowledge=knowledge, Glosser=Glosser, topic=claims.topic,
                       thread_url=claims.thread_url)
    return env


# ---- glossary terms in a claim's text, linked to their entries ----

# What is never searched for a term: code, a link, and any tag's own text.
_NOT_PROSE = re.compile(r"(<code>.*?</code>|<a\b.*?</a>|<[^>]+>)", re.DOTALL)


def _phrase_pattern(phrase: str) -> str:
    """A phrase as a whole word: Latin phrases not inside a longer name (attention_mask in my_attention_mask, -100
    in 1-100); Chinese ones anywhere, Chinese having no spaces between words."""
    body = re.escape(phrase)
    return rf"(?<![A-Za-z0-9_.\-]){body}(?![A-Za-z0-9_\-])" if phrase.isascii() else body


@functools.cache
def _terms() -> tuple[re.Pattern, dict]:
    """One pattern for every glossary phrase, the longest first, and the term each phrase (as escaped HTML) names."""
    named = {str(escape(phrase)): term for term in knowledge.GLOSSARY for phrase in term.phrases}
    return re.compile("|".join(_phrase_pattern(p) for p in sorted(named, key=len, reverse=True))), named


class Glosser:
    """Links glossary terms in the texts of one section and language: each term once, at its first whole-word use
    outside code and links."""

    def __init__(self):
        self.linked: set[str] = set()

    def __call__(self, html: Markup) -> Markup:
        pattern, named = _terms()
        link = environment().get_template("macros.html").module.term_link

        def first_use(match):
            term = named[match.group(0)]
            if term.anchor in self.linked:
                return match.group(0)
            self.linked.add(term.anchor)
            return str(link(term, Markup(match.group(0))))

        parts = _NOT_PROSE.split(str(html))  # prose at even indices, the parts to leave alone at odd ones
        return Markup("".join(part if i % 2 else pattern.sub(first_use, part) for i, part in enumerate(parts)))


# ---- the page ----

@dataclass(frozen=True)
class Chapter:
    """A chapter of the page, or the appendix of claims about the tool itself, with its claims in this session."""

    anchor: str
    label: str  # its plan prefix, e.g. P2; empty for the appendix
    zh: str
    en: str
    results: list
    appendix: bool = False


@dataclass(frozen=True)
class Counts:
    """Every count the page shows, decided once: each template that shows one reads it here."""

    verified: int
    failed: int
    not_run: int
    reasons: list  # (why a claim did not run, how many claims), the commonest first
    caught: int  # counterfeit runs on which their claim went red, as it must
    counterfeit_runs: int  # counterfeit runs that ran; one skipped because its counterfeit does not apply is not one

    @property
    def claims(self) -> int:
        return self.verified + self.failed + self.not_run


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

    @functools.cached_property
    def counts(self) -> Counts:
        """Claims verified, failed and not run (why, the commonest reason first), and counterfeit runs caught."""
        outcomes = Counter()
        reasons = Counter()
        for result in self.results:
            outcome = {"error": "failed", "skipped": "not run"}.get(result.outcome, result.outcome)
            outcomes[outcome] += 1
            if outcome == "not run":
                reasons[_reason_class(result)] += 1
        ran = [t for t in self.collector.teeth if t["outcome"] != "skipped"]
        return Counts(outcomes["passed"], outcomes["failed"], outcomes["not run"], reasons.most_common(),
                      sum(t["outcome"] == "passed" for t in ran), len(ran))

    @property
    def interrupted(self) -> bool:
        return self.collector.exitstatus == 2 or self.collector.not_run > 0

    # -- BERT in one page, the Q&A index and chapters --

    @property
    def walks(self) -> list[tuple[walkthrough.Walk, list[tuple[walkthrough.Step, dict | None]]]]:
        """BERT in one page, then from BERT to GPT and T5: each step with the evidence record its claim recorded in
        this run, None if none."""
        return [(walk, [(step, self.record(*step.shows, run=step.run)) for step in walk.steps])
                for walk in walkthrough.WALKS]

    def record(self, function: str, title: str, run: str | None = None) -> dict | None:
        """A claim's evidence record titled ``title`` in its first passed run (the run ``run``, its test id's
        parameters, where named); None if no such run passed."""
        result = self.claim(function)
        passed = [r for r in result.runs if r.outcome == "passed" and run in (None, r.param)] if result else []
        return next((rec for r in passed for rec in r.evidence if rec["title"] == title), None)

    @functools.cached_property
    def chapters(self) -> list[Chapter]:
        """BERT's chapters with a claim in this session, in the plan's order, then the appendix about the tool."""
        parsed = [r for r in self.results if r.claim]
        bert = [r for r in parsed if r.function not in claims.ABOUT_THE_TOOL]
        found = [Chapter(f"chapter-{prefix}", prefix, zh, en, [r for r in bert if r.claim.chapter == prefix])
                 for prefix, (zh, en) in claims.CHAPTERS.items()]
        tool = [r for r in parsed if r.function in claims.ABOUT_THE_TOOL]
        found.append(Chapter("appendix", "", *claims.APPENDIX, tool, appendix=True))
        return [chapter for chapter in found if chapter.results]

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
    def tally(result) -> list[tuple[str, int]]:
        """(outcome, how many runs ended so), in the order the outcomes first occur."""
        return list(Counter(run.outcome for run in result.runs).items())

    @staticmethod
    def run_groups(result) -> list[tuple[str, str, str, list]]:
        """(outcome, label, reason, evidence) per run as the claim shows it: each run its own, except the runs that
        skipped with the same verdict on several architectures (a P8 claim on the six encoders), which share one entry
        naming them all."""
        groups: dict[tuple, list] = {}
        for run in result.runs:
            v = run.verdict
            key = (run.outcome, v.kind, v.why, v.shown_by) if v else (run.outcome, run.param, run.reason)
            groups.setdefault(key, []).append(run)
        shown, first_shown = [], {}  # a record's content -> the run that showed it first
        for runs in groups.values():
            if len(runs) == 1 or runs[0].verdict is None:
                shown += [(run.outcome, run.param or run.outcome, run.reason, once(run, first_shown)) for run in runs]
                continue
            names = ", ".join(dict.fromkeys(run.verdict.family for run in runs))
            shared = dataclasses.replace(runs[0].verdict, family=names)
            shown.append((runs[0].outcome, f"{len(runs)} runs", shared.reason, []))
        return shown

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
        marked, every = self.settings.families_of(across=True), self.settings.families_of(across=False)
        # The default run: only the claims marked across_families ran per family; --family: all; --bert-model: none.
        return verdicts.Table(self.results, facts.families(self.settings), per_family=bool(marked),
                              every_claim=bool(every) or not marked)

    @staticmethod
    def teeth_badges(runs: list[dict]) -> list[tuple[str, str, str]]:
        """(outcome, label, title) per badge of a claim's runs on one counterfeit: each run that went red or stayed
        green its own badge, the runs that skipped (the counterfeit cannot be made there, or the claim does not
        apply) one badge together, its title the first two distinct reasons."""
        shown = [(t["outcome"], f'{t["implementation"]}' + (f' · {t["family"]}' if t.get("family") else ""), t["reason"])
                 for t in runs if t["outcome"] in ("passed", "failed")]
        skipped = [t for t in runs if t["outcome"] not in ("passed", "failed")]
        if skipped:
            reasons = list(dict.fromkeys(t["reason"] for t in skipped))
            title = "; ".join(reasons[:2]) + (f"; … {len(reasons) - 2} more (the run log has each)"
                                              if len(reasons) > 2 else "")
            shown.append(("skipped", f"{len(skipped)} skipped" if len(skipped) > 1 else skipped[0]["implementation"],
                          title))
        return shown

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
                    "sentence": r.claim.sentence, "sentence_zh": r.claim.sentence_zh,
                    "asked_in": list(r.claim.asked_in)} if r.claim else
                   {"format_error": r.format_error}),
                "outcome": r.outcome, "counterfeits": r.counterfeits,
                "runs": [{"param": run.param, "outcome": run.outcome, "reason": run.reason, "evidence": run.evidence}
                         for run in r.runs],
            } for r in self.results],
            "counterfeit_runs": self.collector.teeth,
            "counts": dataclasses.asdict(self.counts),
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


# pytest-html's page ends with its run log's data, as JSON in an attribute, and the script that renders it.
RUN_LOG = re.compile(r'<div id="data-container" data-jsonblob="([^"]*)"></div>\s*<script>(.*?)</script>', re.S)
# The cells of a run log row (pytest-html's, with the Claim column) as the fields of the test's row fill them: a row
# that reads so travels without them, and assets/run_log.js writes them back from this template.
ROW_TEMPLATE = ['<td class="col-result">{result}</td>', '<td class="col-claim">{claim}</td>',
                '<td class="col-testId">{testId}</td>', '<td class="col-duration">{duration}</td>',
                '<td class="col-links"></td>']
ROW_FIELDS = {"result", "claim", "testId", "duration"}


def compact_run_log(page: str) -> str:
    """The run log's data gzip-compressed: pytest-html writes one row of JSON per test id, HTML-escaped in an
    attribute (about 800 bytes a test, most of a report of a thousand test ids); each row's table cells, which repeat
    its fields, are left out where ROW_TEMPLATE rebuilds them, and the rest compressed to about a twentieth.
    assets/run_log.js unpacks it in the browser and then runs pytest-html's script, which waits for it in an inert
    script element."""
    def pack(match) -> str:
        data = json.loads(html.unescape(match.group(1)))
        for rows in data["tests"].values():
            for row in rows:
                if ROW_FIELDS <= row.keys() and row.get("resultsTableRow") == [c.format(**row) for c in ROW_TEMPLATE]:
                    del row["resultsTableRow"]
        data["rowTemplate"] = ROW_TEMPLATE
        packed = gzip.compress(json.dumps(data, separators=(",", ":")).encode("utf-8"), mtime=0)
        return environment().get_template("run_log_data.html").render(
            packed=base64.b64encode(packed).decode("ascii"), app=Markup(match.group(2)))

    return RUN_LOG.sub(pack, page, count=1)


def run_log_cell(report) -> str:
    """A test's Claim cell in the run log: its claim's ID, linked to the claim's section."""
    record = getattr(report, "bertspec", None)
    try:
        claim = claims.parse(record["doc"]) if record else None
    except claims.ClaimFormatError:
        claim = None
    return str(environment().get_template("run_log.html").module.cell(record, claim))


def once(run, first_shown: dict) -> list[dict]:
    """A run's evidence records, each one that an earlier run of the claim already showed word for word (a table no
    attention implementation changes) replaced by a line that says where it is."""
    records = []
    for rec in run.evidence:
        key = json.dumps(rec, sort_keys=True)
        if key in first_shown:
            records.append({"kind": "same", "title": rec["title"], "as": first_shown[key]})
        else:
            first_shown[key] = run.param or run.outcome
            records.append(rec)
    return records
