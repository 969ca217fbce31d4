"""Chapter P5.1a — the handbook in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven
by Selenium) opens the written page as a reader would.
"""

import json

import pytest

from bertspec.__main__ import main as cli
from bertspec.handbook import browser, claims
from bertspec.handbook.evidence import attention_probs
from bertspec.handbook.figures import LABEL_PT
from bertspec.models import source
from bertspec.proof.generation import PREFIX
from bertspec.proof.pages import SPEC, every_claim_page

# ---- the page in a real browser ----

@pytest.mark.browser
def test_the_handbook_opens_in_a_browser_without_errors_and_every_q_and_a_link_lands_on_its_claim(written_report, screenshots,
                                                                                                 evidence):
    """Opened in headless Chromium on a 1366×768 screen, the handbook shows its front page with the counts of its JSON, every Q&A link lands on its claim, no in-page link is dead, the filter says when nothing matches, and the attention view switches layer and head.

    What a reader sees is checked in a real browser (Debian's chromium and
    chromium-driver, driven by Selenium; nothing is downloaded): no console
    errors; the front page and the Q&A index are there; the counts on the
    front page are those of the claims and counterfeit runs in report.json;
    after the page's scripts ran (pytest-html draws its run log from data),
    every ``href="#x"`` has an element with id x; following an index link
    scrolls its claim's section into view; a word nothing contains gets the
    filter's "nothing matches"; every section has both languages and evidence;
    every figure has a non-zero size no wider than the page, and the page,
    run log included, no wider than the window; the attention view redraws when another layer or head is chosen. A screenshot of each
    handbook section is saved in screenshots/ beside the report.

    Claim ID: P5.1a
    Question: Does the handbook work when a person opens it in a browser?
    问题：在浏览器里打开手册，它能正常使用吗？
    中文：在 1366×768 屏幕的无界面 Chromium 中打开，手册显示首页且计数与其 JSON 一致，每个问答链接都跳到对应结论，没有失效的页内链接，
    筛选在没有匹配时会说明，attention 视图能切换层与头。
    原因：读者看到的内容在真实浏览器中检查（Debian 的 chromium 与 chromium-driver，由 Selenium 驱动，不下载任何东西）：没有控制台错误；
    首页与问答索引都在；首页的计数就是 report.json 中结论与反例运行的计数；页面脚本运行之后（pytest-html 由数据绘制运行日志），每个
    href="#x" 都有 id 为 x 的元素；点击索引链接会把对应结论的小节滚动到视野中；输入一个哪里都没有的词，筛选显示“没有匹配”；每个小节都有
    两种语言和证据；每个图的尺寸非零且不超过页面宽度，整页（含运行日志）不超过窗口宽度；选择另一层或另一个头时 attention 视图会重绘。
    手册每个部分的截图保存在报告旁的 screenshots/ 中。
    """
    reason = browser.missing()
    if reason:
        pytest.skip(reason)
    data = json.loads(written_report.with_suffix(".json").read_text(encoding="utf-8"))
    with browser.chromium(browser.LAPTOP) as driver:
        browser.open_page(driver, written_report)
        driver.save_screenshot(str(screenshots / "front.png"))
        run = driver.execute_script
        counted = run("return Object.fromEntries([...document.querySelectorAll('#front [data-count]')]"
                    ".map(e => [e.dataset.count, Number(e.textContent)]))")
        hrefs, dead, log_links = run(DEAD_LINKS)
        nothing = type_in_filter(driver, "qqzx-in-no-claim")
        type_in_filter(driver, "")
        for section in run("return [...document.querySelectorAll('#handbook > [id]')].map(s => s.id)"):
            run("document.getElementById(arguments[0]).scrollIntoView()", section)
            driver.save_screenshot(str(screenshots / f"section-{section}.png"))
        links = run("return [...document.querySelectorAll('#qa-index li.qa > a')].map(a => a.getAttribute('href'))")
        landed = []
        for href in links:
            run("document.querySelector(`#qa-index a[href='${arguments[0]}']`).click()", href)
            top = run("return document.getElementById(arguments[0].slice(1)).getBoundingClientRect().top", href)
            landed.append((href, location_hash(driver) == href, round(top)))
        driver.save_screenshot(str(screenshots / "claim.png"))
        section_facts = run("""return [...document.querySelectorAll('section.claim')].map(s => [s.id,
            !!s.querySelector('[lang=zh]') && s.querySelector('[lang=zh]').textContent.length > 0,
            !!s.querySelector('[lang=en]') && s.querySelector('[lang=en]').textContent.length > 0,
            s.querySelectorAll('.run .record').length])""")
        figures = run("""return [...document.querySelectorAll('img.figure')].map(i => [i.naturalWidth,
            i.getBoundingClientRect().width, document.documentElement.clientWidth])""")
        page_width = run("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        views = run("return document.querySelectorAll('.attention-view svg.attention-heatmap').length")
        before = run("return document.querySelector('.attention-view svg.attention-heatmap').getAttribute('aria-label')")
        switched = []
        for choose, arguments in ((CHOOSE, ("layer", "1")),  # the layer select, then head 1's small map
                                  ("document.querySelectorAll('.attention-view button.head')[1].click()", ())):
            run(choose, *arguments)
            switched.append(run("return document.querySelector('.attention-view svg.attention-heatmap')"
                                ".getAttribute('aria-label')"))
        run("document.querySelector('.attention-view').scrollIntoView()")
        driver.save_screenshot(str(screenshots / "attention-view.png"))
        errors = browser.console_errors(driver)
    evidence.table("Q&A links", ["link", "lands on it (location.hash)", "section top (px)"], landed)
    evidence.table("sections", ["anchor", "Chinese", "English", "evidence records"], section_facts)
    evidence.table("figures", ["natural width", "shown width", "page width"], figures)
    evidence.table("the page", ["content width (px)", "window width (px)"], [page_width])
    evidence.table("attention view", ["views", "before", "layer 1", "layer 1, head 1"], [(views, before, *switched)])
    counts = counts_in(data)
    evidence.table("the front page's counts", ["count", "shown", "from report.json's claims and counterfeit runs"],
                   [(name, counted.get(name), value) for name, value in counts.items()])
    evidence.table("in-page links, after the page's scripts ran", ["links", "run log links", "dead"],
                   [(hrefs, log_links, dead)])
    evidence.table("the filter, a word no claim has", ["says", "shown", "hits listed"], [nothing])
    evidence.text("screenshots", "\n".join(str(p) for p in sorted(screenshots.glob("*.png"))))
    assert errors == []
    assert counted == counts and {k: data["counts"][k] for k in counts} == counts
    assert dead == [] and log_links > 0
    assert "nothing matches" in nothing[0] and nothing[1] and nothing[2] == []
    assert links and all(ok and 0 <= top < 200 for _, ok, top in landed)
    assert section_facts and all(zh and en and records for _, zh, en, records in section_facts)
    assert figures and all(natural > 0 and 0 < shown <= page for natural, shown, page in figures)
    assert page_width[0] <= page_width[1], "the page scrolls sideways: a table or a long name is wider than it"
    assert views >= 1 and before.endswith("layer 0, head 0") and switched == [
        before.replace("layer 0", "layer 1"), before.replace("layer 0, head 0", "layer 1, head 1")]


@pytest.mark.browser
def test_the_first_screen_at_1366_by_768_shows_the_filter_and_bert_questions_before_the_appendix(settings, tmp_path,
                                                                                                screenshots, evidence):
    """On a 1366×768 screen the handbook of every claim opens with the filter box, the menu and at least five questions about BERT in view, and its filter lists BERT's questions before the appendix's.

    A newcomer decides on the first screen whether the handbook answers their
    question: the filter box, the chapter menu and "start here" (the first
    question of each step of BERT in one page) must be there without
    scrolling, with the run's details folded. The page checked is the handbook
    of every claim in spec/ (made from the docstrings, as a whole run shows it;
    written to every-claim.html beside its screenshot, apart from the written
    report the other browser claim opens). Typing a word that BERT questions
    and tool questions share lists BERT's hits first, the appendix's after.

    Claim ID: P5.1a
    Question: What does a newcomer see first when opening the handbook on a laptop?
    问题：新手在笔记本电脑上打开手册，首先看到什么？
    中文：在 1366×768 屏幕上，包含全部结论的手册一打开就能看到筛选框、菜单和至少五个关于 BERT 的问题；筛选把 BERT 的问题排在附录的问题之前。
    原因：新手在第一屏就决定手册能否回答自己的问题：筛选框、章节菜单和“从这里开始”（BERT 一页纸每一步的第一个问题）必须无需滚动就能看到，
    本次运行的详情折叠起来。检查的页面是 spec/ 中全部结论的手册（由 docstring 生成，与完整运行显示的一样；写到截图旁的 every-claim.html，
    与另一条浏览器结论打开的生成报告分开）。输入一个 BERT 问题与工具问题都有的词时，先列出 BERT 的命中，附录的在后。
    """
    reason = browser.missing()
    if reason:
        pytest.skip(reason)
    page = tmp_path / "every-claim.html"
    page.write_text(every_claim_page(settings).part("standalone"), encoding="utf-8")
    discovered = claims.discover(SPEC)
    tool = {"#" + claims.anchor(claims.parse(discovered[f].doc).claim_id, f) for f in claims.ABOUT_THE_TOOL & discovered.keys()}
    with browser.chromium(browser.LAPTOP) as driver:
        browser.open_page(driver, page)
        run = driver.execute_script
        fold = run("return innerHeight")
        bottoms = run("return ['#handbook-filter', 'nav.toc', 'details.verdict'].map("
                      "s => document.querySelector(s).getBoundingClientRect().bottom)")
        questions = run("return [...document.querySelectorAll('#start-here li > a')]"
                        ".map(a => [a.getAttribute('href'), a.getBoundingClientRect().bottom])")
        folded = not run("return document.querySelector('details.verdict').open")
        driver.save_screenshot(str(screenshots / "first-screen.png"))
        # A word a few BERT questions and many tool questions use: the filter lists its first eight hits.
        hits = type_in_filter(driver, "exit")[2]
        errors = browser.console_errors(driver)
    in_view = [(href, href not in tool, bottom <= fold) for href, bottom in questions]
    evidence.table("the first screen (every-claim.html)", ["window", "visible height", "filter, menu, details: bottom"],
                   [("×".join(map(str, browser.LAPTOP)), fold, bottoms)])
    evidence.table("start here", ["question", "about BERT", "above the fold"], in_view)
    evidence.table("the filter's hits for 'exit', in order", ["hit", "in the appendix"],
                   [(href, href in tool) for href in hits])
    evidence.text("screenshot", str(screenshots / "first-screen.png"))
    assert errors == []
    assert all(bottom <= fold for bottom in bottoms) and folded
    assert sum(bert and seen for _, bert, seen in in_view) >= 5
    order = [href in tool for href in hits]
    assert order == sorted(order) and order.count(False) and order.count(True), "BERT's hits first, then the appendix's"


DEAD_LINKS = """const ids = new Set([...document.querySelectorAll('[id]')].map(e => e.id));
const hrefs = [...document.querySelectorAll('a[href^="#"]')].map(a => a.getAttribute('href'));
return [hrefs.length, hrefs.filter(h => !ids.has(decodeURIComponent(h.slice(1)))),
        document.querySelectorAll('.col-claim a[href^="#"]').length];"""


def type_in_filter(driver, text: str) -> tuple[str, bool, list[str]]:
    """Puts ``text`` in the filter box as typing does (an input event): what the filter then says, whether that is
    shown, and the hits it lists (their links)."""
    return tuple(driver.execute_script("""const box = document.getElementById('handbook-filter');
        box.value = arguments[0];
        box.dispatchEvent(new Event('input'));
        const count = document.getElementById('filter-count');
        return [count.textContent, count.getBoundingClientRect().height > 0,
                [...document.querySelectorAll('#filter-hits li:not(.more) > a')].map(a => a.getAttribute('href'))]""",
                                       text))


def counts_in(data: dict) -> dict[str, int]:
    """The front page's counts, recomputed from report.json's claims and counterfeit runs."""
    outcomes = [claim["outcome"] for claim in data["claims"]]
    ran = [t for t in data["counterfeit_runs"] if t["outcome"] != "skipped"]
    return {"verified": outcomes.count("passed"), "failed": outcomes.count("failed") + outcomes.count("error"),
            "not_run": len(outcomes) - outcomes.count("passed") - outcomes.count("failed") - outcomes.count("error"),
            "caught": sum(t["outcome"] == "passed" for t in ran), "counterfeit_runs": len(ran)}


def location_hash(driver) -> str:
    return driver.execute_script("return location.hash")


@pytest.mark.browser
def test_the_attention_view_draws_every_head_enlarges_one_on_click_and_redraws_for_each_layer_and_batch(
        written_report, model_cache, family, screenshots, evidence):
    """In headless Chromium at 1366×768, the attention view of the handbook and of the trace command's pages (the model under test's, the bundled GPT-2's) draws every head of a layer, enlarges the one clicked, redraws for another layer and batch, exactly the stored values, no label cut off.

    The view is checked where a reader meets it: the written report (its
    three example batches) and the pages ``python -m bertspec trace TEXT
    --html`` writes for the model under test and for the bundled GPT-2 (a
    causal view), written beside the report. In each, every head of the layer is drawn as a small map; clicking one
    enlarges it; choosing another layer or batch redraws both. After each
    action the enlarged cells hold exactly the float32 values the page
    embeds for what the selects and the chosen head say (each a float32,
    Math.fround leaves it unchanged), every label lies inside its svg (none
    clipped, the [PAD] marks included) at 10 px or more, and the console has
    no error. The report's figures are shown at a scale where their 9 pt
    labels are 10 px or more. A screenshot of each view is saved in
    screenshots/ beside the report.

    Claim ID: P5.1b
    Question: Does the attention view work in a browser, for the handbook's examples and for my own sentence?
    问题：attention 视图在浏览器里能用吗？对手册的示例和我自己的句子都能用吗？
    中文：在 1366×768 的无界面 Chromium 中，手册与 trace 命令页面（被测模型的、自带 GPT-2 的）上的 attention 视图画出一层的每个头，放大被点击的那个，换层、换 batch 时重绘，数值与存储的完全相同，没有被截断的标签。
    原因：在读者看到视图的地方检查它：生成的报告（三个示例 batch），以及 python -m bertspec trace 文本 --html 为被测模型与自带的 GPT-2
    （因果视图）写出、放在报告旁边的页面。
    每个页面中，一层的每个头都画成一个小图；点击其中一个即放大；选择另一层或另一个 batch 时两者都重绘。每次操作之后，放大图的格子恰好是页面
    为选择框与所选的头所嵌入的 float32 值（每个都是 float32，Math.fround 不改变它），每个标签都在它的 svg 之内（没有被截断，[PAD] 标记也是），
    字号至少 10 px，控制台没有错误。报告中的图按 9 pt 标签显示为至少 10 px 的比例显示。每个视图的截图保存在报告旁的 screenshots/ 中。
    """
    reason = browser.missing()
    if reason:
        pytest.skip(reason)
    bert = model_cache("eager", family)
    trace_view = written_report.parent / "trace.html"
    assert cli(["trace", bert.texts.sentence, "--html", str(trace_view)]
               + ([] if bert.is_default else ["--model", str(bert.folder)])) == 0
    decoder_view = written_report.parent / "trace-gpt2.html"
    assert cli(["trace", PREFIX, "--model", str(source.resolve(family="gpt2").folder), "--html", str(decoder_view)]) == 0
    rows, errors = [], []
    with browser.chromium(browser.LAPTOP) as driver:
        for page in (written_report, trace_view, decoder_view):
            browser.open_page(driver, page)
            rows += [(page.name, *row) for row in exercise_the_view(driver, screenshots / f"attention-{page.stem}.png")]
            errors += browser.console_errors(driver)
        browser.open_page(driver, written_report)
        figures = driver.execute_script("return [...document.querySelectorAll('img.figure')].map(i => [i.alt, "
                                        "i.naturalWidth, i.getBoundingClientRect().width])")
    label_px = [(alt, natural, shown, round(LABEL_PT * 4 / 3 * shown / natural, 1)) for alt, natural, shown in figures]
    evidence.table("the view after each action", ["page", "action", "enlarged (aria-label)", "heads drawn", "heads",
                                                  "cells equal the embedded float32", "labels outside their svg",
                                                  "labels under 10 px"], rows)
    evidence.table("figures: a 9 pt label as shown", ["figure", "natural width", "shown width", "label (px)"], label_px)
    evidence.text("screenshots", "\n".join(str(p) for p in sorted(screenshots.glob("attention-*.png"))))
    assert errors == []
    assert {page for page, *_ in rows} == {written_report.name, trace_view.name, decoder_view.name}
    for page, action, label, drawn, heads, exact, outside, small in rows:
        assert drawn == heads and exact and outside == [] and small == 0, (page, action)
        assert action.split(": ")[1] in label, (page, action, label)
    assert label_px and all(px >= 10 for *_, px in label_px)


# What the first attention view on a page shows: its data, the selects' and the chosen head's state, what the
# enlarged map draws, and the labels that leave their svg or are smaller than 10 px.
VIEW_STATE = """const v = document.querySelector('.attention-view');
const big = v.querySelector('svg.attention-heatmap'), texts = [...v.querySelectorAll('svg text')];
const outside = texts.filter(t => { const s = t.closest('svg').getBoundingClientRect(), r = t.getBoundingClientRect();
  return r.left < s.left - 0.5 || r.right > s.right + 0.5 || r.top < s.top - 0.5 || r.bottom > s.bottom + 0.5; });
const cells = [...big.querySelectorAll('rect[data-p]')].map(r => +r.dataset.p);
return {data: v.querySelector('script').textContent, label: big.getAttribute('aria-label'),
  batch: +v.querySelector('select.batch').value, row: +v.querySelector('select.sequence').value,
  layer: +v.querySelector('select.layer').value, heads: v.querySelectorAll('button.head svg').length,
  head: [...v.querySelectorAll('button.head')].findIndex(b => b.getAttribute('aria-pressed') === 'true'),
  cells: cells, float32: cells.every(p => Math.fround(p) === p), outside: outside.map(t => t.textContent),
  small: texts.filter(t => parseFloat(getComputedStyle(t).fontSize) < 10).length};"""
CHOOSE = "const s = document.querySelector('.attention-view select.' + arguments[0]); s.value = arguments[1];" \
         "s.dispatchEvent(new Event('change'));"


def exercise_the_view(driver, screenshot) -> list[tuple]:
    """Open state, click the last head, choose the last layer, then each other batch: per action, what it asked for
    (``"what: wanted in the label"``) and what the view then drew."""
    run = driver.execute_script
    data = json.loads(run(VIEW_STATE)["data"])
    run("document.querySelector('.attention-view').scrollIntoView()")
    driver.save_screenshot(str(screenshot))
    last_head, last_layer = data["heads"] - 1, data["layers"] - 1
    actions = [("opened: layer 0", None),
               (f"clicked head {last_head}: head {last_head}",
                lambda: run("document.querySelectorAll('.attention-view button.head')[arguments[0]].click()", last_head)),
               (f"chose layer {last_layer}: layer {last_layer}", lambda: run(CHOOSE, "layer", str(last_layer)))]
    actions += [(f"chose batch {b}: {batch['name']}", lambda b=b: run(CHOOSE, "batch", str(b)))
                for b, batch in enumerate(data["batches"]) if b]
    rows = []
    for action, act in actions:
        if act:
            act()
        state = run(VIEW_STATE)
        stored = attention_probs(data["batches"][state["batch"]])[state["layer"], state["row"], state["head"]]
        exact = state["float32"] and state["cells"] == stored.flatten().double().tolist()
        rows.append((action, state["label"], state["heads"], data["heads"], exact, state["outside"], state["small"]))
    return rows
