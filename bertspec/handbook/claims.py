"""The claim catalogue and the one docstring format every claim uses.

A claim's docstring::

    Padded keys get exactly zero attention probability.

    Why it holds: the mechanism, in a few short paragraphs.

    Claim ID: P2.3b
    Question: How much attention does a [PAD] key get?
    问题：[PAD] 位置的 key 会得到多少注意力？
    中文：填充位置的 key 得到的注意力概率严格为 0。
    原因：同一机制的中文说明。

The first line is the claim in English, the answer to the question; the
paragraphs before ``Claim ID:`` explain it. After the ID come the question a
learner would ask, in English and in Chinese, then the claim in Chinese and its
Chinese explanation. IDs come from the plan (``CATALOGUE``); the handbook orders
chapters by ``CHAPTERS`` and claims by ID, and puts the claims about the tool
itself (``ABOUT_THE_TOOL``) in an appendix after BERT's chapters.
"""

import inspect
import re
from dataclasses import dataclass

# Chapter prefix -> (Chinese title, English title), in the plan's order.
CHAPTERS = {
    "P1": ("分析框架：被测模型、tracer 与错误信息", "The framework: the model under test, the tracer, the errors"),
    "P2": ("Attention mask", "The attention mask"),
    "P3": ("MLM 前向传播、预测头与损失", "The MLM forward pass, the prediction head and the loss"),
    "P4": ("场景、边界、数值稳定性与开销", "Scenarios, boundaries, numerical stability and cost"),
    "P5": ("知识库", "The knowledge base"),
    "P6": ("实践中的常见问题", "Questions from practice"),
    "P7": ("知识迁移：BERT 家族", "Knowledge transfer: the BERT family"),
    "P8": ("超越编码器：解码器与编码器-解码器", "Beyond encoders: decoders and encoder-decoders"),
}

# Claims about the tool and the spec themselves rather than about BERT: bad input, interrupts, packaging, the
# report and its own checks, the tracer's internals and cost. The handbook shows them in an appendix after BERT's
# chapters, so that a newcomer meets BERT first; their anchors stay those of their claim IDs.
APPENDIX = ("附录：关于工具与本规范本身", "Appendix: the tool and the spec themselves")
ABOUT_THE_TOOL = frozenset({
    # P1.1 bad input, interrupts, the wheel, the report file
    "test_a_bad_checkpoint_or_option_stops_pytest_before_any_test_with_one_line_and_status_4",
    "test_the_same_refusal_from_a_real_pytest_process_is_one_line_and_status_4",
    "test_an_encoder_only_checkpoint_runs_the_encoder_claims_and_skips_the_head_claims_with_the_reason",
    "test_an_interrupted_run_exits_2_says_so_in_its_report_and_gives_no_snapshot_advice",
    "test_an_interrupt_landing_where_python_has_no_line_number_is_still_reported_as_an_interrupt",
    "test_only_a_complete_run_calls_a_snapshot_unused_and_advises_snapshot_update",
    "test_the_report_and_its_data_are_replaced_whole_never_left_half_written",
    "test_the_wheel_ships_the_bundled_model_the_handbooks_assets_and_the_bertspec_command",
    # P1.1 the spec's own material: example texts, the bundled model, the counterfeits
    "test_the_example_texts_are_in_the_vocabularys_language_so_the_claims_see_real_tokens",
    "test_a_vocabulary_of_neither_language_gets_example_sentences_spelled_with_its_own_tokens",
    "test_the_bundled_model_is_trained_enough_that_every_mechanism_visibly_matters",
    "test_each_claim_goes_red_on_the_counterfeits_declared_at_it",
    # P1.2, P1.3 and P4.2b: the tracer's failures, command, record format and cost
    "test_a_forward_that_raises_inside_attention_leaves_nothing_of_the_tracer_behind",
    "test_the_trace_command_answers_bad_input_with_one_line",
    "test_the_trace_command_prints_every_step_and_the_prediction",
    "test_every_step_record_has_the_same_fields",
    "test_every_summary_matches_a_float64_reduction_even_for_the_finfo_min_mask",
    "test_one_pass_over_a_float32_tensor_gives_float64s_summary_on_every_edge_case",
    "test_without_the_compiled_pass_torchs_reductions_give_the_same_summaries",
    "test_a_traced_forward_gives_the_plain_forwards_logits_at_a_measured_overhead",
    "test_keeping_full_tensors_holds_every_step_in_memory_while_summaries_hold_none",
    "test_the_tracers_peers_give_the_plain_forwards_logits_at_a_measured_overhead",
    "test_the_report_claim_fails_on_a_saved_run_whose_ratio_does_not_follow_from_its_timings",
    # P5: the report, the browser, the README, the docstring format, the page's links
    "test_the_report_gives_every_claim_that_ran_a_bilingual_section_one_click_from_the_q_and_a_index",
    "test_the_handbook_opens_in_a_browser_without_errors_and_every_q_and_a_link_lands_on_its_claim",
    "test_the_first_screen_at_1366_by_768_shows_the_filter_and_bert_questions_before_the_appendix",
    "test_the_attention_view_draws_every_head_enlarges_one_on_click_and_redraws_for_each_layer_and_batch",
    "test_the_readme_python_example_runs_as_written_and_returns_the_layers_probabilities",
    "test_every_claim_in_the_spec_renders_as_a_question_with_its_answer_in_both_languages",
    "test_every_test_in_the_spec_has_a_docstring_in_the_claim_format",
    "test_the_handbook_puts_bert_first_and_the_questions_about_the_tool_in_an_appendix",
    "test_glossary_terms_in_claim_texts_link_to_their_entries_and_no_in_page_link_is_dead",
})

