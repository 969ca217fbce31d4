"""Chapter P5.2 — the toolkit as a user meets it, the quick reference, the Q&A knowledge base and the glossary.

Claims about the Q&A knowledge base render the handbook for every claim in
spec/ from their docstrings, without running them.
"""




from bertspec.handbook import claims, collect, knowledge, render
from bertspec.models import versions
from bertspec.proof.pages import SPEC, sections, text_of
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
