"""Chapter P5 — the knowledge base: the handbook this run writes, its figures and code examples,
misconceptions, best practices, quick reference, glossary, and the toolkit as a user meets it.

The handbook is the report of ``pytest spec/ --html=report.html``. Claims about
the page as a whole read a report written for a few claims by a pytest run in a
subprocess (``written_report``), or render the handbook for every claim in
spec/ from their docstrings; the browser claim opens the written page in
headless Chromium.
"""

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bertspec.handbook import browser, claims, collect, knowledge, render
from bertspec.proof import counterfeits, scope
from bertspec.tracing import masks
from bertspec.models import versions
from bertspec.tracing.modes import dropout_probabilities
from bertspec.proof.tolerances import TOL

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec"
# A few claims whose report shows every kind of evidence: tables, a figure, the attention view, the card.
REPORTED = [
    "spec/test_p2_3_mask_arithmetic.py::test_padded_keys_get_exactly_zero_attention_probability",
    "spec/test_p2_3_mask_arithmetic.py::test_a_padded_key_stays_masked_along_the_whole_path_to_its_probability",
    "spec/test_p5_knowledge_base.py::test_the_interactive_attention_view_holds_exactly_the_probabilities_the_model_computed",
    "spec/test_p5_knowledge_base.py::test_the_quick_reference_card_is_read_off_the_model_under_test",
]
MAX_REPORT_BYTES = 2 * 2**20


