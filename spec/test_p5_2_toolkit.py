"""Chapter P5.2 — the toolkit as a user meets it, the quick reference, the Q&A knowledge base, the glossary and
BERT in one page.

Claims about the Q&A knowledge base and the page as a whole render the
handbook for every claim in spec/ from their docstrings, without running them
(bertspec.proof.pages.every_claim_page).
"""

import ast
import json
import re
from html import unescape

from markupsafe import Markup

from bertspec.handbook import claims, collect, knowledge, render, walkthrough
from bertspec.models import versions
from bertspec.proof.pages import REPORTED, SPEC, every_claim_page, sections, steps_of, text_of
from bertspec.tracing import masks
from bertspec.tracing.modes import dropout_probabilities


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
    page = every_claim_page(settings).html()
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


def test_the_handbook_puts_bert_first_and_the_questions_about_the_tool_in_an_appendix(settings, evidence):
    """The handbook's Q&A index and its sections give BERT's chapters first and the claims about the tool itself last, in an appendix, each under its unchanged anchor.

    A newcomer opens the handbook to learn BERT, not how bertspec refuses a bad
    checkpoint or survives Ctrl-C. The claims about the tool and the spec
    themselves are named once (bertspec.handbook.claims.ABOUT_THE_TOOL); the
    page lists them after every BERT question in the Q&A index and shows their
    sections after the knowledge base, just before the run log. Their anchors
    stay ``<claim ID>-<name>``, so every link to them still lands. Checked on
    the page of every claim in spec/: each name in the set is a claim there; the
    index lists no tool question before a BERT one; the appendix holds exactly
    the set; the front page's "start here" comes before the index and folds the
    run's details.

    Claim ID: P5.2c
    Question: Where are the questions about the tool itself, rather than about BERT?
    问题：关于工具本身（而不是 BERT）的问题放在哪里？
    中文：手册的问答索引与各小节先给出 BERT 的章节，关于工具本身的结论放在最后的附录中，锚点保持不变。
    原因：新手打开手册是为了学习 BERT，而不是看 bertspec 怎样拒绝错误的 checkpoint 或经受 Ctrl-C。关于工具与本规范本身的结论只在一处列出
    （bertspec.handbook.claims.ABOUT_THE_TOOL）；页面在问答索引中把它们排在所有 BERT 问题之后，并把它们的小节放在知识库之后、运行日志之前。
    它们的锚点仍是 <claim ID>-<名称>，所以指向它们的链接都还有效。这里用包含 spec/ 中全部结论的页面检查：集合中的每个名字都是那里的结论；
    索引中没有任何工具问题排在 BERT 问题之前；附录恰好包含这个集合；首页的“从这里开始”在索引之前，本次运行的详情折叠起来。
    """
    discovered = claims.discover(SPEC)
    html = every_claim_page(settings).html()
    index = html[html.index('<section id="qa-index">'):html.index("</section>", html.index('<section id="qa-index">'))]
    listed = re.findall(r'<li class="qa" data-filter><a href="#([^"]+)">', index)
    tool = {claims.anchor(claims.parse(discovered[f].doc).claim_id, f) for f in claims.ABOUT_THE_TOOL if f in discovered}
    in_appendix = [anchor in tool for anchor in listed]
    appendix = html[html.index('<section class="chapter" id="appendix"'):html.index('<h2 id="run-log">')]
    evidence.table("the Q&A index of every claim", ["questions", "BERT's", "the appendix's", "first appendix entry",
                                                    "names in ABOUT_THE_TOOL that are no claim"],
                   [(len(listed), in_appendix.count(False), in_appendix.count(True), in_appendix.index(True),
                     sorted(claims.ABOUT_THE_TOOL - discovered.keys()))])
    assert claims.ABOUT_THE_TOOL <= discovered.keys(), "every claim named as about the tool exists"
    assert in_appendix == sorted(in_appendix), "no question about the tool before a question about BERT"
    assert set(sections(appendix)) == tool and html.index('id="counterfeits"') < html.index('id="appendix"')
    assert html.index('id="start-here"') < html.index('id="bert-in-one-page"') < html.index('id="qa-index"')
    assert re.search(r'<details class="verdict">.*?<table class="identity">.*?</details>', html, re.DOTALL), \
        "the run's details fold"


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


