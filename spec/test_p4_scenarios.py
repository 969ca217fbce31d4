"""Chapter P4 — scenarios, boundaries and numerical stability: sentence pairs,
batches of different lengths, several [MASK] tokens, special tokens, degenerate
inputs, half precision, and train vs eval.

Every claim on a model runs on each chosen attention implementation (the
``bert`` fixture), except the dtype claims, which need eager and sdpa side by
side: the ``implementations`` fixture loads both, and ``in_dtype`` casts copies
of them to float16 and bfloat16 (never the shared models).
"""

import copy
import math

import pytest
import torch
import transformers

from bertspec.proof import counterfeits, scope, teeth
from bertspec.models import loading, versions
from bertspec.tracing import masks, probe
from bertspec.proof.counterfeits import mask_value_minus_infinity
from bertspec.models.loading import last_hidden_state
from bertspec.handbook.figures import heatmap
from bertspec.models.inputs import Batch, encode, texts_for
from bertspec.tracing.modes import dropout_probabilities, training
from bertspec.proof.tolerances import TOL, forward_tolerance, half_precision_tolerance, model_tolerance, score_peak
from bertspec.tracing.trace import trace_forward

# CJK Extension B: split into single characters like any Chinese text, and rare enough to be
# in no Chinese BERT vocabulary we know (the claim checks the one under test).
UNKNOWN_CHARACTERS = (chr(0x20000), chr(0x20001))
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def beyond(actual, expected, tolerance: dict) -> bool:
    """True when the two differ by more than the tolerance allows somewhere."""
    return not torch.allclose(actual, expected, **tolerance)


def counted_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only: cumsum(mask) - 1, padding clipped to 0."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def stacked(trace, quantity: str = "probs") -> torch.Tensor:
    """(L, B, H, T, T): one attention quantity ("probs", "scores", "scores+mask") of every layer."""
    return torch.stack([trace.tensor(step.name).cpu() for step in trace.all(quantity)])