@pytest.fixture(scope="module")
def written_report(settings, tmp_path_factory) -> Path:
    """report.html written by a pytest run of the REPORTED claims, as a user runs the spec."""
    folder = tmp_path_factory.mktemp("handbook")
    model = ["--bert-model", settings.model_path] if settings.model_path else []
    run = subprocess.run([sys.executable, "-m", "pytest", *REPORTED, f"--html={folder / 'report.html'}", "-q",
                          "-p", "no:cacheprovider", "-p", "no:randomly", *model],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return folder / "report.html"


def sections(page: str) -> dict[str, str]:
    """anchor -> the HTML of that claim's section."""
    return dict(re.findall(r'<section class="claim [^"]*" id="([^"]+)" data-filter>(.*?)</section>', page, re.S))


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


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


def test_every_claim_in_the_spec_renders_as_a_question_with_its_answer_in_both_languages(settings, evidence):
    """Every claim in spec/ renders as a handbook section: its question and answer in Chinese and English, under its stable anchor.

    The Q&A knowledge base is the claims' docstrings: each carries the question
    a learner asks (``Question:`` and ``问题：``), the answer (its first line,
    and ``中文：``) and the explanation in both languages. Here every test
    function in spec/ (read from the files, so a -k selection does not hide
    one) is fed to the handbook as a passed claim; the rendered page must give
    each its section under ``<claim ID>-<name>``, with all four texts, and an
    entry in the Q&A index of its chapter.

    Claim ID: P5.2c
    Question: Does every claim appear in the handbook as a question with its answer?
    问题：每条结论都以“问题 + 回答”的形式出现在手册里吗？
    中文：spec/ 中的每条结论都渲染为手册的一个小节：中英文的问题与回答，放在稳定的锚点下。
    原因：问答知识库就是结论的 docstring：每条都有学习者会问的问题（Question: 与 问题：）、回答（第一行与 中文：）以及
    两种语言的解释。这里把 spec/ 中的每个测试函数（从文件读取，所以 -k 选择不会漏掉任何一个）当作通过的结论交给手册；
    渲染出的页面必须在 <claim ID>-<名称> 锚点下给每条结论一个小节，包含全部四段文字，并在其章节的问答索引中有一项。
    """
    discovered = claims.discover(SPEC)
    collector = collect.Collector()
    for claim in discovered.values():
        collector.add(collect.synthetic_report(claim))
    page = render.Page(collector, settings).html()
    found = sections(page)
    rows = []
    for claim in discovered.values():
        parsed = claims.parse(claim.doc)
        anchor = claims.anchor(parsed.claim_id, claim.function)
        text = text_of(found.get(anchor, ""))
        present = [text_of(render.inline(t)) in text
                   for t in (parsed.question, parsed.question_zh, parsed.sentence, parsed.sentence_zh)]
        rows.append((parsed.claim_id, claim.function, *present, f'href="#{anchor}"' in page))
        assert all(present) and f'href="#{anchor}"' in page, anchor
    evidence.table("every claim in spec/", ["ID", "claim", "question", "问题", "answer", "回答", "in the index"], rows)
    assert len(found) == len(discovered)


def test_every_test_in_the_spec_has_a_docstring_in_the_claim_format(request, evidence):
    """Every test in spec/ is a claim: a sentence, its explanation, a known ID, the question in both languages, and the Chinese.

    The handbook is built from these docstrings (bertspec.handbook.claims.parse): a
    test without one would be a verdict without a reason, and a claim without
    its question could not be found from the Q&A index.

    Claim ID: P5.2c
    Question: What must every test's docstring contain?
    问题：每个测试的 docstring 必须包含什么？
    中文：spec/ 中的每个测试都是一条结论：一句话结论、解释、已知的 claim ID、两种语言的问题，以及中文的结论与解释。
    原因：手册由这些 docstring 生成（bertspec.handbook.claims.parse）：没有 docstring 的测试只有结论没有理由，没有问题的结论无法从问答索引找到。
    """
    problems, ids = [], set()
    for item in request.session.items:
        try:
            ids.add(claims.parse(item.function.__doc__).claim_id)
        except claims.ClaimFormatError as err:
            problems.append(f"{item.nodeid}: {err}")
    evidence.table("docstrings", ["tests", "claim IDs used", "not in the format"],
                   [(len(request.session.items), len(ids), len(problems))])
    assert problems == []


# ---- P5.1b figures and code examples ----

@pytest.mark.counterfeits("mask_dropped")
def test_the_interactive_attention_view_holds_exactly_the_probabilities_the_model_computed(bert, evidence):
    """The interactive attention view shows every layer and head of a padded batch, with the tokens, and [PAD] keys at exactly 0.

    The view (inline JavaScript drawing SVG in the one report file, nothing
    fetched) is fed the probabilities the tracer recorded: observed on eager,
    derived from the kernel's inputs on sdpa (a P1 claim checks they reproduce
    the kernel's output). It stores an exact zero as 0 and every other value to
    4 significant digits, so "exactly 0" stays distinguishable from "rounds to
    0": the test checks that every [PAD] key holds 0 and every real key a
    positive value within that rounding. Unlike bertviz, the view is offline
    and marks padding.

    Claim ID: P5.1b
    Question: Can I look at every layer's and head's attention, padding included?
    问题：能看到每一层、每个头的 attention 吗？padding 也能看到吗？
    中文：交互式 attention 视图展示 padding batch 的每一层、每个头，带 token 标签，[PAD] key 处严格为 0。
    原因：视图（报告文件中内联的 JavaScript 绘制 SVG，不加载任何外部内容）使用 tracer 记录的概率：eager 上是观测值，sdpa 上由内核
    输入推导（P1 的一条结论检查它们复现内核输出）。精确的 0 存为 0，其余值保留 4 位有效数字，因此“严格为 0”与“舍入为 0”可以区分：
    测试检查每个 [PAD] key 为 0、每个真实 key 为正并在舍入范围内。与 bertviz 不同，视图离线可用并标出 padding。
    """
    batch = bert.example()
    scope.attends_globally(bert, batch.input_ids.shape[1])
    trace, _ = bert.trace(batch)
    probs = trace.stack("probs")  # (L, B, H, T, T)
    padded = (batch.attention_mask.cpu() == 0).tolist()
    tokens = [bert.tokens(batch, row) for row in range(len(padded))]
    evidence.attention_view("attention probabilities, every layer and head (select a sequence, layer and head)",
                            tokens, probs, padded, derived=trace.all("probs")[0].source == "derived")
    view = evidence.records[-1]
    shown = torch.tensor(view["probs"], dtype=torch.float64)
    pad_keys = torch.tensor(padded)[None, :, None, None, :].expand_as(shown)
    assert (view["layers"], view["heads"]) == (bert.config.num_hidden_layers, bert.config.num_attention_heads)
    assert bool(pad_keys.any()) and bool((shown[pad_keys] == 0).all())
    assert bool((shown[~pad_keys] > 0).all())
    torch.testing.assert_close(shown, probs.double(), atol=0.0, rtol=5e-4)


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


# ---- P5.2a the toolkit ----

def test_the_tracer_records_mask_scores_and_probabilities_in_a_bert_class_it_was_not_written_for(bert, as_class, evidence):
    """The tracer records the mask, scores and probabilities of every layer in the bare encoder (BertModel) as well as in BertForMaskedLM.

    The toolkit finds each role through the family's anatomy (bertspec.models.anatomy),
    trying each path with and without the base model's prefix, not through the
    class it was written against, so it traces the encoder a user builds from
    the checkpoint — BertModel, RobertaModel, … — and its step names are that
    model's own module paths (``encoder.layer.0…`` without the ``bert.`` prefix).

    Claim ID: P5.2a
    Question: Can I use the tracer on my own BERT model, not just BertForMaskedLM?
    问题：tracer 能用在我自己的 BERT 模型上，而不只是 BertForMaskedLM 吗？
    中文：tracer 在裸的 encoder（BertModel）中也能记录每一层的 mask、分数与概率，就像在 BertForMaskedLM 中一样。
    原因：工具包通过家族的 anatomy（bertspec.models.anatomy）找到每个角色，每条路径都带或不带基础模型的前缀各试一次，而不依赖它针对的类，
    因此能 trace 用户从 checkpoint 构建的 encoder——BertModel、RobertaModel……——步骤名就是该模型自己的模块路径（encoder.layer.0…，没有 bert. 前缀）。
    """
    from bertspec.tracing.trace import trace_forward

    a = bert.anatomy
    base_class = type(bert.encoder).__name__
    model = as_class(base_class, bert.attn_implementation).model
    trace, _ = trace_forward(model, **bert.example().as_kwargs())
    n = model.config.num_hidden_layers
    counts = {q: len(trace.all(q)) for q in ("attention_mask", "scores", "scores+mask", "probs")}
    evidence.table(f"{base_class} traced", ["quantity", "steps", "first step"],
                   [(q, c, trace.all(q)[0].name) for q, c in counts.items()])
    assert counts == dict.fromkeys(counts, n)
    assert trace.all("probs")[0].name == a.attention_step(0, "probs").removeprefix(f"{a.base}.")
    assert trace.all("attention_mask")[0].shape is not None, "a padded batch reaches the layers with a mask"


# ---- P5.2b the quick reference ----

def outside_layers_or_in_the_first(a, step: str) -> bool:
    """Whether a step is outside the layers, or layer 0's (ALBERT's shared layer: its first occurrence, @0)."""
    if not step.startswith(f"{a.layers}."):
        return True
    return step.startswith(f"{a.layer(0)}.") and (not a.shared_layer or "@0" in step)


def test_the_quick_reference_card_is_read_off_the_model_under_test(bert, evidence):
    """The quick-reference card gives, for the model under test, every step's shape from a real trace, the formulas, the special ids and the defaults.

    One printable card (the handbook's Quick reference section): shapes are
    read from a trace of the plan's sentence, not typed in; the mask row of
    this run is the form the layers actually received; special ids come from
    the tokenizer, defaults from the config. The test checks each against its
    source, so the card cannot drift from the model it describes.

    Claim ID: P5.2b
    Question: Is there a one-page cheat sheet for this model's shapes, formulas and ids?
    问题：有没有一页纸的速查表，列出这个模型的形状、公式和特殊 id？
    中文：速查卡片针对被测模型给出：真实 trace 中每一步的形状、公式、特殊 token 的 id 与重要的默认值。
    原因：一张可打印的卡片（手册的“速查”一节）：形状取自对计划例句的 trace，而不是手写；本次运行的 mask 一行就是各层实际收到的形式；
    特殊 id 来自分词器，默认值来自 config。测试把每一项与其来源核对，卡片不会与所描述的模型脱节。
    """
    config, tok = bert.config, bert.tokenizer
    single, padded = bert.example(padded=False), bert.example()
    trace, _ = bert.trace(single)
    layer0 = [s for s in trace if outside_layers_or_in_the_first(bert.anatomy, s.name)]
    evidence.table(f"shapes at every step (B = 1, T = {single.input_ids.shape[1]}; layer 0 stands for all "
                   f"{config.num_hidden_layers})", ["step", "shape", "dtype"], [(s.name, s.shape, s.dtype) for s in layer0])
    observed = {}
    for padding, batch in (("unpadded", single), ("padded", padded)):
        received = bert.trace(batch)[0].all("attention_mask")[0].tensor
        observed[padding] = str(masks.form(received, *batch.input_ids.shape))
    evidence.table("the 2D attention_mask → what each layer receives",
                   *versions.table(versions.mask_form(bert.anatomy.family), ["transformers", "attention", "input"],
                                   *[(versions.MAJOR, bert.attn_implementation, padding) for padding in observed]))
    evidence.table("formulas", ["what", "formula"], FORMULAS)
    specials = {name: tok.convert_tokens_to_ids(getattr(tok, f"{name}_token")) for name in ("pad", "unk", "cls", "sep", "mask")}
    evidence.table("special tokens", ["token", "id"], [(getattr(tok, f"{n}_token"), i) for n, i in specials.items()])
    defaults = {k: getattr(config, k, "—") for k in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
                                                "vocab_size", "max_position_embeddings", "type_vocab_size", "hidden_act",
                                                "layer_norm_eps")}
    defaults["dropout in train mode (every module's p)"] = sorted(dropout_probabilities(bert.model))
    evidence.table("the defaults that matter (config.json, and the model's dropout modules)", ["setting", "value"],
                   list(defaults.items()))
    t, h = single.input_ids.shape[1], config.hidden_size
    assert trace[bert.anatomy.embedding_output].shape == (1, t, h)
    assert trace.all("probs")[0].shape == (1, config.num_attention_heads, t, t)
    assert trace[bert.anatomy.decoder].shape == (1, t, config.vocab_size)
    assert specials == {"pad": tok.pad_token_id, "unk": tok.unk_token_id, "cls": tok.cls_token_id,
                        "sep": tok.sep_token_id, "mask": tok.mask_token_id}
    for padding, form in observed.items():
        assert versions.mask_form(bert.anatomy.family).get((versions.MAJOR, bert.attn_implementation, padding), form) == form, padding


