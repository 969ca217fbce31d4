"""Chapter P8 — the architectures under test, and the table of every claim on each of them.

The bundled decoders (GPT-2, LLaMA) and encoder-decoder (T5) are built like the
BERT family's siblings, on the same corpus and characters
(bertspec/builders/beyond_encoders.py, ``python -m bertspec build-default-model --family gpt2|llama|t5``),
and live beside them in fixtures/family/. The claims here establish that they
load offline under each attention implementation the installed transformers
offers, and that the handbook's table reads every claim's verdict on every
architecture off the run.
"""

import dataclasses
import re

import pytest
import torch

from bertspec.handbook import claims, collect, render, walkthrough
from bertspec.models import source, versions
from bertspec.models.generative import DECODER
from bertspec.plugin import COLLECTOR
from bertspec.proof import scope
from bertspec.proof.generation import HIDDEN_SPAN, PREFIX
from bertspec.proof.pages import SPEC, steps_of, text_of
from bertspec.tracing import hooks

# Made-up reports of one BERT claim on three architectures, one cell of each kind a decoder column can hold.
STAND_IN_CLAIM = "test_padded_keys_get_exactly_zero_attention_probability"
STAND_IN_SHOWN_BY = "test_the_bundled_decoders_finish_corpus_lines_from_their_first_half_where_an_untrained_twin_does_not"
STAND_IN = (("bert", {}, "holds"),
            ("gpt2", {"verdict": scope.Verdict(scope.DIFFERS, "GPT-2", "stand-in: causal", STAND_IN_SHOWN_BY)}, "differs"),
            ("t5", {"verdict": scope.Verdict(scope.NOT_APPLICABLE, "T5", "stand-in: no such question")}, "n/a"))


def test_each_bundled_decoder_and_t5_loads_offline_and_predicts_the_same_under_eager_and_sdpa(generative, generative_cache,
                                                                                             evidence):
    """Each bundled decoder and T5 loads from its folder with no network, and its sdpa forward predicts the same token as eager's at every real position.

    The folders hold what from_pretrained reads (config.json,
    generation_config.json, model.safetensors, tokenizer.json,
    tokenizer_config.json) in a form both transformers 4.57 and 5.x read: the
    tokenizer as PreTrainedTokenizerFast over one token per character. sdpa and
    eager compute the same attention through other kernels, so at real tokens
    they may differ by rounding only. At padded query rows of a left-padded
    batch every key is hidden, and what each implementation returns there is
    its own (measured: up to 8 apart): those rows are left out. transformers
    4.57's T5 has no sdpa at all: from_pretrained refuses it with a ValueError
    rather than falling back to eager, and that run skips.

    Claim ID: P8.6
    Question: Do the bundled GPT-2, LLaMA and T5 load offline, and does sdpa give the same predictions as eager?
    问题：自带的 GPT-2、LLaMA 与 T5 能离线加载吗？sdpa 与 eager 的预测相同吗？
    中文：每个自带的解码器和 T5 都能不联网从自己的目录加载，其 sdpa 前向在每个真实位置预测的 token 与 eager 相同。
    原因：目录中是 from_pretrained 读取的文件（config.json、generation_config.json、model.safetensors、tokenizer.json、
    tokenizer_config.json），其格式 transformers 4.57 与 5.x 都能读取：分词器是每个字符一个 token 的 PreTrainedTokenizerFast。
    sdpa 与 eager 用不同的内核计算同一个注意力，所以在真实 token 上只可能有舍入误差。左侧填充的批次中，填充位置的 query 行看不到任何 key，
    各实现在这些行返回的值各不相同（实测相差可达 8），因此不比较这些行。transformers 4.57 的 T5 根本没有 sdpa：
    from_pretrained 会抛出 ValueError 拒绝，而不是退回到 eager，该运行因此跳过。
    """
    name, tokenizer, model = generative.anatomy.family, generative.tokenizer, generative.model
    eager = generative_cache("eager", name).model
    decoder = generative.anatomy.kind == DECODER
    if decoder:
        batch = generative.encode([PREFIX, "东京", "巴黎是法国"])
        kwargs = dict(batch)
    else:
        batch = generative.encode([HIDDEN_SPAN, "<extra_id_0>是日本的首都。"], padding_side="right")
        start = [model.config.decoder_start_token_id, tokenizer.convert_tokens_to_ids("<extra_id_0>")]
        kwargs = dict(batch, decoder_input_ids=torch.tensor([start] * 2))
    with torch.no_grad():
        logits, expected = model(**kwargs).logits, eager(**kwargs).logits
    # T5's logits are its decoder's, whose two rows are unpadded; a decoder's padded rows are left out.
    real = batch["attention_mask"].bool() if decoder else torch.ones(logits.shape[:2], dtype=torch.bool)
    evidence.table(f"{generative.anatomy.name} ({versions.VERSION}), {generative.attn_implementation} vs eager",
                   ["files", "real positions", "same prediction", "max |Δ logits| at real positions"],
                   [(", ".join(sorted(p.name for p in generative.origin.folder.iterdir())), real.sum().item(),
                     (logits.argmax(-1) == expected.argmax(-1))[real].all().item(),
                     (logits - expected)[real].abs().max().item())])
    assert model.config._attn_implementation == generative.attn_implementation
    assert torch.equal(logits.argmax(-1)[real], expected.argmax(-1)[real])