def received_by_key(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """(n, L, H, T): from a stacked (L, B, H, T, T) quantity, what every query has at the keys where ``where`` (B, T) is True."""
    return values.permute(1, 4, 0, 2, 3)[where.cpu()]


# ---- P4.1a single sentence vs sentence pair ----

def test_a_sentence_pair_is_laid_out_as_cls_a_sep_b_sep_with_token_types_0_then_1(bert, evidence):
    """A sentence pair is encoded as [CLS] A [SEP] B [SEP], token type 0 up to the first [SEP] and 1 after it; the mask rule is unchanged.

    The tokenizer opens with [CLS], closes each segment with [SEP] and marks
    segment B (with its closing [SEP]) by token type 1; one sentence is all type
    0. attention_mask still says only "real token or [PAD]": every layer may
    attend across the segment boundary — shown through what attention outputs
    (bertspec.tracing.probe): shifting segment A's values moves every segment-B query's
    output in every layer and head — and padding after a shorter pair is
    hidden exactly as after a single sentence. (A checkpoint with one token
    type is fed type 0 everywhere; the next claim shows why.)

    Claim ID: P4.1a
    Question: How is a sentence pair encoded, and what are its token_type_ids?
    问题：句子对是怎样编码的？token_type_ids 是什么？
    中文：句子对被编码为 [CLS] A [SEP] B [SEP]，第一个 [SEP] 及之前的 token 类型为 0，之后为 1；mask 规则不变。
    原因：分词器以 [CLS] 开头，用 [SEP] 结束每个片段，并把片段 B（含结尾的 [SEP]）标记为类型 1；单句全部为类型 0。
    attention_mask 仍只区分"真实 token 或 [PAD]"：各层可以跨片段关注——通过 attention 的输出展示（bertspec.tracing.probe）：平移片段 A 的
    value 会改变每一层、每个头中片段 B 每个 query 的输出——较短句子对之后的 padding 与单句时一样被屏蔽。
    （只有一种 token type 的 checkpoint 处处被喂入类型 0；原因见下一条断言。）
    """
    scope.token_types(bert)
    tok = bert.tokenizer
    (first, second), short = bert.texts.pair, bert.texts.short
    batch = bert.encode([first, short], text_pairs=[second, short])
    types = tok([first, short], [second, short], padding=True, return_tensors="pt", return_token_type_ids=True)["token_type_ids"]
    single = tok(first, return_tensors="pt", return_token_type_ids=True)
    a, b = tok.tokenize(first), tok.tokenize(second)
    tokens = bert.tokens(batch)
    am = batch.attention_mask.cpu()
    evidence.table("row 0: a pair", ["position", "token", "token_type_ids", "attention_mask"],
                   [(j, tokens[j], int(types[0, j]), int(am[0, j])) for j in range(len(tokens))])
    evidence.table("row 1: a shorter pair, padded", ["position", "token", "token_type_ids", "attention_mask"],
                   [(j, t, int(types[1, j]), int(am[1, j])) for j, t in enumerate(bert.tokens(batch, 1))])
    bert_layout = [tok.cls_token, *a, tok.sep_token, *b, tok.sep_token]
    if tokens != bert_layout and bert.anatomy.family == "roberta":
        scope.differs(bert, "RoBERTa's own tokenizer writes a pair <s> A </s></s> B </s>, every token type 0",
                      scope.ROBERTA_POSITIONS)
    assert tokens == bert_layout
    assert not bool(am[1].all()), "the shorter pair is padded"
    for row in range(2):
        first_sep, last_sep = batch.positions(tok.sep_token_id, row)
        segment_b = (torch.arange(types.shape[1]) > first_sep) & (torch.arange(types.shape[1]) <= last_sep)
        assert torch.equal(types[row], segment_b.long()), f"row {row}: type 1 exactly from after the first [SEP] to the last"
    assert not bool(single["token_type_ids"].any()), "one sentence is all type 0"
    trace, _ = bert.trace(batch)
    n, t = batch.input_ids.shape
    assert torch.equal(masks.allowed(trace.all("attention_mask")[0].tensor, n, t), am.bool()[:, None, :].expand(n, t, t))
    first_sep = batch.positions(tok.sep_token_id)[0]
    segment_a = (torch.arange(t) <= first_sep)[None].expand(n, t).clone()
    segment_a[1] = False
    moved = probe.value_influence(bert.model, batch.as_kwargs(), segment_a.to(bert.device))[:, 0, :, first_sep + 1:int(am[0].sum())]
    evidence.table("row 0: segment A's values shifted", ["layer", "smallest |Δ output| of a segment-B query"],
                   [(i, m.min()) for i, m in enumerate(moved)])
    assert bool((moved > 0).all()), "segment B's queries attend to segment A"


def test_the_tokenizers_segment_b_ids_need_a_second_token_type_row_or_transformers_fails_with_an_index_error(bert, evidence):
    """A pair's token_type_ids from the tokenizer run on a checkpoint with two token types; with one (type_vocab_size 1) transformers fails with an index error that never names token types.

    The tokenizer marks segment B with type 1 without reading the model's
    config. token_type_embeddings has type_vocab_size rows, so a checkpoint
    trained with one segment (type_vocab_size 1, as RoBERTa-style models)
    has no row 1: the lookup fails deep inside the embedding with "index out of
    range in self". Users of such checkpoints pass token type 0 everywhere (the
    spec's encode does so); the claim shows both cases as observed.

    Claim ID: P4.1a
    Question: Can I feed a sentence pair's token_type_ids to any BERT checkpoint?
    问题：句对的 token_type_ids 能喂给任何 BERT checkpoint 吗？
    中文：分词器给出的句对 token_type_ids 在有两种 token type 的 checkpoint 上能运行；只有一种（type_vocab_size 为 1）时，transformers 报索引错误，且从不提 token type。
    原因：分词器不读模型的 config，总是把片段 B 标为类型 1。token_type_embeddings 有 type_vocab_size 行，所以只用一个片段训练的
    checkpoint（type_vocab_size 为 1，如 RoBERTa 风格的模型）没有第 1 行：查表在嵌入层深处失败，报 "index out of range in self"。
    这类 checkpoint 的用户处处传类型 0（spec 的 encode 就这样做）；本断言按观察结果展示两种情况。
    """
    scope.token_types(bert)
    tok = bert.tokenizer
    enc = tok(*bert.texts.pair, return_tensors="pt", return_token_type_ids=True).to(bert.device)
    types = int(enc["token_type_ids"].max()) + 1
    if bert.config.type_vocab_size >= types:
        with torch.no_grad():
            outcome = f"runs: {tuple(bert.model(**enc).logits.shape)} logits"
    else:
        with pytest.raises(IndexError) as err, torch.no_grad():
            bert.model(**enc)
        outcome = f"IndexError: {str(err.value).splitlines()[0]}"
        assert "token" not in str(err.value).lower()
    evidence.table("the tokenizer's token_type_ids of a pair", ["types the tokenizer uses", "type_vocab_size", "what happens"],
                   [(types, bert.config.type_vocab_size, outcome)])
    assert types == 2


@pytest.mark.counterfeits("token_types_ignored")
def test_token_type_embeddings_add_row_0_to_segment_a_and_row_1_to_segment_b(bert, evidence):
    """The embeddings add token_type_embeddings row 0 at segment A and row 1 at segment B, on top of word and position embeddings.

    BertEmbeddings sums (word + token type) + position, then applies LayerNorm.
    The segment is all the model knows of the pair structure besides [SEP]: the
    test derives each position's segment from the [SEP] positions, and checks
    that the traced token-type rows are exactly those rows of the table and
    that the LayerNorm input is exactly the sum. A single sentence gets row 0
    everywhere, which is not "nothing": row 0 is a learned vector.

    Claim ID: P4.1a
    Question: What do token_type_ids add to the embeddings?
    问题：token_type_ids 给嵌入加了什么？
    中文：嵌入层在片段 A 加 token_type_embeddings 的第 0 行，在片段 B 加第 1 行，再加上词嵌入与位置嵌入。
    原因：BertEmbeddings 计算 (词 + token 类型) + 位置，然后做 LayerNorm。除 [SEP] 外，片段信息是模型对句子对结构的唯一了解：
    测试根据 [SEP] 位置推出每个位置所属片段，检查 trace 到的类型嵌入恰好是表中对应行，LayerNorm 的输入恰好是三者之和。
    单句各处都加第 0 行，这不是"什么都不加"：第 0 行也是学到的向量。
    """
    a = bert.anatomy
    scope.token_types(bert)
    if bert.config.type_vocab_size < 2:
        pytest.skip("type_vocab_size is 1: one token-type row, added at every position of both segments")
    batch = bert.encode(*bert.texts.pair)
    trace, _ = bert.trace(batch)
    table = bert.module(a.token_type_embeddings).weight.detach()
    first_sep = batch.positions(bert.tokenizer.sep_token_id)[0]
    segment = (torch.arange(batch.input_ids.shape[1], device=table.device) > first_sep).long()
    added = trace.tensor(a.token_type_embeddings)[0]
    parts = [trace.tensor(path) for path in (a.word_embeddings, a.token_type_embeddings, a.position_embeddings)]
    evidence.table("token_type_embeddings", ["row", "used at positions", "norm"],
                   [(r, (segment == r).nonzero().flatten().tolist(), table[r].norm()) for r in range(2)])
    evidence.table("segment B minus segment A rows", ["max |row 1 - row 0|"], [((table[1] - table[0]).abs().max(),)])
    assert torch.equal(added, table[segment])
    assert torch.equal(trace.tensor(f"{a.embedding_norm}:input"), (parts[0] + parts[1]) + parts[2])


# ---- P4.1b different lengths in one batch ----

@pytest.mark.counterfeits("mask_value_minus_one", "mask_dropped")
def test_a_real_tokens_output_is_the_same_alone_and_in_a_padded_batch(bert, evidence):
    """A real token's output in a right-padded batch equals its output when its sentence runs alone.

    [PAD] keys get probability exactly 0 (the figure: the padded columns of the
    shorter row are 0.0), so padding adds nothing to any real token. The
    outputs are equal within a rounding bound, not bit for bit, on eager too:
    the batch's matrices are longer and wider, so BLAS splits its sums
    differently, and sdpa may pick another kernel. The bound
    (bertspec.proof.tolerances.forward_tolerance) is L layers x (2 (sqrt(head_dim)
    u32 + 2u) x the largest score + (2 sqrt(hidden) + sqrt(intermediate)) u32
    + 3u) x max|output|: a score error becomes a relative probability error,
    so checkpoints with trained-size scores (tens) are allowed more (observed:
    about 1e-6 on the bundled model, 3e-6 on a 12-layer model, 4.7e-5 with
    scores of 80).

    Claim ID: P4.1b
    Question: Does putting a sentence in a padded batch change its outputs?
    问题：把句子放进带 padding 的 batch，会改变它的输出吗？
    中文：右侧 padding 的 batch 中，真实 token 的输出与其句子单独运行时相同。
    原因：[PAD] key 的概率严格为 0（见图：较短一行的 padding 列为 0.0），padding 对真实 token 没有贡献。
    输出在 float32 内核容差内相同而非逐位相同：batch 的矩阵更长更宽，BLAS 的求和分块不同，sdpa 也可能选用别的内核
    （实测自带模型约 1e-6，12 层模型约 3e-6，分数达 80 时 4.7e-5）。容差是舍入误差界 bertspec.proof.tolerances.forward_tolerance：
    L 层 ×（2 (sqrt(head_dim) u32 + 2u) × 最大分数 + (2 sqrt(hidden) + sqrt(intermediate)) u32 + 3u）× max|输出|。
    """
    texts = [bert.texts.sentence, bert.texts.short]
    batch = bert.encode(texts)
    trace, _ = bert.trace(batch)
    together = trace.tensor(bert.anatomy.sequence_output_step(bert.config.num_hidden_layers))
    pad = batch.attention_mask[1].cpu() == 0
    probs = trace.tensor(trace.all("probs")[0].name)[1, 0].cpu()
    evidence.figure("layer 0, head 0, row 1 (the shorter sentence)",
                    heatmap(probs, f"{bert.attn_implementation}: [PAD] key columns {pad.nonzero().flatten().tolist()} are 0.0",
                            bert.tokens(batch, 1)),
                    derived=trace.all("probs")[0].source == "derived")
    evidence.table("row 1, layer 0: probability received by each key (summed over queries and heads)",
                   ["key position", "[PAD]", "sum"],
                   [(j, bool(pad[j]), trace.tensor(trace.all("probs")[0].name)[1, :, :, j].sum()) for j in range(len(pad))])
    assert bool(pad.any()) and bool((probs[:, pad] == 0).all())
    rows = []
    for r, text in enumerate(texts):
        alone = last_hidden_state(bert.model, bert.encode(text))[0]
        in_batch = together[r, :alone.shape[0]]
        tolerance = model_tolerance(bert, batch, alone)
        rows.append((r, text, alone.shape[0], batch.input_ids.shape[1], (in_batch - alone).abs().max(), tolerance["atol"]))
        torch.testing.assert_close(in_batch, alone, **tolerance)
    evidence.table("last hidden state, real tokens: in the batch vs alone",
                   ["row", "text", "real tokens", "batch length", "max |diff|", "bound"], rows)


@pytest.mark.counterfeits("positions_counted_from_one", "positions_from_mask")
def test_left_padding_shifts_positions_unless_position_ids_count_only_real_tokens(bert, evidence):
    """Left padding changes the real tokens' outputs unless position_ids = cumsum(mask) - 1 are passed.

    Without position_ids BERT uses 0..T-1 for every row, so in a left-padded
    row the first real token ([CLS]) sits at position n_pad instead of 0, and
    every real token gets another position embedding: outputs change by O(1).
    Passing position ids that count only real tokens (cumsum(mask) - 1, the
    padding clipped to 0) gives the real tokens their unpadded positions back,
    and the outputs equal the sentence alone within the float32 kernel tolerance.
    Right padding needs none of this: real tokens come first.

    Claim ID: P4.1b
    Question: Can I pad BERT's inputs on the left?
    问题：BERT 的输入可以在左侧 padding 吗？
    中文：左侧 padding 会改变真实 token 的输出，除非传入 position_ids = cumsum(mask) - 1。
    原因：不传 position_ids 时 BERT 对每行都用 0..T-1，左侧 padding 的行中第一个真实 token（[CLS]）位于 n_pad 而不是 0，
    每个真实 token 的位置嵌入都变了，输出变化是 O(1) 量级。传入只数真实 token 的位置（cumsum(mask) - 1，padding 截为 0），
    真实 token 恢复原来的位置，输出在 float32 内核容差内等于单独运行的结果。右侧 padding 不需要这样做：真实 token 在前。
    """
    scope.positions_from_zero(bert)
    batch = bert.encode([bert.texts.sentence, bert.texts.short], padding_side="left")
    alone = last_hidden_state(bert.model, bert.encode(bert.texts.short))[0]
    n = alone.shape[0]
    positions = counted_positions(batch.attention_mask)
    default = last_hidden_state(bert.model, batch)[1, -n:]
    counted = last_hidden_state(bert.model, batch, position_ids=positions)[1, -n:]
    t = batch.input_ids.shape[1]
    evidence.table("row 1, left-padded", ["position", "token", "attention_mask", "default position id", "cumsum(mask) - 1, clipped"],
                   [(j, bert.tokens(batch, 1)[j], int(batch.attention_mask[1, j]), j, int(positions[1, j])) for j in range(t)])
    evidence.table("real tokens of row 1 vs the sentence alone", ["position_ids", "max |diff|"],
                   [("not passed (0..T-1)", (default - alone).abs().max()), ("cumsum(mask) - 1", (counted - alone).abs().max())])
    assert int(batch.attention_mask[1, 0]) == 0, "the shorter row is padded on the left"
    # the rounding bound (bertspec.proof.tolerances.forward_tolerance), scores measured on the left-padded batch
    tolerance = model_tolerance(bert, batch, alone, position_ids=positions)
    evidence.table("rounding bound", ["atol"], [(tolerance["atol"],)])
    assert beyond(default, alone, tolerance), "left padding without position_ids should shift the outputs"
    torch.testing.assert_close(counted, alone, **tolerance)


# ---- P4.1c several [MASK] tokens ----

def test_several_masks_are_predicted_in_one_pass_and_none_sees_anothers_answer(mlm, evidence):
    """Two [MASK]s get their logits from one pass, and filling either one with its true token changes the other's logits.

    BERT predicts every position in one forward pass; there is no left-to-right
    order. At that pass each [MASK] sees the other only as [MASK]: giving one
    its answer changes the other's logits, so the one-pass logits were computed
    without it. That holds in both directions — the earlier [MASK] depends on
    the later one too — so the one-pass result is what each [MASK] gets when it
    is filled first, whichever order a sequential fill would take, while a
    sequential fill's second step sees different logits.

    Claim ID: P4.1c
    Question: How does BERT predict several [MASK] tokens in one sentence?
    问题：一句话里有多个 [MASK] 时，BERT 怎样预测？
    中文：两个 [MASK] 的 logits 来自同一次前向传播；把其中任一个换成正确答案，另一个的 logits 就会改变。
    原因：BERT 一次前向传播预测所有位置，没有从左到右的顺序。这次传播中每个 [MASK] 看到的另一个只是 [MASK]：
    给出其中一个的答案会改变另一个的 logits，说明一次传播的 logits 没有用到答案。两个方向都成立（前一个也依赖后一个），
    所以一次传播的结果就是每个 [MASK] 在按任意顺序逐个填充时"先被填"的结果，而逐个填充的第二步看到的 logits 不同。
    """
    tok = mlm.tokenizer
    text, answers = mlm.texts.two_masks, mlm.texts.two_masks_truth
    batch = mlm.encode(text)
    where = batch.positions(tok.mask_token_id)
    truth = tok.convert_tokens_to_ids(list(answers))

    def logits(input_ids):
        with torch.no_grad():
            return mlm.model(**{**batch.as_kwargs(), "input_ids": input_ids}).logits[0]

    one_pass = logits(batch.input_ids)
    rows = []
    for filled, other in ((0, 1), (1, 0)):
        ids = batch.input_ids.clone()
        ids[0, where[filled]] = truth[filled]
        after = logits(ids)[where[other]]
        rows.append((f"{where[filled]} ← {answers[filled]}", where[other], mlm.token(one_pass[where[other]].argmax()),
                     mlm.token(after.argmax()), (after - one_pass[where[other]]).abs().max()))
        assert beyond(after, one_pass[where[other]], TOL["float32_kernels"]), f"[MASK] at {where[other]} ignored the answer"
    evidence.table(text, ["filled position ← true token", "other [MASK]", "one-pass argmax", "argmax after filling",
                               "max |Δ logits|"], rows)
    assert len(where) == 2 and one_pass.shape == (batch.input_ids.shape[1], mlm.config.vocab_size)
    assert bool(torch.isfinite(one_pass[where]).all())


# ---- P4.1d special tokens ----

@pytest.mark.counterfeits("mask_value_minus_one")
def test_cls_and_sep_are_attended_like_any_token_while_pad_keys_get_exactly_zero(bert, evidence):
    """[CLS] opens every row and [SEP] closes its real tokens; both are ordinary attended keys, and only [PAD] keys get exactly 0.

    Nothing in attention treats [CLS] or [SEP] specially (ids 101 and 102 in
    bert-base-chinese; the spec reads them from the tokenizer): their
    attention_mask is 1, so every query (padded queries too) gives them a
    positive probability. [PAD] follows the last [SEP] with attention_mask 0 and
    receives exactly 0 from every query, layer and head. Shown through what
    attention outputs, so on the fused sdpa kernel too: shifting a token's
    value moves every query's output for [CLS] and [SEP], and no output at all
    for [PAD] (bertspec.tracing.probe).

    Claim ID: P4.1d
    Question: Does attention treat [CLS] and [SEP] specially?
    问题：attention 会特殊对待 [CLS] 和 [SEP] 吗？
    中文：[CLS] 位于每行开头，[SEP] 结束真实 token；二者都是被正常关注的 key，只有 [PAD] key 的概率严格为 0。
    原因：attention 中没有对 [CLS] 或 [SEP] 的特殊处理（bert-base-chinese 中 id 为 101 与 102；spec 从分词器读取）：它们的
    attention_mask 为 1，每个 query（包括 padding 位置的 query）都给它们正的概率。[PAD] 位于最后一个 [SEP] 之后，attention_mask 为 0，
    从每个 query、每层、每个头得到的概率都严格为 0。证明依据的是 attention 的输出，因此对 sdpa 融合内核同样成立：平移某个 token 的
    value，[CLS] 与 [SEP] 会改变每个 query 的输出，[PAD] 则不改变任何输出（bertspec.tracing.probe）。
    """
    tok = bert.tokenizer
    batch = bert.example()
    scope.attends_globally(bert, batch.input_ids.shape[1])
    ids, am = batch.input_ids.cpu(), batch.attention_mask.cpu()
    lengths = am.sum(1).tolist()
    trace, _ = bert.trace(batch)
    probs = stacked(trace)
    rows, moved = [], {}
    for name, token_id in (("[CLS]", tok.cls_token_id), ("[SEP]", tok.sep_token_id), ("[PAD]", tok.pad_token_id)):
        got = received_by_key(probs, ids == token_id)
        moved[name] = probe.value_influence(bert.model, batch.as_kwargs(), batch.input_ids == token_id)
        rows.append((name, token_id, [batch.positions(token_id, r) for r in range(2)], got.min(), got.max(),
                     moved[name].min(), moved[name].max()))
    evidence.table("received as a key (all layers, heads, queries)",
                   ["token", "id", "positions per row", "min probability", "max probability",
                    "min |Δ output|, its value shifted", "max |Δ output|"], rows, derived=trace.all("probs")[0].source == "derived")
    for r, n in enumerate(lengths):
        assert ids[r, 0] == tok.cls_token_id and ids[r, n - 1] == tok.sep_token_id
        assert bool((ids[r, n:] == tok.pad_token_id).all())
    assert bool((moved["[CLS]"] > 0).all()) and bool((moved["[SEP]"] > 0).all()), "every query, padded ones too"
    assert bool((ids == tok.pad_token_id).any()) and torch.equal(moved["[PAD]"], torch.zeros_like(moved["[PAD]"]))


def test_the_mlm_collator_never_labels_cls_sep_or_pad_so_the_loss_never_sees_them(tokenizer, evidence):
    """transformers' MLM data collator leaves [CLS], [SEP] and [PAD] out of the labels (-100), even when it masks every other token.

    The loss itself does not know special tokens: CrossEntropyLoss skips a
    position only when its label is -100 (chapter P3). It is the data
    pipeline — DataCollatorForLanguageModeling, through the tokenizer's
    special_tokens_mask and the padding — that never picks them for
    prediction. With mlm_probability = 1.0 every other token is labelled with
    its own id, so the rule is visible without randomness.

    Claim ID: P4.1d
    Question: Are [CLS], [SEP] and [PAD] ever labelled for the MLM loss?
    问题：[CLS]、[SEP]、[PAD] 会被打上 MLM 的标签吗？
    中文：transformers 的 MLM 数据整理器不给 [CLS]、[SEP]、[PAD] 打标签（-100），即使其他每个 token 都被选中。
    原因：损失函数本身不认识特殊 token：CrossEntropyLoss 只跳过 label 为 -100 的位置（见 P3 章）。
    是数据管道——DataCollatorForLanguageModeling 借助分词器的 special_tokens_mask 与 padding——从不选它们做预测。
    mlm_probability = 1.0 时其他 token 都以自身 id 为 label，规则一目了然，不受随机性影响。
    """
    from transformers import DataCollatorForLanguageModeling

    texts = texts_for(tokenizer)
    enc = tokenizer([texts.pair[0], texts.short])
    features = [{key: enc[key][i] for key in enc} for i in range(2)]
    with torch.random.fork_rng():  # the collator draws from the global generator; other claims' seeds stay untouched
        out = DataCollatorForLanguageModeling(tokenizer, mlm_probability=1.0)(features)
    labels = out["labels"]
    original = torch.nn.utils.rnn.pad_sequence([torch.tensor(f["input_ids"]) for f in features], batch_first=True,
                                               padding_value=tokenizer.pad_token_id)
    cls_sep_pad = torch.isin(original, torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]))
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))  # [UNK] too: the collator excludes every special id
    evidence.table("row 1 (padded)", ["position", "token", "label"],
                   [(j, tokenizer.convert_ids_to_tokens(int(i)), int(lab)) for j, (i, lab) in enumerate(zip(original[1], labels[1]))])
    assert bool(cls_sep_pad.any()) and bool((original == tokenizer.pad_token_id).any())
    assert bool((labels[cls_sep_pad] == -100).all())
    assert torch.equal(labels[~special], original[~special])