FORMULAS = [
    ("extended mask (transformers 4.x eager)", "(1.0 − attention_mask)[:, None, None, :] · finfo(dtype).min"),
    ("scaled dot-product attention", "softmax(Q Kᵀ / √d_head + M) V, per head; M = 0 or finfo.min (or a boolean mask)"),
    ("softmax", "p_j = exp(x_j − max x) / Σ_k exp(x_k − max x); a [PAD] key: exp(≈ −3.4e38) = 0 exactly"),
    ("each layer (post-LN)", "a = LN(x + Attn(x)); y = LN(a + W₂ GELU(W₁ a))"),
    ("head transform", "t = LN(GELU(W h + b))"),
    ("decoder (tied)", "logits = t · E_wordᵀ + bias, E_word = the word-embedding matrix itself"),
    ("loss", "L = mean over positions with label ≠ −100 of −log softmax(logits)[label]"),
    ("its gradient on the logits", "∂L/∂logits = (softmax − one_hot(label)) / n at labelled positions, 0 elsewhere"),
]


# ---- P5.2d material for teaching ----

def test_every_glossary_term_links_to_claims_that_show_it(evidence):
    """Every glossary term is defined in both languages and linked to the claims that show it, all of which exist.

    The glossary (bertspec.handbook.knowledge.GLOSSARY) is what a teacher hands out:
    attention_mask, token_type_ids, -100, finfo.min, eager vs sdpa, tied
    weights, post-LN… Each term's definition is backed by claims; a definition
    whose claims were renamed away would no longer be verified.

    Claim ID: P5.2d
    Question: Where are BERT's terms defined, and where can I see each one at work?
    问题：BERT 的术语在哪里定义？每个术语在哪里能看到它起作用？
    中文：术语表中的每个术语都有中英文定义，并链接到展示它的结论，且这些结论都存在。
    原因：术语表（bertspec.handbook.knowledge.GLOSSARY）是可以分发给学生的材料：attention_mask、token_type_ids、-100、finfo.min、
    eager 与 sdpa、权重共享、post-LN……每个定义都有结论支撑；结论被改名后，定义就不再被验证。
    """
    discovered = claims.discover(SPEC)
    evidence.table("glossary", ["term", "claims", "all exist"],
                   [(t.term, len(t.claims), all(c in discovered for c in t.claims)) for t in knowledge.GLOSSARY])
    assert len(knowledge.GLOSSARY) >= 15
    for term in knowledge.GLOSSARY:
        assert term.zh and term.en and term.claims and all(c in discovered for c in term.claims), term.term


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
