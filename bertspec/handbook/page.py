"""The handbook: the report a learner reads, built from the claims that ran.

pytest-html stays the engine (it writes the page and its run log); this module
fills the page's summary prefix with the handbook. Three steps:

1. :func:`attach` puts each test's claim (its docstring, where it lives), its
   parameter id and its evidence records on the test report, as plain data, so
   they also travel from pytest-xdist workers to the controller.
2. :class:`Collector` (a plugin object) gathers those reports into one
   :class:`ClaimResult` per claim function, each with its runs (eager, sdpa, a
   dtype, ...) side by side.
3. :class:`Page` renders the front page, the Q&A index, one section per claim,
   the knowledge-base sections and the counterfeit table, and writes the same
   content as JSON beside the report.
"""

import base64
import hashlib
import html
import importlib.metadata
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bertspec.models import anatomy
from bertspec.handbook import claims, knowledge
from bertspec.proof import scope
from bertspec.handbook.atomic import write_atomically

ASSETS = Path(__file__).resolve().parent / "assets"
OUTCOME_MARK = {"passed": "✓", "failed": "✗", "error": "✗", "skipped": "–", "not run": "·"}


# ---- 1. on the report ----

def attach(item, report) -> None:
    """Put the claim, its parameter id and its evidence on the report of the phase that decides the outcome."""
    final = report.when == "call" or (report.when == "setup" and not report.passed)
    function = getattr(item, "function", None)
    if not final or function is None:
        return
    from bertspec.handbook.evidence import EVIDENCE

    path, line, _ = item.location
    report.bertspec = {
        "function": getattr(item, "originalname", item.name),
        "path": path,
        "line": line + 1,
        "param": item.callspec.id if hasattr(item, "callspec") else "",
        "family": item.callspec.params.get("family") if hasattr(item, "callspec") else None,
        "doc": function.__doc__ or "",
        "evidence": item.stash[EVIDENCE].records if EVIDENCE in item.stash else [],
        "counterfeits": [name for mark in item.iter_markers("counterfeits") for name in mark.args],
        "benchmark": "benchmark" in getattr(item, "fixturenames", ()),
        "teeth": dict(item.user_properties).get("teeth"),
    }


# ---- 2. collected ----

@dataclass
class Run:
    param: str
    outcome: str  # passed, failed, error, skipped
    reason: str  # why skipped, or the failure's last line
    evidence: list
    family: str | None = None  # the family --family ran it on; None: the claim does not run per family


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
        run = Run(record["param"], _outcome(report), _reason(report), record["evidence"], record.get("family"))
        if record["teeth"]:
            self.teeth.append({**record["teeth"], "outcome": run.outcome, "reason": run.reason})
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


def _reason(report) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        lines = [line for line in str(report.longreprtext).splitlines() if line.startswith("E ")]
        return lines[0][1:].strip() if lines else str(report.longreprtext).strip().splitlines()[-1:][0]
    return ""


def synthetic_report(claim: claims.Discovered, param: str = "", outcome: str = "passed", reason: str = "",
                     family: str | None = None):
    """A test report for a claim as :func:`attach` fills it, without running the claim: what the handbook's own
    claims render pages from."""
    from types import SimpleNamespace

    record = {"function": claim.function, "path": claim.path, "line": claim.line, "param": param, "family": family,
              "doc": claim.doc, "evidence": [{"kind": "text", "title": "evidence", "text": "…"}],
              "counterfeits": list(claim.counterfeits), "benchmark": False, "teeth": None}
    longrepr = ("", 0, f"Skipped: {reason}") if outcome == "skipped" else None
    return SimpleNamespace(bertspec=record, nodeid=f"{claim.path}::{claim.function}[{param}]", when="call",
                           outcome=outcome, passed=outcome == "passed", failed=outcome == "failed",
                           skipped=outcome == "skipped", longrepr=longrepr, longreprtext=f"E   {reason}")


# ---- 3. the page ----

def e(text) -> str:
    return html.escape(str(text), quote=True)


def inline(text: str) -> str:
    """Docstring markup as HTML: ``code`` and `code`, **strong**, *emphasis*; everything else escaped."""
    out = e(text)
    out = re.sub(r"``(.+?)``", r"<code>\1</code>", out)
    out = re.sub(r"(?<![\w`])`([^`]+?)`(?![\w`])", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(\S(?:.*?\S)?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])", r"<em>\1</em>", out)
    return out