@pytest.mark.counterfeits("mask_value_minus_one", "mask_dropped")
def test_padding_idx_freezes_the_pad_row_but_the_attention_mask_is_what_hides_padding(bert, evidence):
    """padding_idx keeps the [PAD] embedding row out of training, it does not make it zero; the attention mask is what hides padding.

    nn.Embedding(padding_idx=0) gives row 0 no gradient from the lookup, so
    training never changes it; it is zeroed only at initialisation, and a
    saved checkpoint may hold anything there (the evidence shows what this one
    holds). Real tokens never see it anyway: replacing the [PAD] row's vector by
    a large random one changes the padded positions' own outputs but leaves
    every real token's output unchanged, because [PAD] keys get probability 0.

    Claim ID: P4.1d
    Question: Does padding_idx make the [PAD] embedding zero?
    问题：padding_idx 会让 [PAD] 的嵌入为零吗？
    中文：padding_idx 让 [PAD] 的嵌入行不参与训练，但不保证它为零；真正屏蔽 padding 的是 attention mask。
    原因：nn.Embedding(padding_idx=0) 在查表时不给第 0 行梯度，训练不会改变它；它只在初始化时被置零，
    保存的 checkpoint 中可以是任何值（证据中列出本模型的值）。真实 token 本来就看不到它：把 [PAD] 行换成一个很大的随机向量，
    padding 位置自身的输出会变，但每个真实 token 的输出不变，因为 [PAD] key 的概率为 0。
    """
    words = bert.word_embeddings
    pad_id = bert.tokenizer.pad_token_id
    batch = bert.example()
    pad = batch.attention_mask == 0
    lookup = copy.deepcopy(words)  # a copy: the gradient must not touch the shared model
    lookup(batch.input_ids).sum().backward()
    used = batch.input_ids[~pad].unique()
    stranger = torch.randn(words.embedding_dim, generator=torch.Generator().manual_seed(0)).to(words.weight) * 10

    def replace_pad_row(module, args, output):
        return torch.where((args[0] == pad_id)[..., None], stranger, output)

    original = last_hidden_state(bert.model, batch)
    handle = words.register_forward_hook(replace_pad_row)
    try:
        replaced = last_hidden_state(bert.model, batch)
    finally:
        handle.remove()
    row = words.weight[pad_id].detach()
    evidence.table("the [PAD] row in this checkpoint", ["padding_idx", "config.pad_token_id", "max |row|", "row is zero"],
                   [(words.padding_idx, bert.config.pad_token_id, row.abs().max(), bool((row == 0).all()))])
    evidence.table("[PAD] row replaced by a random vector of norm ~" + f"{stranger.norm():.3g}", ["positions", "max |Δ last hidden|"],
                   [("real tokens", (replaced - original)[~pad].abs().max()), ("padded", (replaced - original)[pad].abs().max())])
    assert words.padding_idx == bert.config.pad_token_id == pad_id
    assert torch.equal(lookup.weight.grad[pad_id], torch.zeros_like(row))
    assert bool((lookup.weight.grad[used].abs().sum(-1) > 0).all())
    torch.testing.assert_close(replaced[~pad], original[~pad], **TOL["exact"])
    assert beyond(replaced[pad], original[pad], TOL["float32_kernels"]), "a padded position's output should depend on its embedding"