# ID -> (the plan's words, what the spec shows). Mirrors the team's claims.md.
CATALOGUE = {
    "P1.1": ("统一的分析框架", "one analysis framework: shared fixtures, one tracer, one evidence format"),
    "P1.2": ("整合 trace 脚本", "the tracer records any BERT forward pass step by step"),
    "P1.3": ("标准化输出格式和日志", "every step's record has the same fields"),
    "P2.1a": ("追踪 mask 值从输入到各层", "the 2D attention_mask and the form each layer receives"),
    "P2.1b": ("验证 (1.0 - attention_mask) * torch.finfo(dtype).min", "the additive conversion of the mask"),
    "P2.1c": ("训练 vs 推理模式", "train vs eval: same mask, dropout is the difference"),
    "P2.1d": ("为什么\"全0\"mask是正确的", "why an all-zero mask is correct"),
    "P2.2a": ("attention padding mask vs MLM token mask", "two different things"),
    "P2.2b": ("[MASK] 在 attention 中可见", "[MASK] is visible to attention"),
    "P2.2c": ("attention mask 不影响 MLM 预测", "padding does not change the prediction at [MASK]"),
    "P2.3a": ("在 modeling_bert.py 关键位置添加调试输出", "debug output at the key places, via hooks"),
    "P2.3b": ("attention_scores + attention_mask 的数学原理", "softmax of score + dtype-min is exactly 0"),
    "P2.3c": ("可视化 mask 处理流程", "a figure of the mask's path"),
    "P3.1a": ("input_ids → sequence_output 完整路径", "the whole path, every step recorded"),
    "P3.1b": ("BertEmbeddings: word + position + token_type", "embeddings recomputed by hand"),
    "P3.1c": ("BertEncoder: 多层 attention + feedforward", "each layer recomputed by hand"),
    "P3.1d": ("记录每步的张量形状和关键数值", "shapes and key values recorded and snapshot-tested"),
    "P3.2a": ("BertLMPredictionHead 内部结构", "transform then decoder"),
    "P3.2b": ("Transform 层的作用和必要性", "removing the transform changes the logits"),
    "P3.2c": ("Linear decoder: [batch, seq, hidden] → [batch, seq, vocab]", "tied decoder plus its own bias"),
    "P3.2d": ("prediction_scores 的物理含义", "unnormalised logits; softmax, argmax"),
    "P3.3a": ("CrossEntropyLoss + ignore_index=-100", "only labelled positions count"),
    "P3.3b": ("手动实现损失计算", "a hand-written loss equals the model's"),
    "P3.3c": ("只有 [MASK] 位置参与梯度更新", "only labelled positions get gradient on the logits"),
    "P3.3d": ("不同 label 设置的影响", "all, one, none, special-token labels"),
    "P4.1a": ("单句 vs 双句输入", "single sentence vs sentence pair"),
    "P4.1b": ("不同序列长度的 padding 处理", "padding never changes real tokens' outputs"),
    "P4.1c": ("多个 [MASK] token 的并行处理", "several [MASK] predicted in one pass"),
    "P4.1d": ("特殊 token 的处理方式", "[CLS], [SEP], [PAD]: ids, embeddings, treatment"),
    "P4.2a": ("mask 操作的计算效率", "the cost of mask operations"),
    "P4.2b": ("manual implementation vs optimized version", "equal outputs, measured speed"),
    "P4.2c": ("边界条件测试", "all padded, no mask, over-long, single token"),
    "P4.2d": ("数值稳定性验证", "float32 / float16 / bfloat16 masks and softmax"),
    "P5.1a": ("完整的 BERT 技术机制文档", "the HTML report"),
    "P5.1b": ("代码示例和图表", "code examples and figures"),
    "P5.1c": ("关键发现和最佳实践", "key findings and best practices"),
    "P5.1d": ("常见误解和正确理解", "common misconceptions and the correct understanding"),
    "P5.2a": ("可复用的调试工具集", "a reusable debugging toolkit"),
    "P5.2b": ("快速参考指南", "a quick-reference guide"),
    "P5.2c": ("Q&A 形式的知识库", "a Q&A knowledge base"),
    "P5.2d": ("适合分享和教学的材料", "material fit for sharing and teaching"),
    "P6.1": ("pooler_output、[CLS] 隐藏状态与平均池化", "pooler_output vs the [CLS] hidden state vs mean pooling"),
    "P6.2": ("平均池化必须按 attention_mask 加权", "mean pooling weighted by attention_mask"),
    "P6.3": ("加载警告的含义", "what the load warnings mean"),
    "P6.4": ("token 分类中的 -100", "-100 labels in token classification"),
    "P6.5": ("自定义 3D / 4D attention mask 与句子打包", "custom 3D / 4D attention masks; packing sentences"),
    "P6.6": ("半精度中的 NaN 从何而来", "where NaN comes from in half precision"),
    "P6.7": ("NSP 头、它的标签与预训练 loss", "the NSP head, its labels and the pre-training loss"),
    # From P6.8 on: questions learners asked in public threads, by topic (PRACTICE_TOPICS), each its own ID.
    # P6.8–P6.20 tokenization and inputs: spec/test_p6_08_tokenization_and_inputs.py (P6.8–P6.15) and
    # spec/test_p6_16_adding_words_and_input_length.py (P6.16–P6.20)
    "P6.8": ("全词掩码（wwm）仍按字切分", "whole-word masking still gives one token per Chinese character"),
    "P6.9": ("中文 ## 子词从不出现", "why ##字 pieces of the Chinese vocabulary are never produced"),
    "P6.10": ("decode 在汉字之间加空格", "why decode puts spaces between Chinese characters"),
    "P6.11": ("中文 NER 中数字和英文让 token 少于字符", "digits and Latin words make fewer tokens than characters in Chinese NER"),
    "P6.12": ("连 [UNK] 都没有就消失的字符", "characters that vanish without even an [UNK]"),
    "P6.13": ("大小写与 do_lower_case", "capital letters and do_lower_case"),
    "P6.14": ("小写化同时去掉声调与重音", "lowercasing also strips tone marks and accents"),
    "P6.15": ("全角与半角字符", "full-width and half-width characters"),
    "P6.16": ("never_split 何时生效", "when never_split keeps a token whole"),
    "P6.17": ("用 [unused] 行加入新词", "adding words in the [unused] rows of vocab.txt"),
    "P6.18": ("只要 token 向量也需要 [CLS] 与 [SEP]", "[CLS] and [SEP] matter even for token vectors"),
    "P6.19": ("max_length 包含 [CLS] 与 [SEP]", "max_length counts [CLS] and [SEP]"),
    "P6.20": ("句对截断切掉哪些 token", "which tokens pair truncation cuts"),
    # P6.21–P6.32 embeddings, positions and outputs: spec/test_p6_21_embeddings_positions_and_outputs.py, spec/test_p6_28_outputs_and_parameter_counts.py
    "P6.21": ("位置嵌入是学出来的，不是正弦函数", "position embeddings are learned, not sinusoidal"),
    "P6.22": ("position_ids 是不存入 state_dict 的缓冲区", "position_ids is a buffer left out of the state dict"),
    "P6.23": ("超过位置表的文本：带 stride 的滑动窗口", "text longer than the position table: windows with a stride"),
    "P6.24": ("hidden_states 比层数多一个：[0] 是嵌入层输出", "hidden_states has one more entry than layers: [0] is the embeddings"),
    "P6.25": ("add_tokens 与 resize_token_embeddings 之后的新行", "the new rows after add_tokens and resize_token_embeddings"),
    "P6.26": ("inputs_embeds 仍会加上位置与 token type 嵌入", "inputs_embeds still gets position and token-type embeddings"),
    "P6.27": ("同一个字在不同句子中的向量不同", "the same token gets a different vector in each sentence"),
    "P6.28": ("解包 ModelOutput 得到的是键名", "unpacking a ModelOutput gives its keys"),
    "P6.29": ("head_mask 在各版本中的作用", "what head_mask does in each version"),
    "P6.30": ("BertLMHeadModel 的因果 mask 来自 is_decoder", "BertLMHeadModel's causal mask comes from is_decoder"),
    "P6.31": ("sdpa 与 output_attentions", "sdpa and output_attentions"),
    "P6.32": ("“1.1 亿参数”是怎样数出来的", "how \"110M parameters\" is counted"),
    # P6.33–P6.44 labels, losses and task heads: spec/test_p6_33_labels_losses_and_heads.py
    "P6.33": ("problem_type：int 标签交叉熵、float 多热标签 BCE", "problem_type: int labels cross-entropy, float multi-hot labels BCE"),
    "P6.34": ("num_labels=1 是回归（MSE）", "num_labels=1 is regression (MSE)"),
    "P6.35": ("exp(MLM loss) 不是可与 GPT-2 比较的困惑度", "exp(MLM loss) is not a perplexity comparable with GPT-2's"),
    "P6.36": ("ELECTRA 判别器：每个 token 一个 logit", "ELECTRA's discriminator: one logit per token"),
    "P6.37": ("QA 的起止 logits 与 loss", "QA start/end logits and the loss"),
    "P6.38": ("多项选择：输入形状与各选项打分", "multiple choice: input shape and per-choice scores"),
    "P6.39": ("token 分类标签用 -100 填充", "token-classification labels padded with -100"),
    "P6.40": ("各家族序列分类器读取的表示", "which representation each family's sequence classifier reads"),
    "P6.41": ("句向量余弦偏高：各向异性", "high cosine between sentence vectors: anisotropy"),
    "P6.42": ("ignore_mismatched_sizes 与 num_labels 不匹配", "ignore_mismatched_sizes and a num_labels mismatch"),
    "P6.43": ("tie_word_embeddings=False 得到随机 decoder", "tie_word_embeddings=False gives a random decoder"),
    # P6.45–P6.56 training, fine-tuning and eval mode: spec/test_p6_45_training_and_fine_tuning.py
    "P6.45": ("torch.no_grad() 与 model.eval() 的区别", "torch.no_grad() vs model.eval()"),
    "P6.46": ("同一 batch 在训练与推理模式下的 loss", "the same batch's loss in train and eval mode"),
    "P6.47": ("冻结编码器：requires_grad_ 与普通属性", "freezing the encoder: requires_grad_ vs a plain attribute"),
    "P6.48": ("哪些参数做 weight decay", "which parameters get weight decay"),
    "P6.49": ("从 config 构建时的权重初始化", "how weights are initialised from a config"),
    "P6.50": ("动态遮盖与静态遮盖", "dynamic vs static masking"),
    "P6.51": ("三个 dropout 参数各作用在哪里", "where each of the three dropout knobs acts"),
    "P6.52": ("梯度检查点与 dropout", "gradient checkpointing and dropout"),
    "P7.1": ("理解能迁移到其他 transformer 模型", "the same claims on RoBERTa, DistilBERT, ALBERT, ELECTRA and ModernBERT"),
    "P7.2": ("各架构与 BERT 的差异", "each architectural difference from BERT, its own claim"),
    "P7.3": ("架构对照表", "a comparison table: claim × architecture"),
    # P8: the bundled GPT-2, LLaMA and T5 (bertspec/builders/beyond_encoders.py), spec/test_p8_*.py
    "P8.1": ("padding mask 与因果 mask 相遇", "the padding mask meets the causal mask, per version × implementation"),
    "P8.2": ("批量生成中的 padding 方向与位置", "padding side and positions in batched generation"),
    "P8.3": ("因果语言模型的 loss", "the causal LM loss: labels shifted inside the model"),
    "P8.4": ("KV 缓存", "the cache: token-by-token decoding reproduces the full forward"),
    "P8.5": ("编码器-解码器：交叉注意力与 T5", "encoder-decoder: cross-attention mask, shifted labels, T5's unscaled scores"),
    "P8.6": ("架构对照表：编码器、解码器、编码器-解码器", "the table: each claim × encoders, decoders, encoder-decoders"),
}