@pytest.mark.counterfeits("lm_head_untied")
def test_the_lm_head_is_the_word_embedding_matrix_itself_exactly_where_the_config_ties_them_and_has_no_bias(generative,
                                                                                                            evidence):
    """A decoder's or T5's head scores the vocabulary with the word-embedding matrix itself (the same Parameter) exactly when its config sets tie_word_embeddings, as BERT's decoder does, but without a bias of its own; tied, T5 first scales the decoder's output by d_model^-0.5.

    transformers ties the two at load time (``tie_weights``): the head's weight
    and the embedding table are one Parameter, so an update to one is an update
    to the other. GPT-2 and T5 are tied as released (and in the bundled
    models), LLaMA-style models mostly not (the bundled LLaMA is not); none of
    the three heads has a bias, where BERT's decoder adds its own. Because the
    one matrix serves both the input (vectors of norm about 1 per dimension) and
    the output, T5 multiplies the decoder's output by d_model^-0.5 before a tied
    head (read in T5ForConditionalGeneration.forward, 4.57 and 5.x). Checked by
    identity of the Parameters, by the head's input against the stack's output
    (hooks, exact: one multiplication), and by logits = input · Eᵀ (the same
    matmul, exact).

    Claim ID: P8.6
    Question: Is the lm_head of GPT-2, LLaMA and T5 tied to the word embeddings like BERT's decoder?
    问题：GPT-2、LLaMA 与 T5 的 lm_head 像 BERT 的 decoder 一样与词嵌入共享权重吗？
    中文：解码器或 T5 的输出头恰好在 config 设置 tie_word_embeddings 时用词嵌入矩阵本身（同一个 Parameter）给词表打分，与 BERT 的 decoder 相同，但没有自己的 bias；共享时，T5 先把解码器的输出乘以 d_model^-0.5。
    原因：transformers 在加载时把两者绑定（tie_weights）：输出头的权重与嵌入表是同一个 Parameter，更新其中一个就是更新另一个。GPT-2 与 T5
    发布时即共享（自带模型也是），LLaMA 类模型大多不共享（自带的 LLaMA 不共享）；三者的输出头都没有 bias，而 BERT 的 decoder 有自己的 bias。
    由于同一个矩阵既用于输入也用于输出，T5 在共享的输出头之前把解码器的输出乘以 d_model^-0.5（见 4.57 与 5.x 的
    T5ForConditionalGeneration.forward）。这里检查 Parameter 是否同一个、输出头的输入与该栈的输出（钩子，精确：一次乘法），
    以及 logits = 输入 · Eᵀ（同一个矩阵乘法，精确）。
    """
    model, a = generative.model, generative.anatomy
    head, table = model.get_submodule(a.lm_head), model.get_submodule(a.word_embeddings)
    tied = bool(model.config.tie_word_embeddings)
    seen = {}
    final_norm = model.get_submodule(a.decoder_stack.final_norm)
    with hooks.attached(head, pre=lambda m, args, kwargs: seen.update(head_input=args[0])), \
            hooks.attached(final_norm, post=lambda m, args, kwargs, out: seen.update(stack_output=out)):
        batch = generative.encode([PREFIX], padding_side="right")
        extra = {"decoder_input_ids": batch["input_ids"]} if a.kind != DECODER else {}
        with torch.no_grad():
            logits = model(**batch, **extra).logits
    scale = model.config.d_model ** -0.5 if a.kind != DECODER and tied else 1.0
    evidence.table(f"{a.name}: who holds what", ["tie_word_embeddings", "head weight is the embedding table",
                                                  "head bias", "head input / stack output", "logits = input · Eᵀ"],
                   [(tied, head.weight is table.weight, head.bias, scale,
                     torch.equal(logits, seen["head_input"] @ table.weight.T))])
    assert (head.weight is table.weight) == tied
    assert head.bias is None
    assert torch.equal(seen["head_input"], seen["stack_output"] * scale)
    if tied:
        assert torch.equal(logits, torch.nn.functional.linear(seen["head_input"], table.weight))