# ---- P4.2c boundaries ----

def test_a_row_with_every_position_padded_gives_finite_outputs_not_nan(bert, evidence):
    """With every position padded the model still gives finite outputs: uniform attention under an additive mask, a zero context under a boolean one.

    An additive mask puts finfo.min on every key of the row; score + finfo.min
    rounds to finfo.min itself, so all entries are equal and softmax gives each
    key exactly 1/T: the context is the mean of the values (compared after the
    layer's output projection, which every family records). This is why the mask
    is finfo.min and not -inf: with -inf in its place eager attention computes
    softmax of a row of -inf, 0/0, and every logit is NaN (checked). Where
    transformers passes sdpa a boolean mask (5.x), torch's fused kernel returns
    a zero context for a row with no allowed key (its documented reference
    maths, filling -inf, would give NaN); the evidence shows that it does the
    same with a -inf float mask. Either way no NaN reaches the logits.

    Claim ID: P4.2c
    Question: Does a row that is all padding produce NaN?
    问题：一整行都是 padding 时会出现 NaN 吗？
    中文：所有位置都是 padding 时模型仍给出有限输出：加性 mask 下注意力是均匀的，布尔 mask 下上下文为零。
    原因：加性 mask 在该行每个 key 上加 finfo.min；score + finfo.min 舍入后就是 finfo.min，所有元素相等，softmax 给每个 key
    严格的 1/T，上下文是 value 的平均（在该层输出投影之后比较）。这就是 mask 用 finfo.min 而不用 -inf 的原因：换成 -inf 后 eager 对一整行 -inf 做 softmax
    （0/0），所有 logits 都是 NaN（已检查）。transformers 5.x 给 sdpa 传布尔 mask 时，torch 的融合内核对没有可见 key 的行返回
    零上下文（按其文档中的参考公式填 -inf 会得到 NaN）；证据显示它对 -inf 浮点 mask 也是如此。两种情况下 logits 中都没有 NaN。
    """
    encoded = bert.example(padded=False)
    batch = bert.batch(encoded.input_ids, torch.zeros_like(encoded.attention_mask))
    trace, output = bert.trace(batch)
    t = batch.input_ids.shape[1]
    received = trace.all("attention_mask")[0].tensor
    boolean = received is not None and received.dtype == torch.bool
    a = bert.anatomy
    rows = []
    for layer in range(bert.config.num_hidden_layers):
        values = bert.traced_values(trace, layer)
        expected = bert.projected(layer, torch.zeros_like(values) if boolean else values.mean(1, keepdim=True).expand_as(values))
        projected = trace.tensor(a.step(layer, a.attention_output))
        rows.append((layer, (projected - expected).abs().max()))
        torch.testing.assert_close(projected, expected, **(TOL["exact"] if boolean else TOL["float32_kernels"]))
        if not boolean:
            assert bool((trace.tensor(a.attention_step(layer, "scores+mask")) == torch.finfo(torch.float32).min).all())
            probs = trace.tensor(a.attention_step(layer, "probs"))
            assert torch.equal(probs, torch.full_like(probs, 1 / t)), "every key gets exactly 1/T"
    # Where attention hides keys with masked_fill itself, no -inf can be handed to it (counterfeits.why_not says why).
    no_minus_inf = counterfeits.why_not("mask_value_minus_infinity", bert)
    with_minus_inf = None
    if no_minus_inf is None:
        with mask_value_minus_infinity(bert), torch.no_grad():
            with_minus_inf = bert.model(**batch.as_kwargs()).logits
    evidence.table("all padded", ["layer mask", "T", "expected context", "logits finite", "logits NaN with -inf for finfo.min"],
                   [(masks.form(received, 1, t), t, "0 (fused kernel)" if boolean else "mean of V (probabilities 1/T)",
                     bool(torch.isfinite(output.logits).all()),
                     no_minus_inf or bool(torch.isnan(with_minus_inf).all()))])
    evidence.table("attention output projection vs the projection of the expected context", ["layer", "max |diff|"], rows)
    assert bool(torch.isfinite(output.logits).all())
    if bert.attn_implementation == "eager" and with_minus_inf is not None:
        assert bool(torch.isnan(with_minus_inf).all()), "a row of -inf should give NaN: softmax is 0/0"