# Chapter P6 grows by the questions learners ask in public threads: from FIRST_ASKED on, each claim names where it
# was asked, and the Q&A index groups them by topic (first ID of the topic -> its Chinese and English title).
FIRST_ASKED = "P6.8"
PRACTICE_TOPICS = {
    "P6.8": ("分词与输入（含中文）", "Tokenization and inputs, Chinese included"),
    "P6.21": ("嵌入、位置与输出", "Embeddings, positions and outputs"),
    "P6.33": ("标签、损失与任务头", "Labels, losses and task heads"),
    "P6.45": ("训练、微调与 eval 模式", "Training, fine-tuning and eval mode"),
}
_THREAD = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)#(?P<number>\d+)$")


def thread_url(reference: str) -> str:
    """Where an ``Asked in:`` reference points: ``owner/repo#N`` is a GitHub issue or pull request (GitHub sends an
    issue address of a pull request on to it), anything else is a page's own address."""
    match = _THREAD.match(reference)
    return f"https://github.com/{match['repo']}/issues/{match['number']}" if match else reference


def asked(claim_id: str) -> bool:
    """Whether a claim is one of the questions chapter P6 grows by, from FIRST_ASKED on."""
    first = id_order(FIRST_ASKED)
    return id_order(claim_id)[0] == first[0] and id_order(claim_id) >= first