def paragraphs(text: str, joiner: str) -> str:
    """Docstring paragraphs as <p>, their hard line breaks undone (Chinese joins without spaces)."""
    blocks = [joiner.join(line.strip() for line in block.splitlines()) for block in text.split("\n\n")]
    return "".join(f"<p>{inline(block)}</p>" for block in blocks if block.strip())


def fmt(value) -> str:
    """One cell: floats to 4 significant digits, the rest as text."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Verdict:
    kind: str  # a key of VERDICTS
    why: str  # the skip or failure reason
    shown_by: str  # differs: the claim (test function) that shows the family's own mechanism


VERDICTS = {  # kind -> (Chinese, English, mark)
    "holds": ("成立", "holds", "✓"),
    "differs": ("机制不同", "differs", "≠"),
    "n/a": ("不适用", "not applicable", "n/a"),
    "fails": ("失败", "fails", "✗"),
    "not-run": ("未运行", "not run", "·"),
}


class Page:
    """The handbook for one session: its collected claims, the settings it ran with."""

    def __init__(self, collector: Collector, settings, config):
        self.collector = collector
        self.settings = settings
        self.config = config
        self.results = collector.ordered()
        self.by_function = collector.by_function()

    def html(self) -> str:
        parts = [
            _asset("handbook.css", "style"),
            '<div id="handbook">',
            self.front(),
            self.qa_index(),
            *[self.chapter(prefix) for prefix in claims.CHAPTERS if self.in_chapter(prefix)],
            self.knowledge_sections(),
            self.comparison_table(),
            self.counterfeit_table(),
            '<h2 id="run-log">运行日志 / Run log</h2>'
            "<p>pytest-html's table of every test id, below; the environment pytest recorded is folded at the end.</p>",
            "</div>",
            _asset("handbook.js", "script"),
        ]
        return "".join(parts)

    # -- front page --

    def front(self) -> str:
        intro = "".join(f'<p lang="zh">{inline(zh)}</p><p lang="en">{inline(en)}</p>' for zh, en in knowledge.INTRO)
        identity = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in self.identity().items())
        nav = "".join(f'<a href="#{a}">{e(t)}</a>' for a, t in (
            ("qa-index", "问答索引 / Q&A index"), ("misconceptions", "常见误解 / Misconceptions"),
            ("quick-reference", "速查 / Quick reference"), ("glossary", "术语表 / Glossary"),
            ("practices", "最佳实践 / Best practices"), ("families", "家族对照 / Across the family"),
            ("counterfeits", "反例 / How we know"),
            ("run-log", "运行日志 / Run log")))
        return (
            '<header id="front"><h1>bertspec：BERT 机制手册<br><span lang="en">A handbook of BERT\'s mechanisms, '
            "verified on the model you use</span></h1>"
            f'<div class="intro">{intro}</div>'
            f'<div class="front-grid"><table class="identity"><caption>本次验证的对象 / What this run verified'
            f"</caption>{identity}</table>{self.verdict()}</div>"
            f'<nav class="toc">{nav}</nav>'
            '<p class="filter"><label>筛选 / Filter: <input id="handbook-filter" type="search" '
            'placeholder="例如 padding、-100、sdpa …" autocomplete="off"></label> '
            '<span id="filter-count"></span></p></header>'
        )

    def identity(self) -> dict:
        folders = [Path(self.settings.folder(f)) for f in self.settings.families or (None,)]
        if self.settings.families:
            where = "bundled family models (fixtures/family/): " + ", ".join(self.settings.families)
        else:
            where = "bundled (fixtures/default-model)" if self.settings.model_path is None else str(folders[0])
        return {
            "model / 模型": where,
            "size / 规模": "; ".join(_shape(_read_json(folder / "config.json")) for folder in folders),
            "weights / 权重": ", ".join(f"sha256 {_weights_hash(folder)}" for folder in folders),
            "torch": _version("torch"),
            "transformers": _version("transformers"),
            "attention / 注意力实现": ", ".join(self.settings.attn_implementations),
            "device / 设备": self.settings.device,
            "bertspec": f"{_version('bertspec')}{_git_commit()}",
        }

    def verdict(self) -> str:
        counts = {"passed": 0, "failed": 0, "not run": 0}
        reasons: dict[str, int] = {}
        for result in self.results:
            outcome = result.outcome
            if outcome in ("failed", "error"):
                counts["failed"] += 1
            elif outcome == "passed":
                counts["passed"] += 1
            else:
                counts["not run"] += 1
                reason = _reason_class(result)
                reasons[reason] = reasons.get(reason, 0) + 1
        why = "".join(f"<li>{e(n)} × {inline(r)}</li>" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        interrupted = ""
        if self.collector.exitstatus == 2 or self.collector.not_run:
            interrupted = (f'<p class="alert">运行被中断 / This run was interrupted: {self.collector.not_run} '
                           "test(s) of the session were not run.</p>")
        teeth = [t for t in self.collector.teeth if t["outcome"] != "skipped"]
        caught = sum(t["outcome"] == "passed" for t in teeth)
        return (
            f'<div class="verdict">{interrupted}<p class="big"><span class="passed">{counts["passed"]} 条结论已验证 / '
            f'claims verified</span> · <span class="failed">{counts["failed"]} 失败 / failed</span> · '
            f'<span class="skipped">{counts["not run"]} 未运行 / not run</span></p>'
            f"{'<ul>' + why + '</ul>' if why else ''}"
            f'<p>{caught} of {len(teeth)} counterfeit runs caught (<a href="#counterfeits">反例</a>)</p></div>'
        )

    # -- Q&A index --

    def in_chapter(self, prefix: str) -> list[ClaimResult]:
        return [r for r in self.results if r.claim and r.claim.chapter == prefix]

    def qa_index(self) -> str:
        blocks = []
        for prefix, (zh, en) in claims.CHAPTERS.items():
            results = self.in_chapter(prefix)
            if not results:
                continue
            items = "".join(
                f'<li class="qa" data-filter><a href="#{r.anchor}"><span lang="zh">{inline(r.claim.question_zh)}</span> '
                f'<span lang="en">{inline(r.claim.question)}</span></a> {self.badges(r)}'
                f'<div class="answer"><span lang="en">{inline(r.claim.sentence)}</span> '
                f'<span lang="zh">{inline(r.claim.sentence_zh)}</span></div></li>' for r in results)
            blocks.append(f'<h3><a href="#chapter-{prefix}">{prefix} {e(zh)} / {e(en)}</a></h3><ol>{items}</ol>')
        broken = [r for r in self.results if r.claim is None]
        if broken:
            blocks.append("<h3>不符合格式的测试 / Tests whose docstring is not a claim</h3><ul>" + "".join(
                f"<li><code>{e(r.path)}::{e(r.function)}</code>: {e(r.format_error)}</li>" for r in broken) + "</ul>")
        return f'<section id="qa-index"><h2>问答索引 / Q&amp;A index</h2>{"".join(blocks)}</section>'

    def badges(self, result: ClaimResult) -> str:
        runs = result.runs
        if len(runs) > 4 and len({r.outcome for r in runs}) == 1:
            return f'<span class="badge {runs[0].outcome}">{OUTCOME_MARK[runs[0].outcome]} {len(runs)} runs</span>'
        return "".join(f'<span class="badge {r.outcome}" title="{e(r.reason)}">{OUTCOME_MARK[r.outcome]} '
                       f"{e(r.param or r.outcome)}</span>" for r in runs)

    # -- chapters and claim sections --

    def chapter(self, prefix: str) -> str:
        zh, en = claims.CHAPTERS[prefix]
        sections, current = [], None
        for result in self.in_chapter(prefix):
            if result.claim.claim_id != current:
                current = result.claim.claim_id
                plan_words, shows = claims.CATALOGUE[current]
                sections.append(f'<h3 class="item">{e(current)} {e(plan_words)} · {e(shows)}</h3>')
            sections.append(self.section(result))
        extra = self.cost_summary() if prefix == "P4" else ""
        return f'<section class="chapter" id="chapter-{prefix}"><h2>{prefix} {e(zh)} / {e(en)}</h2>{"".join(sections)}{extra}</section>'

    def section(self, r: ClaimResult) -> str:
        c = r.claim
        counterfeits = ""
        if r.counterfeits:
            counterfeits = (' · must fail on: ' + ", ".join(f'<a href="#counterfeit-{e(n)}"><code>{e(n)}</code></a>'
                                                             for n in r.counterfeits))
        return (
            f'<section class="claim {r.outcome}" id="{e(r.anchor)}" data-filter>'
            f'<h4><span class="claim-id">{e(c.claim_id)}</span> <span lang="zh">{inline(c.question_zh)}</span> '
            f'<span lang="en">{inline(c.question)}</span> {self.badges(r)}</h4>'
            f'<p class="answer" lang="en">{inline(c.sentence)}</p><p class="answer" lang="zh">{inline(c.sentence_zh)}</p>'
            f'<div class="why"><div lang="en">{paragraphs(c.why, " ")}</div><div lang="zh">{paragraphs(c.why_zh, "")}</div></div>'
            f"{self.runs(r)}"
            f'<p class="source"><code>{e(r.path)}:{r.line}</code> <code>{e(r.function)}</code>{counterfeits}</p>'
            "</section>"
        )

    def runs(self, r: ClaimResult) -> str:
        reasons = {run.reason for run in r.runs}
        if all(run.outcome == "skipped" for run in r.runs) and len(reasons) == 1:
            return f'<p class="not-run">未运行 / not run ({len(r.runs)}): {inline(reasons.pop())}</p>'
        cells = []
        for run in r.runs:
            head = f'<h5 class="{run.outcome}">{OUTCOME_MARK[run.outcome]} {e(run.param or run.outcome)}</h5>'
            body = "".join(render(record) for record in run.evidence)
            if run.reason:
                body = f'<p class="reason">{inline(run.reason)}</p>' + body
            cells.append(f'<div class="run {run.outcome}">{head}{body}</div>')
        return f'<div class="runs">{"".join(cells)}</div>'

    def cost_summary(self) -> str:
        saved = self.by_function.get("test_the_saved_benchmark_run_reports_every_cost_as_a_ratio_within_that_run")
        if saved is None or saved.outcome == "passed":
            return ""  # the saved run's ratios are that claim's evidence, shown in its section
        return ('<p class="cost-howto">开销 / Cost: 本次没有已保存的基准运行 / no saved benchmark run: '
                "<code>pytest --benchmark-only --benchmark-autosave</code> measures and saves one; the next "
                "<code>pytest spec/ --html=report.html</code> shows its ratios here.</p>")

    # -- the knowledge base --

    def link(self, function: str) -> str:
        result = self.by_function.get(function)
        if result is None or result.claim is None:
            return f"<code>{e(function)}</code> (not in this run)"
        return (f'<a href="#{e(result.anchor)}" class="claim-link {result.outcome}">{OUTCOME_MARK[result.outcome]} '
                f"{e(result.claim.claim_id)} {inline(result.claim.sentence)}</a>")

    def links(self, functions) -> str:
        return "<ul class='links'>" + "".join(f"<li>{self.link(f)}</li>" for f in functions) + "</ul>"

    def knowledge_sections(self) -> str:
        caught = {(t["counterfeit"], t["claim"]): t["outcome"] for t in self.collector.teeth}
        misconceptions = "".join(
            f'<li class="misconception" data-filter><p class="wrong"><span lang="zh">✗ {inline(m.wrong_zh)}</span> '
            f'<span lang="en">{inline(m.wrong)}</span></p><p class="right"><span lang="zh">✓ {inline(m.right_zh)}</span> '
            f'<span lang="en">{inline(m.right)}</span></p>'
            f'<p class="proof">若误解成立，下列结论会失败 / were it true, these claims would fail — shown on the '
            f'counterfeit <a href="#counterfeit-{e(m.counterfeit)}"><code>{e(m.counterfeit)}</code></a> '
            f'{_caught_mark(caught, m)}:</p>{self.links(m.refuted_by)}</li>'
            for m in knowledge.MISCONCEPTIONS)
        glossary = "".join(
            f'<dt id="term-{e(_slug(t.term))}" data-filter><code>{e(t.term)}</code></dt><dd data-filter><p lang="zh">{inline(t.zh)}</p>'
            f'<p lang="en">{inline(t.en)}</p>{self.links(t.claims)}</dd>' for t in knowledge.GLOSSARY)
        practices = "".join(
            f'<li data-filter><p><strong lang="zh">{inline(p.practice_zh)}</strong> <strong lang="en">{inline(p.practice)}'
            f'</strong></p><p lang="zh">{inline(p.otherwise_zh)}</p><p lang="en">{inline(p.otherwise)}</p>'
            f"{self.links(p.shown_by)}</li>" for p in knowledge.PRACTICES)
        card = self.by_function.get("test_the_quick_reference_card_is_read_off_the_model_under_test")
        card_html = ("".join(render(record, folded=False) for record in card.runs[0].evidence) if card and card.runs
                     else "<p>(the quick-reference claim did not run in this session)</p>")
        return (
            f'<section id="misconceptions"><h2>常见误解 / Common misconceptions</h2><ol>{misconceptions}</ol></section>'
            '<section id="quick-reference"><h2>速查 / Quick reference <button type="button" id="print-card">打印 / '
            f'print</button></h2><div class="card">{card_html}</div></section>'
            f'<section id="glossary"><h2>术语表 / Glossary</h2><dl>{glossary}</dl></section>'
            f'<section id="practices"><h2>关键发现与最佳实践 / Key findings and best practices</h2><ol>{practices}</ol></section>'
        )

    # -- P7.3: claim × architecture --

    def families(self) -> list[str]:
        """The families this run covered: --family's, or the one of the model under test."""
        if self.settings.families:
            return list(self.settings.families)
        model_type = _read_json(Path(self.settings.folder()) / "config.json").get("model_type")
        family = anatomy.of_model_type(model_type)
        return [family.family if family else "bert"]

    def verdict_on(self, result: ClaimResult, family: str) -> Verdict:
        """What a claim's runs on one family say: holds, fails, differs (and which claim shows how), n/a, not run."""
        single = not self.settings.families or all(run.family is None for run in result.runs)
        runs = [run for run in result.runs if single or run.family == family]
        if not runs:
            return Verdict("not-run", "", "")
        if any(run.outcome in ("failed", "error") for run in runs):
            return Verdict("fails", next(run.reason for run in runs if run.outcome in ("failed", "error")), "")
        if any(run.outcome == "passed" for run in runs):
            return Verdict("holds", "", "")
        reason = runs[0].reason
        if reason.startswith(scope.DIFFERS):
            shown_by = re.search(r"\[(test_\w+)\]$", reason)
            return Verdict("differs", re.sub(r"\s*\[test_\w+\]$", "", reason), shown_by.group(1) if shown_by else "")
        if reason.startswith(scope.NOT_APPLICABLE):
            return Verdict("n/a", reason, "")
        return Verdict("not-run", reason, "")

    def comparison_table(self) -> str:
        families = self.families()
        rows, counts = [], {f: {} for f in families}
        for r in self.results:
            if r.claim is None or r.benchmark:
                continue
            cells = []
            for family in families:
                verdict = self.verdict_on(r, family)
                counts[family][verdict.kind] = counts[family].get(verdict.kind, 0) + 1
                cells.append(self.verdict_cell(verdict))
            if len(families) > 1 and all(run.family is None for run in r.runs):  # one run, whatever the family
                cells = [self.verdict_cell(self.verdict_on(r, families[0]), span=len(families))]
            rows.append(f'<tr data-filter><th><a href="#{e(r.anchor)}">{e(r.claim.claim_id)}</a> '
                        f'<span lang="zh">{inline(r.claim.question_zh)}</span> <span lang="en">{inline(r.claim.question)}'
                        f'</span></th>{"".join(cells)}</tr>')
        names = [anatomy.FAMILIES[f].name for f in families]
        head = "".join(f"<th>{e(n)}</th>" for n in names)
        summary = "".join(
            f"<tr><th>{e(VERDICTS[kind][0])} / {e(VERDICTS[kind][1])}</th>"
            + "".join(f"<td>{counts[f].get(kind, 0)}</td>" for f in families) + "</tr>" for kind in VERDICTS)
        hint = ("" if self.settings.families else
                "<p>本次只运行了一个模型；<code>pytest spec/ --family all --html=report.html</code> 在 BERT 家族每个架构的自带模型上"
                "运行全部结论。/ This run covered one model; <code>pytest spec/ --family all --html=report.html</code> "
                "runs every claim on the bundled model of each BERT-family architecture.</p>")
        return (
            '<section id="families"><h2>P7.3 家族对照：结论 × 架构 / Across the family: claim × architecture</h2>'
            "<p>每条结论在每个架构上：✓ 成立、≠ 机制不同（链接到说明该架构机制的结论）、n/a 不适用（附原因）、✗ 失败、· 未运行"
            "（原因见鼠标悬停）。/ Each claim on each architecture: ✓ holds, ≠ differs (linked to the claim that shows "
            "that architecture's own mechanism), n/a not applicable (with the reason), ✗ fails, · not run (hover for "
            "why).</p>"
            f"{hint}"
            f'<table class="ev family-summary"><tr><th></th>{head}</tr>{summary}</table>'
            f'<details open><summary>全部结论 / every claim ({len(rows)})</summary><div class="scroll">'
            f'<table class="ev family-table"><tr><th>claim</th>{head}</tr>{"".join(rows)}</table></div></details></section>'
        )

    def verdict_cell(self, verdict: Verdict, span: int = 1) -> str:
        """A compact cell (the legend above gives each mark in both languages); n/a and failures say why."""
        zh, en, mark = VERDICTS[verdict.kind]
        label = e(f"{mark} {zh}")
        if span > 1:
            label = e(f"{mark} {zh} / {en} — 不依赖架构，运行一次 / independent of the architecture, run once")
        if verdict.shown_by:
            label = self.link_short(verdict.shown_by, f"{mark} {zh}")
        why = f"<small>{inline(verdict.why)}</small>" if verdict.kind in ("n/a", "fails") else ""
        columns = f' colspan="{span}"' if span > 1 else ""
        return f'<td class="verdict {verdict.kind}"{columns} title="{e(verdict.why)}">{label}{why}</td>'

    def link_short(self, function: str, label: str) -> str:
        result = self.by_function.get(function)
        if result is None or result.claim is None:
            return f"{e(label)} (<code>{e(function)}</code>)"
        return f'<a href="#{e(result.anchor)}">{e(label)} → {e(result.claim.claim_id)}</a>'

    def counterfeit_table(self) -> str:
        from bertspec.proof import counterfeits

        rows = []
        for name, description in counterfeits.described().items():
            by_claim: dict[str, list] = {}
            for t in self.collector.teeth:
                if t["counterfeit"] == name:
                    by_claim.setdefault(t["claim"], []).append(t)
            cells = "".join(
                "<li>" + "".join(f'<span class="badge {_caught_class(t)}" title="{e(t["reason"])}">'
                                 f'{_caught_text(t)} {e(t["implementation"])}</span>' for t in runs)
                + f" {self.link(claim)}</li>" for claim, runs in by_claim.items())
            rows.append(f'<tr id="counterfeit-{e(name)}" data-filter><th><code>{e(name)}</code></th>'
                        f"<td>{inline(description)}</td><td><ul class='links'>{cells or '<li>(not run)</li>'}</ul></td></tr>")
        return (
            '<section id="counterfeits"><h2>结论如何会失败：反例 / How we know the claims can fail</h2>'
            "<p>每个反例是被测模型破坏了一个机制的版本；声明它的结论必须在它上面失败（✓ = 失败了，即被识破）。/ Each counterfeit "
            "is the model under test with one mechanism broken; every claim that declares it must go red on it "
            "(✓ caught = the claim failed on it, as it must; the generated meta-tests run each pair).</p>"
            f'<table class="ev counterfeits"><tr><th>counterfeit</th><th>what it breaks</th><th>claims that caught it</th></tr>'
            f'{"".join(rows)}</table></section>'
        )

    # -- the JSON beside the report --

    def write_json(self, html_path) -> Path | None:
        if not html_path:
            return None
        path = Path(html_path).with_suffix(".json")
        data = {
            "identity": self.identity(),
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


def _caught_mark(caught: dict, m) -> str:
    outcomes = [caught.get((m.counterfeit, f)) for f in m.refuted_by]
    if any(o is None for o in outcomes):
        return ""
    return '<span class="badge passed">✓ caught</span>' if all(o == "passed" for o in outcomes) else \
        '<span class="badge failed">✗ not caught</span>'


def _caught_class(teeth_run: dict) -> str:
    return {"passed": "passed", "failed": "failed"}.get(teeth_run["outcome"], "skipped")


def _caught_text(teeth_run: dict) -> str:
    return {"passed": "✓ caught", "failed": "✗ NOT caught"}.get(teeth_run["outcome"], teeth_run["outcome"])


def _reason_class(result: ClaimResult) -> str:
    reasons = {run.reason for run in result.runs if run.reason}
    if result.benchmark:
        return "benchmarks (``pytest --benchmark-only``)"
    return reasons.pop() if len(reasons) == 1 else "several reasons"


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "-", text).strip("-").lower() or "term"