def test_calling_the_model_without_attention_mask_is_the_same_as_an_all_ones_mask(bert, evidence):
    """Leaving attention_mask out gives bit-for-bit the outputs of an all-ones mask, and not those of a mask that hides a token.

    A missing mask means "every token is real". How the installed version gets
    there differs (bertspec/models/versions.py, MISSING_ATTENTION_MASK): transformers
    4.57's BertModel fills a missing attention_mask with ones and converts it
    like any 2D mask; 5.x hands the None to create_bidirectional_mask, which
    returns None, so no mask is built at all — as for an all-ones mask, which it
    also skips. Either way both calls run the same arithmetic. A mask that hides
    the last token gives another output, so the comparison can tell.

    Claim ID: P4.2c
    Question: What happens if I don't pass attention_mask?
    问题：不传 attention_mask 会怎样？
    中文：不传 attention_mask 与传全 1 的 mask 输出逐位相同，而与隐藏了某个 token 的 mask 不同。
    原因：缺失的 mask 表示“每个 token 都是真实的”。所装版本如何做到这一点各不相同（bertspec/models/versions.py 的 MISSING_ATTENTION_MASK）：
    transformers 4.57 的 BertModel 用全 1 填充缺失的 attention_mask，再像任何二维 mask 一样转换；5.x 把 None 交给
    create_bidirectional_mask，它返回 None，根本不构造 mask——与全 1 mask 一样（它同样被跳过）。两种调用都执行相同的运算。
    隐藏最后一个 token 的 mask 给出不同的输出，所以比较是有区分力的。
    """
    batch = bert.example(padded=False)
    ones = last_hidden_state(bert.model, batch)
    missing = last_hidden_state(bert.model, batch, attention_mask=None)
    hiding = last_hidden_state(bert.model, batch, attention_mask=batch.attention_mask.masked_fill(
        torch.arange(batch.input_ids.shape[1], device=bert.device) == batch.input_ids.shape[1] - 1, 0))
    evidence.table("last hidden state without attention_mask vs", ["attention_mask", "max |diff|"],
                   [("all ones", (missing - ones).abs().max()), ("last token hidden", (missing - hiding).abs().max())])
    evidence.table("what a missing attention_mask becomes, per version",
                   *versions.table(versions.MISSING_ATTENTION_MASK, ["transformers"], versions.MAJOR))
    assert bool(batch.attention_mask.all())
    torch.testing.assert_close(missing, ones, **TOL["exact"])
    assert beyond(missing, hiding, TOL["float32_kernels"])


def test_a_single_token_attends_to_itself_with_probability_exactly_one(bert, evidence):
    """A one-token input ([CLS] alone) runs, and its only query gives its only key probability exactly 1.0 in every layer.

    softmax over one entry is exp(0) / exp(0) = 1 exactly, so the attention
    output is that token's own value vector (compared after the layer's output
    projection, which every family records). Nothing in BERT needs a second
    token.

    Claim ID: P4.2c
    Question: Does BERT work on an input of a single token?
    问题：只有一个 token 的输入，BERT 也能处理吗？
    中文：只有一个 token（单独的 [CLS]）的输入也能运行，它唯一的 query 在每一层都给唯一的 key 严格为 1.0 的概率。
    原因：只有一个元素的 softmax 是 exp(0)/exp(0) = 1，精确成立，因此注意力输出就是该 token 自己的 value 向量（在该层的输出投影之后比较，每个家族都记录这一步）。BERT 不需要第二个 token。
    """
    a = bert.anatomy
    batch = bert.batch(torch.tensor([[bert.tokenizer.cls_token_id]], device=bert.device))
    trace, output = bert.trace(batch)
    probs = stacked(trace)
    rows = []
    for layer in range(bert.config.num_hidden_layers):
        projected, expected = trace.tensor(a.step(layer, a.attention_output)), bert.projected(layer, bert.traced_values(trace, layer))
        rows.append((layer, trace.tensor(a.attention_step(layer, "probs")).flatten().tolist(), (projected - expected).abs().max()))
        torch.testing.assert_close(projected, expected, **TOL["exact"])
    evidence.table("[CLS] alone", ["layer", "probability per head", "max |attention output - projection of its value|"], rows)
    assert torch.equal(probs, torch.ones_like(probs))
    assert output.logits.shape[:2] == (1, 1) and bool(torch.isfinite(output.logits).all())