def topic(claim_id: str) -> tuple[str, str] | None:
    """The practice topic a grown P6 question belongs to, or None."""
    if not asked(claim_id):
        return None
    firsts = [first for first in PRACTICE_TOPICS if id_order(first) <= id_order(claim_id)]
    return PRACTICE_TOPICS[max(firsts, key=id_order)]


@dataclass(frozen=True)
class Claim:
    sentence: str
    why: str
    claim_id: str
    question: str
    question_zh: str
    sentence_zh: str
    why_zh: str
    asked_in: tuple[str, ...] = ()  # threads and pages where learners asked the question

    @property
    def chapter(self) -> str:
        return self.claim_id.split(".")[0]


class ClaimFormatError(ValueError):
    """A docstring that does not follow the claim format."""


_ID_LINE = re.compile(r"^\s*Claim ID:\s*(\S+)\s*$", re.MULTILINE)
_ASKED_IN = re.compile(r"^Asked in:(.*)\Z", re.MULTILINE | re.DOTALL)


def parse(docstring: str | None) -> Claim:
    text = inspect.cleandoc(docstring or "")
    match = _ID_LINE.search(text)
    if not text or match is None:
        raise ClaimFormatError("no 'Claim ID:' line")
    english, after = text[: match.start()].strip(), text[match.end():].strip()
    sentence, _, why = english.partition("\n")
    question, _, after = after.partition("\n")
    question_zh, _, chinese = after.partition("\n")
    zh_sentence, _, zh_why = chinese.partition("\n")
    zh_why, asked_in = _asked_in(zh_why)
    claim_id = match.group(1)
    if claim_id not in CATALOGUE:
        raise ClaimFormatError(f"unknown claim ID {claim_id!r}")
    if asked(claim_id) and not asked_in:
        raise ClaimFormatError(f"a practice question from {FIRST_ASKED} on ends with the threads it was asked in: "
                               "'Asked in: owner/repo#number, https://…'")
    if not why.strip():
        raise ClaimFormatError("no explanation between the claim and its ID")
    if not (question.startswith("Question: ") and question.rstrip().endswith("?")):
        raise ClaimFormatError("no 'Question: …?' line after the claim ID")
    if not (question_zh.startswith("问题：") and question_zh.rstrip().endswith("？")):
        raise ClaimFormatError("no '问题：…？' line after the English question")
    if not zh_sentence.startswith("中文：") or not zh_why.strip():
        raise ClaimFormatError("no '中文：' claim line followed by a Chinese explanation")
    return Claim(
        sentence=sentence.strip(), why=why.strip(), claim_id=claim_id,
        question=question.removeprefix("Question: ").strip(), question_zh=question_zh.removeprefix("问题：").strip(),
        sentence_zh=zh_sentence.removeprefix("中文：").strip(), why_zh=zh_why.strip().removeprefix("原因：").strip(),
        asked_in=asked_in,
    )