def beyond_encoder_cells(table) -> list[tuple]:
    """The rows reported on every architecture so far, with their cells in the decoder and T5 columns."""
    columns = [i for i, family in enumerate(table.families) if family in source.BEYOND_ENCODERS]
    return [(result, [cells[i] for i in columns]) for result, cells in table.rows
            if {run.family for run in result.runs} >= set(table.families)]


def is_chapter_p8(function: str, discovered) -> bool:
    return "Claim ID: P8." in discovered[function].doc


def check_the_stand_in_row(settings, evidence) -> None:
    """A BERT claim made to hold on BERT, differ on GPT-2 (linked to a P8 claim) and not apply to T5, as rendered."""
    discovered = claims.discover(SPEC)
    collector = collect.Collector()
    for family, ending, _ in STAND_IN:
        collector.add(collect.synthetic_report(discovered[STAND_IN_CLAIM], f"eager-{family}", family, **ending))
    collector.add(collect.synthetic_report(discovered[STAND_IN_SHOWN_BY], "eager-gpt2", "gpt2"))
    families = tuple(family for family, _, _ in STAND_IN)
    page = render.Page(collector, dataclasses.replace(settings, model_path=None, families=families))
    table = page.part("families")
    result = page.by_function[STAND_IN_CLAIM]
    row = re.search(rf'<tr data-filter><th><a href="#{re.escape(result.anchor)}">.*?</th>(.*?)</tr>', table, re.DOTALL)
    cells = re.findall(r'<td class="verdict ([^"]+)"', row.group(1))
    evidence.table("stand-in reports, not this run's results: one BERT claim's cells", ["claim", *families],
                   [(STAND_IN_CLAIM, *cells)], note="made-up reports, so that each kind of cell is checked on a "
                                                     "decoder column whatever this session ran")
    assert cells == [kind for _, _, kind in STAND_IN]
    assert f'href="#{page.by_function[STAND_IN_SHOWN_BY].anchor}"' in row.group(1), "differs links to its P8 claim"
    assert all(source.name_of(family) in table for family in families)


def test_the_across_architectures_table_gives_every_claim_a_cell_on_each_decoder_and_t5_read_off_the_run(
        request, settings, evidence):
    """The handbook's Across-architectures table extends every claim run per architecture to GPT-2, LLaMA and T5: a BERT claim there differs (linked to the chapter P8 claim that shows the decoder's mechanism) or does not apply (with why), and each chapter P8 claim holds on the architectures it is written for.

    The default run runs chapters P7 and P8 and the claims marked
    ``across_families`` on every bundled architecture: the six BERT-family
    encoders, the two decoders and T5. A BERT claim cannot run as written on a
    decoder (no [MASK], no MLM head, another mask); where the decoder has the
    same question in other clothes, the claim declares it differs and names the
    P8 claim that answers it (``@pytest.mark.carries``), and that P8 claim runs
    in the same session; otherwise it skips as not applicable, with its reason.
    A P8 claim, in turn, does not apply to an encoder. Checked on this run's
    table as far as this process has run it: no decoder or T5 cell fails or
    was left unrun, every differing cell there links to a P8 claim, every P8
    row holds on at least one of the three; and on made-up reports of one BERT
    claim, rendered with a holds, a differs and an n/a cell.

    Claim ID: P8.6
    Question: Which BERT claims carry over to GPT-2, LLaMA and T5, and which differ?
    问题：哪些关于 BERT 的结论能迁移到 GPT-2、LLaMA 与 T5，哪些不同？
    中文：手册的“架构对照”表把每条按架构运行的结论扩展到 GPT-2、LLaMA 与 T5：BERT 的结论在那里“机制不同”（链接到展示解码器机制的第 P8 章结论）或“不适用”（附原因），每条第 P8 章结论在它所针对的架构上成立。
    原因：默认运行在每个自带架构上运行第 P7、P8 章及标记为 across_families 的结论：六个 BERT 家族编码器、两个解码器与 T5。
    BERT 的结论不能照原样在解码器上运行（没有 [MASK]、没有 MLM 头、mask 也不同）；当解码器换一种形式有同样的问题时，
    该结论声明“机制不同”并指名回答它的 P8 结论（@pytest.mark.carries），该 P8 结论在同一次运行中执行；否则以“不适用”跳过并附原因。
    反过来，P8 结论不适用于编码器。这里检查本次运行的表格（以本进程已运行的部分为限）：解码器与 T5 的列中没有失败或未运行的格子，
    那里每个“机制不同”的格子都链接到一条 P8 结论，每条 P8 结论至少在三者之一上成立；并用一条 BERT 结论的构造报告渲染出成立、机制不同、
    不适用三种格子。
    """
    page = render.Page(request.config.stash[COLLECTOR], settings)  # this session's reports so far (this worker's)
    table = page.family_table
    discovered = claims.discover(SPEC)
    if table.per_family and set(source.BEYOND_ENCODERS) <= set(table.families):
        rows = beyond_encoder_cells(table)
        evidence.table("this run's table, decoder and T5 columns: the claims reported on every architecture so far",
                       ["claim", *source.BEYOND_ENCODERS], [(r.function, *(c.kind for c in cells)) for r, cells in rows],
                       note=None if rows else "none yet in this process (random order, or another -n worker ran them)")
        for result, cells in rows:
            assert all(cell.kind in ("holds", scope.DIFFERS, scope.NOT_APPLICABLE) for cell in cells), result.function
            assert all(is_chapter_p8(cell.shown_by, discovered) for cell in cells if cell.kind == scope.DIFFERS), \
                result.function
            if is_chapter_p8(result.function, discovered):
                assert any(cell.kind == "holds" for cell in cells), result.function
    check_the_stand_in_row(settings, evidence)