def test_an_empty_string_is_encoded_as_cls_sep_and_runs_like_any_input(bert, evidence):
    """An empty string becomes [CLS] [SEP], two real tokens, and the model runs on it normally.

    The tokenizer adds the special tokens whatever the text; the model sees a
    two-token sequence with attention_mask 1, every attention row a proper
    distribution over the two keys.

    Claim ID: P4.2c
    Question: What happens if I give BERT an empty string?
    问题：给 BERT 输入空字符串会怎样？
    中文：空字符串被编码为 [CLS] [SEP] 两个真实 token，模型正常运行。
    原因：无论文本是什么，分词器都会加上特殊 token；模型看到的是 attention_mask 为 1 的两个 token，每一行注意力都是两个 key 上的正常分布。
    """
    batch = bert.encode("")
    trace, output = bert.trace(batch)
    probs = stacked(trace)
    evidence.table("encoded", ["tokens", "attention_mask", "logits shape", "min probability"],
                   [(bert.tokens(batch), batch.attention_mask[0].tolist(), tuple(output.logits.shape), probs.min())])
    assert bert.tokens(batch) == [bert.tokenizer.cls_token, bert.tokenizer.sep_token] and bool(batch.attention_mask.all())
    assert bool(torch.isfinite(output.logits).all()) and bool((probs > 0).all())
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), **TOL["prob_sum"])


def test_transformers_itself_fails_on_an_over_long_input_with_an_error_that_never_says_too_long(bert, evidence):
    """Given more tokens than max_position_embeddings, transformers fails with a size or index error that never says "too long".

    The position table has max_position_embeddings rows. Without position_ids
    BERT slices its 0..max-1 buffer, which comes out shorter than the input, and
    the next expand or addition fails on tensor sizes (a RuntimeError); with
    explicit position ids the lookup itself fails, "index out of range" (an
    IndexError). No message names the cause, which is why the toolkit counts
    tokens first and says "too long" (chapter P1). The evidence lists the
    messages of the installed version.

    Claim ID: P4.2c
    Question: What does transformers do with an input that is too long?
    问题：输入过长时 transformers 会怎样？
    中文：token 数超过 max_position_embeddings 时，transformers 报的是尺寸或索引错误，从不说"too long"。
    原因：位置嵌入表只有 max_position_embeddings 行。不传 position_ids 时 BERT 截取 0..max-1 的缓冲区，长度比输入短，
    随后的 expand 或加法因张量尺寸不符而失败（RuntimeError）；显式传入位置时查表本身失败，报"index out of range"（IndexError）。
    这些信息都没说出原因，所以工具包先数 token 并明确说"too long"（见 P1 章）。证据中列出所装版本的报错信息。
    """
    if bert.anatomy.position_embeddings is None:
        scope.differs(bert, "it has no position table to run past (rotary positions); the toolkit still refuses inputs "
                            "longer than max_position_embeddings, the length it was trained for", scope.MODERNBERT_ROTARY)
    n = bert.config.max_position_embeddings + 1
    enc = bert.tokenizer("字" * (n - 2), return_tensors="pt", return_token_type_ids=bert.typed).to(bert.device)
    calls = {
        "input_ids only": dict(input_ids=enc["input_ids"]),
        "as tokenized (ids, mask, token types)": dict(enc),
    }
    if scope.takes_position_ids(bert):
        calls["with position_ids 0..n-1"] = dict(enc, position_ids=torch.arange(n, device=bert.device)[None])
    rows = []
    for call, kwargs in calls.items():
        with pytest.raises((RuntimeError, IndexError)) as err, torch.no_grad():
            bert.model(**kwargs)
        rows.append((call, type(err.value).__name__, str(err.value).splitlines()[0][:160]))
    evidence.table(f"{n} tokens, {n - 1} positions (transformers {transformers.__version__})", ["call", "error", "message"], rows)
    assert enc["input_ids"].shape[1] == n
    for call, _, message in rows:
        assert "too long" not in message.lower() and "max_position" not in message, call


def test_characters_outside_the_vocabulary_all_become_the_same_unk_token(bert, evidence):
    """Characters the vocabulary lacks become [UNK], all the same one: the model cannot tell them apart, and attends to [UNK] like any token.

    The tokenizer splits CJK text into characters and maps each unknown one to
    [UNK] (id 100 in bert-base-chinese and bert-base-uncased; the spec reads it
    from the tokenizer), so two different unknown characters in the same
    context give identical input ids and hence identical outputs; the original
    character cannot be recovered from the ids. The two characters come from
    CJK Extension B, in no BERT vocabulary we know (checked on the one under
    test); the context is in the vocabulary's language, and may hold [UNK]s of
    its own. [UNK] has attention_mask 1 and is attended: shifting its value
    moves every query's attention output (bertspec.tracing.probe).

    Claim ID: P4.2c
    Question: What happens to characters that are not in the vocabulary?
    问题：词表里没有的字会变成什么？
    中文：词表中没有的字都变成同一个 [UNK]：模型无法区分它们，并像普通 token 一样关注 [UNK]。
    原因：分词器把 CJK 文本切成单字，把每个未知字映射为 [UNK]（bert-base-chinese 与 bert-base-uncased 中 id 为 100；spec 从分词器读取），
    所以在相同上下文中两个不同的未知字得到完全相同的 input ids，因而输出也相同；原来的字无法从 id 中恢复。这两个字来自 CJK 扩展 B 区，
    不在我们所知的任何 BERT 词表中（对被测词表做了检查）；上下文使用词表的语言，其中也可能有自己的 [UNK]。[UNK] 的 attention_mask 为 1，
    会被关注：平移它的 value 会改变每个 query 的 attention 输出（bertspec.tracing.probe）。
    """
    tok = bert.tokenizer
    before, after = bert.texts.around_unknown
    batch = bert.encode([before + c + after for c in UNKNOWN_CHARACTERS])
    context = tok.tokenize(before + after)
    ids = batch.input_ids.cpu()
    unknown = ids == tok.unk_token_id
    added = batch.input_ids == tok.unk_token_id
    added &= torch.arange(ids.shape[1], device=bert.device) == len(tok.tokenize(before)) + 1  # the character's position
    moved = probe.value_influence(bert.model, batch.as_kwargs(), added)
    evidence.table("two different unknown characters", ["character (code point)", "tokens", "ids"],
                   [(f"U+{ord(c):X}", bert.tokens(batch, r), ids[r].tolist()) for r, c in enumerate(UNKNOWN_CHARACTERS)])
    evidence.table("the [UNK]'s value shifted", ["layer", "smallest |Δ output| of any query"], [(i, m.min()) for i, m in enumerate(moved)])
    assert not any(c in tok.get_vocab() for c in UNKNOWN_CHARACTERS)
    assert unknown.sum(1).tolist() == [context.count(tok.unk_token) + 1] * 2
    assert bool(added.sum(1).eq(1).all()), "each character is one [UNK] at its own position"
    assert torch.equal(ids[0], ids[1]), "two different unknown characters must give the same ids"
    assert bool(batch.attention_mask[added].all()) and bool((moved > 0).all())


# ---- P4.2d numerical stability ----

@pytest.fixture(scope="module")
def implementations(settings, model_cache) -> dict:
    """The model under test for every chosen attention implementation: comparing eager with sdpa needs both in one test."""
    return {impl: model_cache(impl).model for impl in settings.attn_implementations}