# ---- evidence records as HTML ----

def render(record: dict, folded: bool = True) -> str:
    """One evidence record as HTML; long tables and texts fold into <details> unless ``folded`` is False."""
    badge = ' <span class="derived" title="recomputed from the fused kernel\'s inputs; a claim checks they reproduce ' \
            'its output">derived</span>' if record.get("derived") else ""
    title = f'{inline(record["title"])}{badge}'
    note = f'<p class="note">{inline(record["note"])}</p>' if record.get("note") else ""
    kind = record["kind"]
    if kind == "table":
        head = "".join(f"<th>{e(c)}</th>" for c in record["columns"])
        body = "".join("<tr>" + "".join(f"<td>{e(fmt(c))}</td>" for c in row) + "</tr>" for row in record["rows"])
        table = f'<div class="scroll"><table class="ev"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        if folded and len(record["rows"]) > 16:
            return f'<details class="record"><summary>{title} ({len(record["rows"])} rows)</summary>{note}{table}</details>'
        return f'<figure class="record"><figcaption>{title}</figcaption>{note}{table}</figure>'
    if kind in ("text", "code"):
        text = record["text"] if kind == "text" else record["code"]
        pre = f'<pre class="{kind}">{e(text)}</pre>'
        if folded and text.count("\n") > 16:
            return f'<details class="record"><summary>{title} ({text.count(chr(10)) + 1} lines)</summary>{note}{pre}</details>'
        return f'<figure class="record"><figcaption>{title}</figcaption>{note}{pre}</figure>'
    if kind == "figure":
        data = base64.b64encode(record["svg"].encode("utf-8")).decode("ascii")
        return (f'<figure class="record"><figcaption>{title}</figcaption>{note}'
                f'<img class="figure" alt="{e(record["title"])}" src="data:image/svg+xml;base64,{data}"></figure>')
    if kind == "attention":
        payload = json.dumps({k: record[k] for k in ("tokens", "padded", "probs", "layers", "heads")}, ensure_ascii=False)
        return (f'<figure class="record"><figcaption>{title}</figcaption>{note}<div class="attention-view">'
                f'<script type="application/json">{payload.replace("</", "<" + chr(92) + "/")}</script></div></figure>')
    return f"<p>unknown evidence kind {e(kind)}</p>"


