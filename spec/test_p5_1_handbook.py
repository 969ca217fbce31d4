"""Chapter P5.1 — the handbook this run writes: its sections, figures and code examples, best practices and
misconceptions.

The handbook is the report of ``pytest spec/ --html=report.html``. Claims about
the page as a whole read a report written for a few claims by a pytest run in a
subprocess (the ``written_report`` fixture, bertspec.proof.pages); the browser
claims (spec/test_p5_1_handbook_in_a_browser.py) open such pages in headless
Chromium.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from bertspec.handbook import claims, knowledge, render
from bertspec.handbook.evidence import attention_batch, attention_probs
from bertspec.models import versions
from bertspec.proof import counterfeits, scope
from bertspec.proof.examples import masked_batch, padded_batch
from bertspec.proof.pages import (
    MAX_REPORT_BYTES,
    REPORTED,
    ROOT,
    SPEC,
    sections,
    text_of,
)
from bertspec.proof.tolerances import TOL


def test_the_report_gives_every_claim_that_ran_a_bilingual_section_one_click_from_the_q_and_a_index(written_report, evidence):
    """The written report gives each claim that ran one section, in both languages, linked from the Q&A index, with its evidence.

    The handbook is pytest-html's report with its summary filled by
    bertspec.handbook.render: a front page naming the model and the versions it
    verified, the Q&A index, then one section per claim (not per test id)
    holding the question, the answer and the explanation in Chinese and
    English and the evidence of every parametrization side by side. The same
    content is written as JSON beside the page. Checked on a report written by
    a pytest run of four claims: every claim in the JSON has its anchor, a
    section and an index link; the shared style is emitted once; nothing is
    fetched from elsewhere; the page stays under 2 MB.

    Claim ID: P5.1a
    Question: What does the report show a reader, and how do they find a claim in it?
    问题：报告给读者看什么？怎样在报告里找到一条结论？
    中文：生成的报告为每条运行过的结论提供一个中英文小节，从问答索引一键可达，并附证据。
    原因：手册就是 pytest-html 的报告，其摘要部分由 bertspec.handbook.render 填写：首页写明验证所用的模型与版本，然后是问答索引，
    再是每条结论（而不是每个测试 id）一个小节，包含中英文的问题、回答与解释，以及每种参数化并排的证据；同样的内容以 JSON
    写在报告旁边。这里检查由 pytest 运行四条结论写出的报告：JSON 中的每条结论都有锚点、小节和索引链接；共用样式只出现一次；
    不从别处加载任何内容；页面小于 2 MB。
    """
    page = written_report.read_text(encoding="utf-8")
    data = json.loads(written_report.with_suffix(".json").read_text(encoding="utf-8"))
    found = sections(page)
    rows = []
    for claim in data["claims"]:
        section = found.get(claim["anchor"], "")
        text = text_of(section)
        rows.append((claim["claim_id"], claim["anchor"], claim["outcome"], len(claim["runs"]),
                     sum(len(run["evidence"]) for run in claim["runs"]), f'href="#{claim["anchor"]}"' in page))
        assert section, claim["anchor"]
        for field in ("question", "question_zh", "sentence", "sentence_zh"):
            assert text_of(render.inline(claim[field])) in text, (claim["anchor"], field)
        assert all(run["evidence"] for run in claim["runs"]), f"{claim['anchor']}: a run without evidence"
        assert f'href="#{claim["anchor"]}"' in page, f"{claim['anchor']} is not linked from the index"
    evidence.table("claims in the written report", ["ID", "anchor", "outcome", "runs", "records", "in the index"], rows)
    evidence.table("the page", ["bytes", "handbook styles", "fetched resources"],
                   [(len(page.encode()), page.count("bertspec handbook. Text colours"),
                     len(re.findall(r'(?:src|href)="https?://(?!pypi)', page)))])
    assert {c["function"] for c in data["claims"]} == {r.split("::")[1] for r in REPORTED}
    assert page.count("bertspec handbook. Text colours") == 1
    assert not re.findall(r'src="https?://', page), "the page must not fetch anything"
    assert len(page.encode()) < MAX_REPORT_BYTES
    for fact in (versions.VERSION, torch.__version__.split("+")[0], "sha256", data["identity"]["size / 规模"]):
        assert fact in page


# ---- P5.1b figures and code examples ----

@pytest.mark.counterfeits("mask_dropped")
def test_the_interactive_attention_view_holds_exactly_the_probabilities_the_model_computed(bert, evidence):
    """The interactive attention view shows every layer and head of three example batches, with their tokens, exactly the probabilities the model computed, and [PAD] keys at exactly 0.

    The view (inline JavaScript drawing SVG in the one report file, nothing
    fetched) shows a layer's heads side by side, one of them enlarged on a
    click, on a colour scale from 0 to 1, for three of the claims' example
    batches: the plan's sentence beside a shorter, padded one; a sentence pair
    with its token types; three sentences with four [MASK]s. It is fed the
    probabilities the tracer recorded: observed on eager, derived from the
    kernel's inputs on sdpa (a P1 claim checks they reproduce the kernel's
    output). They are stored as their float32 bytes, so the view holds exactly
    what the model computed: every value read back equals the traced tensor
    bit for bit, every [PAD] key is 0 and every real key positive. Unlike
    bertviz, the view is offline and marks padding.

    Claim ID: P5.1b
    Question: Can I look at every layer's and head's attention, padding included?
    问题：能看到每一层、每个头的 attention 吗？padding 也能看到吗？
    中文：交互式 attention 视图展示三个示例 batch 的每一层、每个头，带 token 标签，数值与模型算出的概率完全相同，[PAD] key 处严格为 0。
    原因：视图（报告文件中内联的 JavaScript 绘制 SVG，不加载任何外部内容）把一层的所有头并排画出，点击其中一个即放大，颜色刻度从 0 到 1；
    三个 batch 取自结论的示例：计划中的句子与一个较短、带 padding 的句子；一个带 token type 的句子对；三个句子、四个 [MASK]。
    视图使用 tracer 记录的概率：eager 上是观测值，sdpa 上由内核输入推导（P1 的一条结论检查它们复现内核输出）。概率按 float32
    的字节存储，因此视图中的值与模型算出的完全一致：读回的每个值与 trace 的张量逐位相等，每个 [PAD] key 为 0，每个真实 key 为正。
    与 bertviz 不同，视图离线可用并标出 padding。
    """
    batches = {"a padded batch": padded_batch(bert), "a sentence pair (token types 0 and 1)": bert.encode(*bert.texts.pair),
               "several [MASK]s": masked_batch(bert)}
    traced = []
    for name, batch in batches.items():
        scope.attends_globally(bert, batch.input_ids.shape[1])
        trace, _ = bert.trace(batch)
        probs = trace.stack("probs")
        traced.append((attention_batch(name, bert, batch, probs), probs))
    evidence.attention_view("attention probabilities, every layer and head (choose a batch, a sequence and a layer; "
                            "click a head to enlarge it)", [view for view, _ in traced],
                            derived=trace.all("probs")[0].source == "derived")
    view = evidence.records[-1]
    rows = []
    for shown_batch, (_, probs) in zip(view["batches"], traced):
        shown = attention_probs(shown_batch)
        pad_keys = torch.tensor(shown_batch["padded"])[None, :, None, None, :].expand_as(shown)
        rows.append((shown_batch["name"], tuple(shown.shape), int(pad_keys.sum()), torch.equal(shown, probs.float())))
        assert torch.equal(shown, probs.float()), shown_batch["name"]
        assert bool((shown[pad_keys] == 0).all()) and bool((shown[~pad_keys] > 0).all()), shown_batch["name"]
    evidence.table("what the view holds, read back", ["batch", "shape (L, B, H, T, T)", "[PAD]-key entries",
                                                      "equal to the traced float32 tensor"], rows)
    assert (view["layers"], view["heads"]) == (bert.config.num_hidden_layers, bert.config.num_attention_heads)
    assert any(any(row) for row in view["batches"][0]["padded"]), "the first batch must show [PAD] keys"
    assert len(view["batches"][2]["tokens"]) > 1 and sum(
        row.count(bert.tokenizer.mask_token) for row in view["batches"][2]["tokens"]) > 1


def readme_python_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.search(r"## Tracing any forward pass.*?```python\n(.*?)```", readme, re.S).group(1)


def test_the_readme_python_example_runs_as_written_and_returns_the_layers_probabilities(evidence):
    """README's Python example runs as written: it loads the bundled model, traces one forward pass and returns layer 0's probabilities.

    A code example that no longer runs teaches the wrong thing. The example is
    read from README.md and executed verbatim; what it leaves in ``probs`` must
    be one attention distribution per head and query, [1, heads, T, T], every
    row summing to 1.

    Claim ID: P5.1b
    Question: Does the README's Python example actually run?
    问题：README 里的 Python 示例真的能运行吗？
    中文：README 的 Python 示例按原样运行：加载自带模型、trace 一次前向传播，并返回第 0 层的注意力概率。
    原因：不能运行的代码示例会教错东西。示例从 README.md 读出并原样执行；它留在 probs 中的必须是每个头、每个 query 一个注意力分布，
    形状为 [1, heads, T, T]，每行之和为 1。
    """
    code = readme_python_example()
    evidence.code("README.md: Tracing any forward pass", code)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the point is to run the README's own code
    probs, bert = namespace["probs"], namespace["bert"]
    t = namespace["batch"].input_ids.shape[1]
    evidence.table("what the example returns", ["probs shape", "row sums min", "row sums max"],
                   [(tuple(probs.shape), probs.sum(-1).min(), probs.sum(-1).max())])
    assert probs.shape == (1, bert.config.num_attention_heads, t, t)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), **TOL["prob_sum"])


# ---- P5.1c / P5.1d findings, practices and misconceptions ----

def test_every_best_practice_points_at_the_claims_that_show_what_goes_wrong_otherwise(evidence):
    """Each key finding and best practice in the handbook names the claims that show what goes wrong without it, and they exist.

    A practice is only as good as the evidence behind it: each entry of
    bertspec.handbook.knowledge.PRACTICES names, by test function, the claims whose
    evidence shows the failure it prevents (NaN loss, shifted positions, a
    [PAD] that leaks into attention, ...). A renamed or deleted claim would
    leave a practice without proof, so every name must be a claim in spec/.

    Claim ID: P5.1c
    Question: What are the best practices, and what goes wrong without them?
    问题：有哪些最佳实践？不遵守会出什么问题？
    中文：手册中的每条关键发现与最佳实践都指出展示“不这样做会怎样”的结论，且这些结论确实存在。
    原因：实践的可信度取决于背后的证据：bertspec.handbook.knowledge.PRACTICES 的每一项按测试函数名指出那些证据展示了它所避免的失败
    （NaN loss、位置错位、[PAD] 泄漏进 attention……）。被改名或删除的结论会让实践失去证明，因此每个名字都必须是 spec/ 中的结论。
    """
    discovered = claims.discover(SPEC)
    rows = [(p.practice, len(p.shown_by), all(f in discovered for f in p.shown_by)) for p in knowledge.PRACTICES]
    evidence.table("best practices", ["practice", "claims", "all exist"], rows)
    assert len(knowledge.PRACTICES) >= 8
    for practice in knowledge.PRACTICES:
        assert practice.shown_by and all(f in discovered for f in practice.shown_by), practice.practice


def test_every_misconception_would_fail_a_claim_because_a_counterfeit_embodies_it(evidence):
    """Each common misconception is embodied by a counterfeit BERT, and every claim that refutes it must fail on that counterfeit.

    "The all-zero mask hides everything", "[MASK] gets attention_mask 0",
    "logits are probabilities", ...: for each, bertspec.proof.counterfeits holds the
    model BERT would be if the misconception were true, and the claims that
    refute it declare that counterfeit (``@pytest.mark.counterfeits``), so each
    refuting claim also runs on it, as a test item that must go red. This claim checks the bookkeeping: at least 10 misconceptions, each
    counterfeit registered, each refuting claim present and declaring it.

    Claim ID: P5.1d
    Question: Which common misconceptions about BERT are wrong, and how do we know?
    问题：关于 BERT 有哪些常见误解？怎么知道它们是错的？
    中文：每个常见误解都由一个反例 BERT 体现，驳斥它的每条结论都必须在那个反例上失败。
    原因：“全0 mask 隐藏一切”、“[MASK] 的 attention_mask 是 0”、“logits 就是概率”……对每个误解，bertspec.proof.counterfeits 都有
    “假如误解成立 BERT 会是什么样”的模型，驳斥它的结论声明这个反例（@pytest.mark.counterfeits），每条驳斥结论
    也作为一个必须失败的测试项在反例上运行。本结论检查这套对应关系：至少 10 个误解，每个反例都已注册，每条驳斥结论都存在并声明了它。
    """
    discovered = claims.discover(SPEC)
    rows = []
    for m in knowledge.MISCONCEPTIONS:
        declared = [m.counterfeit in discovered[f].counterfeits if f in discovered else False for f in m.refuted_by]
        rows.append((m.wrong, m.counterfeit, m.counterfeit in counterfeits.REGISTRY, len(m.refuted_by), all(declared)))
        assert m.counterfeit in counterfeits.REGISTRY, m.counterfeit
        assert m.refuted_by and all(declared), f"{m.wrong}: a refuting claim is missing or does not declare {m.counterfeit}"
    evidence.table("misconceptions", ["misconception", "counterfeit", "registered", "refuting claims", "all declare it"], rows)
    assert len(knowledge.MISCONCEPTIONS) >= 10


# One claim, twice: without an evidence record and with one.
CLAIM_AND_ITS_EVIDENCE = '''
def claim(evidence, record):
    """A claim that records {name}.

    Why it holds: it asserts, and shows {name}.

    Claim ID: P5.1a
    Question: Does a claim pass without evidence?
    问题：没有证据的结论能通过吗？
    中文：记录了{name}的结论。
    原因：它做了断言，并展示{name}。
    """
    assert "[PAD]" != "[MASK]"
    if record:
        evidence.text("shown", "the value")


def test_showing_nothing(evidence):
    claim(evidence, record=False)


def test_showing_its_evidence(evidence):
    claim(evidence, record=True)


test_showing_nothing.__doc__ = claim.__doc__.format(name="no evidence")
test_showing_its_evidence.__doc__ = claim.__doc__.format(name="one evidence record")
'''


def test_a_claim_that_passes_without_recording_its_evidence_is_reported_failed(tmp_path, evidence):
    """A claim that passes but records no evidence is reported failed, with a line that says how to record it; the same claim with one evidence record passes.

    The handbook shows, for every claim, the evidence it asserted on: a pass
    that shows nothing is a verdict without its grounds, and a reader cannot
    tell it from a claim that asserts nothing. The plugin enforces it when a
    test's report is made (bertspec.handbook.collect.demand_evidence), so no
    claim can slip through; counterfeit runs (their evidence is not read),
    benchmarks (their evidence is the saved run) and test files that are no
    claims are exempt. Checked by one pytest run, in a subprocess, of the same
    claim twice: without an evidence record and with one.

    Claim ID: P5.1a
    Question: Can a claim pass in the handbook without showing any evidence?
    问题：一条结论能不展示任何证据就在手册里通过吗？
    中文：通过了却没有记录任何证据的结论会被报告为失败，并有一行说明如何记录；同一条结论记录一条证据后通过。
    原因：手册为每条结论展示它所断言的证据：不展示任何东西的通过只是没有依据的判决，读者也分不清它和什么都不断言的结论。插件在生成测试报告时
    强制这一点（bertspec.handbook.collect.demand_evidence），所以没有结论能漏过；反例运行（其证据不被读取）、基准（其证据是保存的运行）
    以及不是结论的测试文件除外。这里在子进程中用一次 pytest 运行同一条结论两次：一次不记录证据，一次记录一条证据。
    """
    from bertspec.handbook.collect import NO_EVIDENCE

    (tmp_path / "test_claim.py").write_text(CLAIM_AND_ITS_EVIDENCE, encoding="utf-8")
    # The spec's own plugin and fixtures (the root conftest, loaded as a plugin), on a file outside spec/.
    run = subprocess.run([sys.executable, "-m", "pytest", "test_claim.py", "-p", "bertspec.plugin", "-p", "conftest",
                          "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir", str(tmp_path), "-v", "-rf"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"})
    outcomes = dict(re.findall(r"^test_claim\.py::(\w+) (PASSED|FAILED)", run.stdout, re.MULTILINE))
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED")]
    evidence.table("one claim, run by pytest without and with an evidence record", ["test", "outcome"],
                   sorted(outcomes.items()))
    evidence.text("pytest's line", "\n".join(failed))
    assert outcomes == {"test_showing_nothing": "FAILED", "test_showing_its_evidence": "PASSED"}, run.stdout[-2000:]
    assert failed and NO_EVIDENCE.split(":")[0] in failed[0]