@pytest.fixture(scope="module", params=list(DTYPES))
def in_dtype(request, implementations):
    """(dtype name, {implementation: model}) in float32, float16 or bfloat16: half precision on deep copies only."""
    dtype = DTYPES[request.param]
    if dtype == torch.float32:
        return request.param, implementations
    return request.param, {impl: copy.deepcopy(model).to(dtype) for impl, model in implementations.items()}


def dtype_batch(models, tokenizer) -> Batch:
    model = next(iter(models.values()))
    texts = texts_for(tokenizer)
    return encode(tokenizer, [texts.sentence, texts.short], model.config.max_position_embeddings, model.device)


def test_each_dtype_masks_padding_with_its_own_finfo_min_and_padded_keys_get_exactly_zero(in_dtype, tokenizer, evidence):
    """In float32, float16 and bfloat16 the layer's additive mask is finfo(dtype).min at padded keys, and they get probability exactly 0.

    transformers builds the mask in the model's dtype: -3.4028e38 in float32,
    -65504 in float16, -3.3895e38 in bfloat16 (or a boolean, for 5.x sdpa).
    score + finfo.min is then rounded in that dtype: in float32 and bfloat16
    any score is absorbed, but float16's spacing at 65504 is 32, so a trained
    model's scores (tens, at padded keys too) round the sum to a neighbour of
    finfo.min, or past it to -inf once the score is -16 or less. What must hold
    does hold: on eager, where the sum is observed, it stays within one spacing
    of the exact finfo.min + score (or is -inf where that lies beyond the
    range), and exp of it underflows to exactly 0 next to the row's real keys.
    The probability is checked through what attention outputs (bertspec.tracing.probe,
    values at [PAD] keys shifted by finfo.max / 64), so it holds for the fused
    sdpa kernel too, whose sum is not observable.

    Claim ID: P4.2d
    Question: Does the padding mask still work in float16 and bfloat16?
    问题：在 float16 和 bfloat16 下 padding mask 还有效吗？
    中文：在 float32、float16、bfloat16 中，层的加性 mask 在 padding key 处都是 finfo(dtype).min，padding key 的概率严格为 0。
    原因：transformers 按模型的 dtype 构造 mask：float32 为 -3.4028e38，float16 为 -65504，bfloat16 为 -3.3895e38
    （5.x sdpa 为布尔 mask）。score + finfo.min 随后按该 dtype 舍入：float32 与 bfloat16 中任何分数都被吞掉，但 float16 在 65504 处的
    间距是 32，训练过的模型的分数（padding key 处也有几十）会让和舍入到 finfo.min 的相邻值，分数 ≤ -16 时越过它成为 -inf。真正
    需要成立的确实成立：在能观测到这个和的 eager 上，它与精确的 finfo.min + score 相差不超过一个间距（或在超出范围处为 -inf），
    与该行真实 key 相比 exp 下溢为精确的 0。概率通过 attention 的输出检查（bertspec.tracing.probe，把 [PAD] key 处的 value 平移
    finfo.max / 64），因此对无法观测其加法的 sdpa 融合内核同样成立。
    """
    name, models = in_dtype
    dtype = DTYPES[name]
    batch = dtype_batch(models, tokenizer)
    pad = batch.attention_mask == 0
    floor = torch.finfo(dtype).min
    spacing = -2 * overflow_score(dtype)  # the distance between finfo.min and its neighbour
    rows = []
    for impl, model in models.items():
        trace, _ = trace_forward(model, keep_tensors=True, **batch.as_kwargs())
        received = trace.all("attention_mask")[0].tensor
        moved = probe.value_influence(model, batch.as_kwargs(), pad, shift=torch.finfo(dtype).max / 64)
        observed = trace.all("scores+mask")[0].source == "observed"
        scores, masked = (received_by_key(stacked(trace, quantity), pad) for quantity in ("scores", "scores+mask"))
        exact = scores.double() + floor
        off = torch.where(torch.isinf(masked), torch.zeros_like(exact), (masked.double() - exact).abs())
        rows.append((impl, masks.form(received, *pad.shape), floor, scores.abs().max(),
                     (masked == float("-inf")).sum() if observed else "not observed",
                     off.max() / spacing if observed else "not observed", moved.max()))
        assert received is not None and received.dtype in (torch.bool, dtype), impl
        if received.dtype != torch.bool:
            assert set(received.unique().tolist()) == {0.0, floor}, impl
        if observed:
            overflowed = torch.isinf(masked)
            assert bool((off <= spacing).all()), impl
            assert bool((exact[overflowed] <= floor - spacing / 2).all()), f"{impl}: -inf where the sum is in range"
        assert torch.equal(moved, torch.zeros_like(moved)), f"{impl}: a [PAD] key reached an output"
    evidence.table(f"{name}: padded keys (spacing of finfo.min: {spacing:g})",
                   ["implementation", "layer mask", "finfo.min", "largest |score| at [PAD]", "sums that overflowed to -inf",
                    "largest |sum − (finfo.min + score)| in spacings", "max |Δ output|, [PAD] values shifted"], rows)


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_a_fully_masked_row_is_uniform_under_finfo_min_but_nan_under_minus_infinity(dtype_name, evidence):
    """A row whose keys are all masked gives uniform probabilities with finfo(dtype).min, and NaN with -inf, in every dtype.

    score + finfo.min rounds to finfo.min for any ordinary score, so a fully
    masked row holds T equal finite numbers and softmax gives each 1/T. With
    -inf, softmax subtracts the row maximum, -inf - (-inf) = NaN, and the
    whole row (and everything downstream) becomes NaN. The spec uses 4 keys, so
    1/4 is exact in every dtype.

    Claim ID: P4.2d
    Question: Why does the mask use finfo.min instead of -inf?
    问题：mask 为什么用 finfo.min 而不用 -inf？
    中文：在任何 dtype 中，一行全部被屏蔽时，用 finfo(dtype).min 得到均匀概率，用 -inf 得到 NaN。
    原因：对任何普通分数，score + finfo.min 都舍入为 finfo.min，全屏蔽的行是 T 个相等的有限数，softmax 给每个 1/T。
    用 -inf 时 softmax 要减去行最大值，-inf - (-inf) = NaN，整行（以及之后的一切）都变成 NaN。这里取 4 个 key，1/4 在各 dtype 中都精确。
    """
    dtype = DTYPES[dtype_name]
    scores = torch.tensor([1.5, -3.0, 2.0, 0.25], dtype=dtype)
    floor = torch.finfo(dtype).min
    with_floor = torch.softmax(scores + floor, -1)
    with_inf = torch.softmax(scores + float("-inf"), -1)
    evidence.table(f"{dtype_name}, scores {scores.tolist()}", ["mask value", "scores + mask", "softmax"],
                   [(floor, (scores + floor).tolist(), with_floor.tolist()),
                    ("-inf", (scores + float("-inf")).tolist(), with_inf.tolist())])
    assert torch.equal(scores + floor, torch.full_like(scores, floor)), "ordinary scores are absorbed by finfo.min"
    assert torch.equal(with_floor, torch.full_like(with_floor, 0.25))
    assert bool(torch.isnan(with_inf).all())