def run_log_cell(report) -> str:
    record = getattr(report, "bertspec", None)
    if record is None:
        return '<td class="col-claim"></td>'
    try:
        claim = claims.parse(record["doc"])
    except claims.ClaimFormatError:
        return '<td class="col-claim">(not a claim)</td>'
    return (f'<td class="col-claim"><a href="#{e(claims.anchor(claim.claim_id, record["function"]))}">'
            f"{e(claim.claim_id)}</a></td>")


# ---- facts for the front page ----

def _asset(name: str, tag: str) -> str:
    return f"<{tag}>{(ASSETS / name).read_text(encoding='utf-8')}</{tag}>"


def _shape(config: dict) -> str:
    """A config.json in one line; DistilBERT names its sizes n_layers, dim and n_heads."""
    def get(name, distilbert_name):
        return config.get(name, config.get(distilbert_name))

    return (f"{get('num_hidden_layers', 'n_layers')} layers × hidden {get('hidden_size', 'dim')} × "
            f"{get('num_attention_heads', 'n_heads')} heads, vocabulary {config.get('vocab_size')}, "
            f"{config.get('max_position_embeddings')} positions, {config.get('model_type')}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _weights_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    for file in files:
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12] if files else "—"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    if commit.returncode != 0:
        return ""
    return f" (git {commit.stdout.strip()}{', modified' if dirty.stdout.strip() else ''})"
