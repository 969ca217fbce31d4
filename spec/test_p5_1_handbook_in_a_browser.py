"""Chapter P5.1a — the handbook in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven
by Selenium) opens the written page as a reader would.
"""

import pytest

from bertspec.handbook import browser

# ---- the page in a real browser ----

@pytest.mark.browser
def test_the_handbook_opens_in_a_browser_without_errors_and_every_q_and_a_link_lands_on_its_claim(written_report, evidence):
    """Opened in headless Chromium, the handbook shows its front page, every Q&A link lands on its claim, and the attention view switches layer and head.

    What a reader sees is checked in a real browser (Debian's chromium and
    chromium-driver, driven by Selenium; nothing is downloaded): no console
    errors; the front page and the Q&A index are there; following an index
    link scrolls its claim's section into view; every section has both
    languages and evidence; every figure has a non-zero size no wider than
    the page; the attention view redraws when another layer or head is
    chosen. Screenshots are saved beside the report.

    Claim ID: P5.1a
    Question: Does the handbook work when a person opens it in a browser?
    问题：在浏览器里打开手册，它能正常使用吗？
    中文：在无界面 Chromium 中打开，手册显示首页，每个问答链接都跳到对应结论，attention 视图能切换层与头。
    原因：读者看到的内容在真实浏览器中检查（Debian 的 chromium 与 chromium-driver，由 Selenium 驱动，不下载任何东西）：没有控制台错误；
    首页与问答索引都在；点击索引链接会把对应结论的小节滚动到视野中；每个小节都有两种语言和证据；每个图的尺寸非零且不超过页面宽度；
    选择另一层或另一个头时 attention 视图会重绘。截图保存在报告旁边。
    """
    reason = browser.missing()
    if reason:
        pytest.skip(reason)
    shots = written_report.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    with browser.chromium() as driver:
        driver.get(written_report.as_uri())
        driver.save_screenshot(str(shots / "front.png"))
        run = driver.execute_script
        links = run("return [...document.querySelectorAll('#qa-index li.qa > a')].map(a => a.getAttribute('href'))")
        landed = []
        for href in links:
            run("document.querySelector(`#qa-index a[href='${arguments[0]}']`).click()", href)
            top = run("return document.getElementById(arguments[0].slice(1)).getBoundingClientRect().top", href)
            landed.append((href, location_hash(driver) == href, round(top)))
        driver.save_screenshot(str(shots / "claim.png"))
        section_facts = run("""return [...document.querySelectorAll('section.claim')].map(s => [s.id,
            !!s.querySelector('[lang=zh]') && s.querySelector('[lang=zh]').textContent.length > 0,
            !!s.querySelector('[lang=en]') && s.querySelector('[lang=en]').textContent.length > 0,
            s.querySelectorAll('.run .record').length])""")
        figures = run("""return [...document.querySelectorAll('img.figure')].map(i => [i.naturalWidth,
            i.getBoundingClientRect().width, document.documentElement.clientWidth])""")
        views = run("return document.querySelectorAll('.attention-view svg').length")
        before = run("return document.querySelector('.attention-view svg').getAttribute('aria-label')")
        switched = []
        for index, value in ((1, "1"), (2, "1")):  # the layer select, then the head select
            run("const s = document.querySelectorAll('.attention-view select')[arguments[0]];"
                "s.value = arguments[1]; s.dispatchEvent(new Event('change'));", index, value)
            switched.append(run("return document.querySelector('.attention-view svg').getAttribute('aria-label')"))
        run("document.querySelector('.attention-view').scrollIntoView()")
        driver.save_screenshot(str(shots / "attention-view.png"))
        errors = browser.console_errors(driver)
    evidence.table("Q&A links", ["link", "lands on it (location.hash)", "section top (px)"], landed)
    evidence.table("sections", ["anchor", "Chinese", "English", "evidence records"], section_facts)
    evidence.table("figures", ["natural width", "shown width", "page width"], figures)
    evidence.table("attention view", ["views", "before", "layer 1", "layer 1, head 1"], [(views, before, *switched)])
    evidence.text("screenshots", "\n".join(str(p) for p in sorted(shots.glob("*.png"))))
    assert errors == []
    assert links and all(ok and 0 <= top < 200 for _, ok, top in landed)
    assert section_facts and all(zh and en and records for _, zh, en, records in section_facts)
    assert figures and all(natural > 0 and 0 < shown <= page for natural, shown, page in figures)
    assert views >= 1 and before.endswith("layer 0, head 0") and switched == [
        before.replace("layer 0", "layer 1"), before.replace("layer 0, head 0", "layer 1, head 1")]


def location_hash(driver) -> str:
    return driver.execute_script("return location.hash")