def overflow_score(dtype) -> float:
    """The score at which score + finfo.min rounds to -inf: half an ulp of finfo.min (ties go to the even neighbour, infinity)."""
    info = torch.finfo(dtype)
    ulp_at_max = info.eps * 2.0 ** math.floor(math.log2(info.max))
    return -ulp_at_max / 2


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_score_plus_mask_overflows_to_minus_infinity_only_in_float16_at_ordinary_scores(dtype_name, evidence):
    """score + finfo.min overflows to -inf once the score is below minus half an ulp of finfo.min: -16 in float16, out of reach in float32 and bfloat16.

    float16's finfo.min is -65504 with an ulp of 32 there, so a score of -16 or
    less rounds the sum past -65504 to -inf; float32 (ulp 2^104) and bfloat16
    (ulp 2^120) would need scores around -1e31 and -7e35. The overflow is
    harmless while the row keeps a finite key: softmax gives a -inf key exactly
    0, the same as finfo.min would. Only a row of nothing but -inf is NaN (the
    previous claim).

    Claim ID: P4.2d
    Question: Can score + finfo.min overflow to -inf, and in which dtype?
    问题：score + finfo.min 会溢出成 -inf 吗？在哪种 dtype 中？
    中文：当分数低于 finfo.min 处半个 ulp 的负值时，score + finfo.min 溢出为 -inf：float16 中是 -16，float32 与 bfloat16 中遥不可及。
    原因：float16 的 finfo.min 为 -65504，该处 ulp 为 32，分数 ≤ -16 时和会舍入越过 -65504 成为 -inf；float32（ulp 2^104）与
    bfloat16（ulp 2^120）需要约 -1e31 和 -7e35 的分数。只要该行还有有限的 key，溢出无害：softmax 给 -inf 的 key 精确的 0，
    与 finfo.min 相同。只有整行都是 -inf 时才是 NaN（见上一条）。
    """
    dtype = DTYPES[dtype_name]
    floor = torch.tensor(torch.finfo(dtype).min, dtype=dtype)
    threshold = overflow_score(dtype)
    absorbed = floor + torch.tensor(threshold / 2, dtype=dtype)
    overflowed = floor + torch.tensor(threshold, dtype=dtype)
    probs = torch.softmax(torch.stack([torch.tensor(0.0, dtype=dtype), overflowed]), -1)
    evidence.table(dtype_name, ["finfo.min", "overflow at score ≤", "min + score/2", "min + score", "softmax([0, min + score])"],
                   [(floor, threshold, absorbed, overflowed, probs.tolist())])
    assert torch.equal(absorbed, floor)
    assert overflowed.item() == float("-inf")
    assert probs.tolist() == [1.0, 0.0]
    if dtype == torch.float16:
        assert threshold == -16.0


def test_eager_and_sdpa_agree_within_the_tolerance_of_each_dtype(in_dtype, implementations, tokenizer, evidence):
    """Eager and sdpa attention give the same last hidden state within each dtype's tolerance: float32, float16, bfloat16.

    The two implementations compute the same maths with different kernels, so
    they differ by rounding only. In float32 the tolerance is the rounding
    bound of bertspec.proof.tolerances.forward_tolerance: L layers x (2
    (sqrt(head_dim) u32 + 2u) x the largest score + (2 sqrt(hidden) +
    sqrt(intermediate)) u32 + 3u) x max|output|, u = 2^-24. In float16 and
    bfloat16 that worst case is wide enough on scores of tens to pass anything
    (float16 resolves a score of 80 to 0.04, bfloat16 to 0.3), so the bound is
    the triangle through float32 (half_precision_tolerance): both kernels round
    the same intermediates, so each lies about as far from the float32 result
    as eager does, E; their difference is held to (1 + 3) E. Every position is
    compared, padded ones included: no row is fully masked here, so no kernel
    is left undefined.

    Claim ID: P4.2d
    Question: How far apart are eager and sdpa in float32, float16 and bfloat16?
    问题：在 float32、float16、bfloat16 下，eager 与 sdpa 相差多少？
    中文：eager 与 sdpa 的最后隐藏状态在每种 dtype 的容差内一致：float32、float16、bfloat16。
    原因：两种实现用不同内核计算相同的数学，差别只来自舍入。float32 下容差是舍入误差界 bertspec.proof.tolerances.forward_tolerance：
    L 层 ×（2 (sqrt(head_dim) u32 + 2u) × 最大分数 + (2 sqrt(hidden) + sqrt(intermediate)) u32 + 3u）× max|输出|，u = 2^-24。
    float16 与 bfloat16 下这个最坏情况在分数达几十时宽到什么都能通过（float16 把 80 的分数分辨到 0.04，bfloat16 到 0.3），
    所以改用经过 float32 的三角不等式（half_precision_tolerance）：两个内核对同样的中间量做舍入，各自与 float32 结果的距离
    与 eager 的距离 E 相当；两者之差限制在 (1 + 3) E 以内。
    比较所有位置（含 padding）：这里没有整行被屏蔽的情况，没有哪个内核的结果是未定义的。
    """
    name, models = in_dtype
    if set(models) != set(loading.ATTN_IMPLEMENTATIONS):
        pytest.skip("comparing eager with sdpa needs --attn-implementation all")
    batch = dtype_batch(models, tokenizer)
    eager, sdpa = (last_hidden_state(models[impl], batch) for impl in ("eager", "sdpa"))
    peak = score_peak(models["eager"], batch)
    if DTYPES[name] == torch.float32:
        tolerance = forward_tolerance(eager, models["eager"].config, peak)
    else:
        tolerance = half_precision_tolerance(eager, last_hidden_state(implementations["eager"], batch))
    diff, eps = (eager.float() - sdpa.float()).abs().max(), torch.finfo(DTYPES[name]).eps
    evidence.table("eager vs sdpa, last hidden state", ["dtype", "eps", "largest score", "max |diff|", "in eps", "bound (atol)"],
                   [(name, eps, peak, diff, diff / eps, tolerance["atol"])])
    assert eager.dtype == sdpa.dtype == DTYPES[name]
    torch.testing.assert_close(sdpa, eager, **tolerance)


# ---- train vs eval ----

def test_eval_is_deterministic_and_train_mode_repeats_only_under_the_same_seed(bert, evidence):
    """Two eval passes are bit-identical; two train passes are identical under the same seed and differ under different seeds.

    Eval mode has no randomness at all. In train mode the only random thing
    is dropout, which draws from torch's generator: re-seeding reproduces the
    same dropout masks bit for bit, another seed draws others (when the
    config's dropout probabilities are above 0). That dropout is the only
    difference from eval is chapter P2's claim.

    Claim ID: P2.1c
    Question: Are BERT's outputs reproducible in eval mode and in train mode?
    问题：BERT 的输出在推理模式和训练模式下可复现吗？
    中文：两次推理模式的前向传播逐位相同；训练模式下相同随机种子的两次结果相同，不同种子则不同。
    原因：推理模式没有任何随机性。训练模式下唯一的随机来源是 dropout，它从 torch 的随机数生成器取数：重新设同一种子
    会逐位复现相同的 dropout mask，换一个种子则得到不同的 mask（config 中 dropout 概率大于 0 时）。dropout 是与推理模式唯一
    的区别，见 P2 章的断言。
    """
    batch = bert.example()
    real = batch.attention_mask.bool()

    def train_pass(seed):
        torch.manual_seed(seed)
        with training(bert.model):
            return last_hidden_state(bert.model, batch)

    first, second = last_hidden_state(bert.model, batch), last_hidden_state(bert.model, batch)
    with torch.random.fork_rng():
        seeded, reseeded, other_seed = train_pass(0), train_pass(0), train_pass(1)
    p = max(dropout_probabilities(bert.model), default=0)
    evidence.table("last hidden state, real tokens", ["pair", "max |diff|"],
                   [("eval vs eval", (first - second)[real].abs().max()),
                    ("train seed 0 vs seed 0", (seeded - reseeded)[real].abs().max()),
                    ("train seed 0 vs seed 1", (seeded - other_seed)[real].abs().max())])
    assert torch.equal(first, second)
    assert torch.equal(seeded, reseeded)
    if p > 0:
        assert beyond(seeded[real], other_seed[real], TOL["float32_kernels"]), "another seed should draw other dropout masks"


# ---- the claims above go red on the counterfeits declared at them ----

test_each_claim_goes_red_on_the_counterfeits_declared_at_it = teeth.meta_test(globals())