def test_glossary_terms_in_claim_texts_link_to_their_entries_and_no_in_page_link_is_dead(settings, evidence):
    """Where a claim's question, answer or explanation uses a glossary term, its first use in each language links to the term's entry, and every in-page link of the handbook lands on an element.

    A newcomer reading "finfo.min" or "sdpa" in a claim can follow it to the
    glossary. bertspec.handbook.render.Glosser links a term's words (the term,
    or the words it ``says``, Chinese ones too) where they stand as whole words,
    never inside code or another link, once per section and language. A link
    whose target is gone would leave the reader nowhere, so the page of every
    claim is checked: every ``href="#x"`` has an element with id ``x`` (the
    glossary's anchors included), each anchor is used once, and the terms'
    links are counted.

    Claim ID: P5.2d
    Question: Can I jump from a term in a claim to its definition?
    问题：能从结论里的术语直接跳到它的定义吗？
    中文：结论的问题、回答或解释用到术语表中的术语时，它在每种语言中的第一次出现都链接到该术语的条目；手册中的每个页内链接都指向存在的元素。
    原因：新手在结论中读到 “finfo.min” 或 “sdpa” 时可以跳到术语表。bertspec.handbook.render.Glosser 在术语的词（术语本身或它的
    says 中的词，也包括中文）作为完整的词出现时加上链接，从不在代码或其他链接之内，每个小节每种语言一次。目标不存在的链接会让读者无处可去，
    所以检查包含全部结论的页面：每个 href="#x" 都有 id 为 x 的元素（包括术语表的锚点），每个锚点只用一次，并统计各术语的链接。
    """
    gloss = render.Glosser()
    sample = gloss(render.inline("`attention_mask` or my_attention_mask, then attention_mask and attention_mask"))
    in_a_link = render.Glosser()(Markup('<a href="#x">[PAD]</a> and [PAD]'))
    chinese = render.Glosser()(render.inline("共享权重的 decoder"))
    html = every_claim_page(settings).html()
    ids = re.findall(r'\sid="([^"]+)"', html)
    targets = {unescape(t) for t in re.findall(r'href="#([^"]+)"', html)}
    links = re.findall(r'<a href="#(term-[^"]+)">', html)
    evidence.text("linked once, outside code and longer names", str(sample))
    evidence.table("glossary links on the page of every claim", ["term", "anchor", "links"],
                   [(t.term, t.anchor, links.count(t.anchor)) for t in knowledge.GLOSSARY])
    evidence.table("in-page links", ["targets", "elements with an id", "targets without one", "ids used twice"],
                   [(len(targets), len(ids), sorted(targets - set(ids)), sorted({i for i in ids if ids.count(i) > 1}))])
    assert str(sample).count('href="#term-attention-mask"') == 1
    assert str(sample).endswith('then <a href="#term-attention-mask">attention_mask</a> and attention_mask')
    assert str(in_a_link) == '<a href="#x">[PAD]</a> and <a href="#term-pad">[PAD]</a>'
    assert '<a href="#term-tied-weights">共享权重</a>' in str(chinese)
    assert targets <= set(ids), "a link with no element to land on"
    assert len(ids) == len(set(ids))
    assert {t.anchor for t in knowledge.GLOSSARY} <= set(ids) and len(set(links)) >= len(knowledge.GLOSSARY) // 2


def evidence_titles(claim: claims.Discovered) -> set[str]:
    """The titles a claim's evidence calls spell out as string literals, read from its source."""
    tree = ast.parse((SPEC.parent / claim.path).read_text(encoding="utf-8"))
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == claim.function)
    return {call.args[0].value for call in ast.walk(function)
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.args
            and isinstance(call.func.value, ast.Name) and call.func.value.id == "evidence"
            and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)}