def test_from_bert_to_gpt_and_t5_walks_each_difference_linked_to_its_claims_with_this_runs_evidence(request, settings,
                                                                                                     evidence):
    """The page "From BERT to GPT and T5", after BERT in one page, walks each thing that changes for a decoder and for T5 in both languages, links each to the chapter P8 claims that prove it, and shows the evidence one of them recorded in this run.

    The steps (bertspec.handbook.walkthrough.BEYOND): the causal mask, left
    padding and positions, the causal LM loss, the cache, T5's encoder-decoder.
    Each names claims that exist in spec/, all of chapter P8 or the tied head,
    and one evidence record by its title and the run that records it (eager
    on GPT-2, or on T5); the page copies that record from that run, whatever
    order the runs took. Checked on this session's reports (a step whose run
    passed here finds its record; an xdist worker holds its own runs only) and on a page rendered from made reports, where every
    step shows its record, its text in both languages and a link to each of its
    claims.

    Claim ID: P8.6
    Question: What changes from BERT to GPT and T5, in one page?
    问题：从 BERT 到 GPT 与 T5，变了什么？能在一页里看到吗？
    中文：“从 BERT 到 GPT 与 T5”一页接在“BERT 一页纸”之后，用两种语言逐一讲解解码器与 T5 的不同之处，每处链接到证明它的第 P8 章结论，并显示其中一条结论在本次运行中记录的证据。
    原因：各步（bertspec.handbook.walkthrough.BEYOND）：因果 mask、左侧 padding 与位置、因果语言模型的 loss、缓存、T5 的编码器-解码器。
    每一步列出 spec/ 中存在的结论（都属于第 P8 章，或共享权重的输出头），并按标题与记录它的那次运行（GPT-2 或 T5 上的 eager）指定其中一条结论记录的
    一项证据；页面从那次运行复制这项记录，无论各次运行的顺序如何。这里用本次会话的报告检查（那次运行在这里通过的步骤能找到它的记录；xdist 的 worker 只持有自己的
    运行），也用构造的报告渲染的页面检查：每一步都显示它的记录、两种语言的文字，
    以及到每条结论的链接。
    """
    discovered = claims.discover(SPEC)
    this_run = render.Page(request.config.stash[COLLECTOR], settings)
    collector = collect.Collector()
    for step in walkthrough.BEYOND:
        for function in step.claims:
            report = collect.synthetic_report(discovered[function], step.run, step.run.split("-")[-1])
            if function == step.shows[0]:
                report.bertspec["evidence"] = [{"kind": "table", "title": step.shows[1], "columns": ["made for"],
                                                "rows": [[f"evidence of {function}"]]}]
            collector.add(report)
    made = render.Page(collector, settings)
    shown = steps_of(made.html(), "bert-to-gpt-and-t5")
    rows = []
    for step in walkthrough.BEYOND:
        claim, title = step.shows
        # under xdist this session holds its own worker's runs only: the step's run may have passed on another
        passed = this_run.claim(claim) is not None and any(r.outcome == "passed" and r.param == step.run
                                                           for r in this_run.claim(claim).runs)
        found = this_run.record(claim, title, step.run) is not None
        html = shown[step.anchor]
        rows.append((step.key, len(step.claims), claim, passed, found, f"evidence of {claim}" in html))
        assert claim in step.claims and all(is_chapter_p8(f, discovered) for f in step.claims), step.key
        assert found or not passed, f"{step.key}: {claim} passed here but recorded no {title!r}"
        assert f"evidence of {claim}" in html, step.key
        assert text_of(render.inline(step.zh)) in text_of(html) and text_of(render.inline(step.en)) in text_of(html)
        assert all(f'href="#{made.by_function[f].anchor}"' in html for f in step.claims), step.key
    evidence.table("the steps, on this run's reports and on made ones",
                   ["step", "claims", "its evidence from", "passed here", "record found here", "shown (made)"], rows)