def _asked_in(tail: str) -> tuple[str, tuple[str, ...]]:
    """The Chinese explanation, and the references of the ``Asked in:`` line that may close the docstring."""
    match = _ASKED_IN.search(tail)
    if match is None:
        return tail, ()
    references = tuple(ref for ref in re.split(r"[,\s]+", match.group(1)) if ref)
    bad = [ref for ref in references if not (_THREAD.match(ref) or ref.startswith("https://"))]
    if not references or bad:
        raise ClaimFormatError(f"'Asked in:' names threads as owner/repo#number or pages by https:// address, not {bad}")
    return tail[: match.start()], references


def id_order(claim_id: str) -> tuple:
    """Sort key of an ID in the plan's order: P2.1d -> (2, 1, 'd'); P6.1 -> (6, 1, '')."""
    chapter, _, rest = claim_id[1:].partition(".")
    number = re.match(r"\d+", rest)
    return int(chapter), int(number.group()) if number else 0, rest[number.end():] if number else rest


def anchor(claim_id: str, function_name: str) -> str:
    """The stable anchor of a claim's section: its ID and its name, e.g. P2.3b-padded-keys-get-exactly-zero-…"""
    return f"{claim_id}-{function_name.removeprefix('test_').replace('_', '-')}"


@dataclass(frozen=True)
class Discovered:
    """A claim function as written in spec/, read without importing or running it."""

    function: str
    path: str
    line: int
    doc: str
    counterfeits: tuple[str, ...]


def discover(folder) -> dict[str, Discovered]:
    """Every test function in ``folder``'s test files, by name, with the counterfeits its markers declare."""
    import ast
    from pathlib import Path

    found = {}
    root = Path(folder)
    for path in sorted(root.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names = tuple(arg.value for deco in node.decorator_list if _is_counterfeits_mark(deco)
                              for arg in deco.args if isinstance(arg, ast.Constant))
                found[node.name] = Discovered(node.name, f"{root.name}/{path.name}", node.lineno,
                                              ast.get_docstring(node, clean=False) or "", names)
    return found


def _is_counterfeits_mark(node) -> bool:
    import ast

    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "counterfeits"