def test_bert_in_one_page_walks_from_the_input_to_the_loss_showing_this_runs_evidence_and_the_claims_that_prove_each_step(settings, written_report, evidence):
    """BERT in one page walks from the tokens to the gradient in both languages, each step linked to the claims that prove it and showing the evidence one of them recorded in this run, or none when it did not run.

    The walk (bertspec.handbook.walkthrough.STEPS) is the story a newcomer reads
    first: tokens, embeddings, the mask from 2D to additive, scores + mask,
    softmax with [PAD] keys at exactly 0, the layers, the head's transform, the
    tied decoder and its bias, the logits, the loss with -100, the gradient at
    labelled positions. Each step names claims that exist in spec/ and one
    evidence record, by a title its claim records; the page copies that record
    from this run rather than a figure typed in. Checked on made reports (every
    step's claim passed with a record under that title, except one step whose
    claim failed and one whose claim did not run at all) and on the report a
    pytest run wrote, whose steps show evidence exactly where their claim ran.

    Claim ID: P5.2d
    Question: Is there a short walk through BERT, from the input to the loss?
    问题：有没有一条从输入到 loss 的 BERT 简短导览？
    中文：“BERT 一页纸”用两种语言从 token 走到梯度，每一步链接到证明它的结论，并显示其中一条结论在本次运行中记录的证据；结论没有运行时不显示证据。
    原因：导览（bertspec.handbook.walkthrough.STEPS）是新手最先读的故事：token、嵌入、从二维到加性的 mask、分数 + mask、[PAD] key 严格为 0 的
    softmax、各层、预测头的 transform、共享权重的 decoder 及其 bias、logits、带 -100 的 loss、有标签位置上的梯度。每一步列出 spec/ 中存在的结论，
    并按标题指定其中一条结论记录的一项证据；页面从本次运行复制这项记录，而不是手写的图。这里用构造的报告检查（每一步的结论都以该标题的记录通过，
    只有一步的结论失败、一步的结论根本没有运行），也用 pytest 运行写出的报告检查：其中的步骤恰好在结论运行过的地方显示证据。
    """
    discovered = claims.discover(SPEC)
    failed, absent = walkthrough.STEPS[1].shows[0], walkthrough.STEPS[2].shows[0]
    collector = collect.Collector()
    for function in {f for step in walkthrough.STEPS for f in step.claims if f in discovered and f != absent}:
        report = collect.synthetic_report(discovered[function], failure="made to fail" if function == failed else "")
        report.bertspec["evidence"] = [{"kind": "table", "title": title, "columns": ["made for"],
                                        "rows": [[f"evidence of {function}"]]}
                                       for claim, title in (s.shows for s in walkthrough.STEPS) if claim == function]
        collector.add(report)
    made = render.Page(collector, settings).html()
    shown = steps_of(made, "bert-in-one-page")
    written = written_report.read_text(encoding="utf-8")
    ran = {c["function"] for c in json.loads(written_report.with_suffix(".json").read_text())["claims"]
           if c["outcome"] == "passed"}
    rows = []
    for step in walkthrough.STEPS:
        claim, title = step.shows
        html = shown[step.anchor]
        rows.append((step.key, len(step.claims), claim, title in evidence_titles(discovered[claim]),
                     f"evidence of {claim}" in html, 'class="step-evidence"' in steps_of(written, "bert-in-one-page")[step.anchor]))
        assert all(f in discovered for f in step.claims) and claim in step.claims, step.key
        assert title in evidence_titles(discovered[claim]), f"{step.key}: {claim} records no {title!r}"
        assert text_of(render.inline(step.zh)) in text_of(html) and text_of(render.inline(step.en)) in text_of(html)
        assert (f"evidence of {claim}" in html) == (claim not in (failed, absent)), step.key
        assert ('class="step-evidence"' in steps_of(written, "bert-in-one-page")[step.anchor]) == (claim in ran), step.key
        for function in step.claims:
            if function != absent:
                assert f'href="#{collector.by_function()[function].anchor}"' in html, (step.key, function)
    start_here = made[made.index('<section id="start-here">'):made.index("</section>", made.index('id="start-here"'))]
    evidence.table("the steps, on made reports and on the written one",
                   ["step", "claims", "its evidence from", "a title that claim records", "shown (made)",
                    "shown (written report)"], rows)
    assert {r.split("::")[1] for r in REPORTED} & {step.shows[0] for step in walkthrough.STEPS}, \
        "the written report runs a claim whose evidence a step shows"
    assert len(re.findall(r"<li><a href=", start_here)) == len(walkthrough.STEPS) - 1  # the absent claim: no link
