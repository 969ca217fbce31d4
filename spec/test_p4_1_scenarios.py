"""Chapter P4.1 — scenarios: a single sentence vs a sentence pair, batches of different
lengths, several [MASK] tokens in one pass, and the special tokens [CLS], [SEP], [PAD].

Every claim on a model runs on each chosen attention implementation (the
``bert`` fixture).
"""

import copy
from contextlib import contextmanager

import pytest
import torch

from bertspec.handbook.figures import heatmap
from bertspec.models.anatomy import submodule
from bertspec.models.inputs import texts_for
from bertspec.models.loading import last_hidden_state
from bertspec.proof import scope
from bertspec.proof.compare import beyond, received_by_key
from bertspec.proof.tolerances import TOL, model_tolerance
from bertspec.tracing import masks, probe


def counted_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only: cumsum(mask) - 1, padding clipped to 0."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


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
    spec's encode does so). The claim shows both cases on the same weights: the
    checkpoint as it is, and its token-type table cut to one row (or, for a
    one-row checkpoint, grown to two by a copy of row 0). A third segment
    marked with type id type_vocab_size (2 on BERT checkpoints) fails the same
    way: a new type needs a new, untrained row, or the segments folded into
    the types the table has.

    Claim ID: P4.1a
    Question: Can I feed a sentence pair's token_type_ids to any BERT checkpoint?
    问题：句对的 token_type_ids 能喂给任何 BERT checkpoint 吗？
    中文：分词器给出的句对 token_type_ids 在有两种 token type 的 checkpoint 上能运行；只有一种（type_vocab_size 为 1）时，transformers 报索引错误，且从不提 token type。
    原因：分词器不读模型的 config，总是把片段 B 标为类型 1。token_type_embeddings 有 type_vocab_size 行，所以只用一个片段训练的
    checkpoint（type_vocab_size 为 1，如 RoBERTa 风格的模型）没有第 1 行：查表在嵌入层深处失败，报 "index out of range in self"。
    这类 checkpoint 的用户处处传类型 0（spec 的 encode 就这样做）。本结论在同一组权重上展示两种情况：checkpoint 原样，
    以及把它的 token type 表截成一行（对只有一行的 checkpoint，则复制第 0 行扩成两行）。用类型 id = type_vocab_size（BERT
    checkpoint 上为 2）标记第三个片段，也以同样方式失败：新的类型需要新的、未经训练的一行，或者把片段归并到表中已有的类型。
    Asked in: huggingface/transformers#1538, huggingface/transformers#2727, huggingface/transformers#2445, huggingface/transformers#6484, huggingface/transformers#1397, Ethan-yt/guwenbert#11, huggingface/transformers#517, huggingface/transformers#54, google-research/bert#16, google-research/bert#984, castorini/duobert#4, huggingface/transformers#19766, huggingface/transformers#9111
    """
    scope.token_types(bert)
    enc = bert.tokenizer(*bert.texts.pair, return_tensors="pt", return_token_type_ids=True).to(bert.device)
    types = int(enc["token_type_ids"].max()) + 1
    rows = bert.config.type_vocab_size
    observed = [(rows, "this checkpoint", pair_outcome(bert, enc, rows))]
    # The other case, on the same weights: the token-type table cut to its first row, or grown by a copy of it.
    other = 1 if rows >= types else types
    with token_type_rows(bert, other):
        observed.append((other, "the same weights, token-type table of that many rows", pair_outcome(bert, enc, other)))
    past_the_table = pair_outcome(bert, {**enc, "token_type_ids": enc["token_type_ids"] * rows}, rows)
    evidence.table(f"the tokenizer's token_type_ids of a pair use {types} types", ["type_vocab_size", "model",
                   "what happens"], [*observed, (rows, f"this checkpoint, segment B given type id {rows}", past_the_table)])
    assert types == 2
    assert past_the_table.startswith("IndexError"), past_the_table
    for table_rows, _, outcome in observed:
        if table_rows >= types:
            assert outcome.startswith("runs"), outcome
        else:
            assert outcome.startswith("IndexError") and "token" not in outcome.lower(), outcome


def pair_outcome(bert, enc, rows: int) -> str:
    """What a forward of the pair does with a token-type table of ``rows`` rows: its logits' shape, or the error."""
    try:
        with torch.no_grad():
            return f"runs: {tuple(bert.model(**enc).logits.shape)} logits"
    except IndexError as err:
        return f"IndexError: {str(err).splitlines()[0]}"


@contextmanager
def token_type_rows(bert, rows: int):
    """The model with its token-type embedding table cut or grown (by copies of row 0) to ``rows`` rows, restored
    afterwards."""
    path = bert.anatomy.token_type_embeddings
    parent_path, _, name = path.rpartition(".")
    parent, table = submodule(bert.model, parent_path), submodule(bert.model, path)
    weight = table.weight.detach()
    resized = torch.cat([weight, weight[:1].expand(max(rows - len(weight), 0), -1)])[:rows]
    setattr(parent, name, torch.nn.Embedding.from_pretrained(resized))
    try:
        yield
    finally:
        setattr(parent, name, table)


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
    Asked in: huggingface/transformers#30096, huggingface/transformers#2401, huggingface/transformers#9039, castorini/castor#176, KRLabsOrg/LettuceDetect#23
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

@pytest.mark.across_families
@pytest.mark.counterfeits("mask_value_minus_one")
@pytest.mark.carries(decoder=scope.CAUSAL_ZERO_TOO, encoder_decoder=scope.CAUSAL_ZERO_TOO)
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
    probs = trace.stack("probs")
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


@pytest.mark.counterfeits("mask_value_minus_one", "mask_dropped", "untied_decoder")
def test_padding_idx_stops_only_the_lookups_gradient_to_the_pad_row_and_the_attention_mask_is_what_hides_padding(
        bert, evidence):
    """padding_idx stops only the lookup's gradient to the [PAD] embedding row — the tied decoder still trains it, and it need not be zero; the attention mask is what hides padding.

    nn.Embedding(padding_idx=0) gives row 0 no gradient from the lookup, and
    zeroes it at initialisation only. It does not freeze the row: in
    BertForMaskedLM the same matrix is the decoder's weight
    (tie_word_embeddings), and as a decoder row [PAD] gets
    Σ (p_[PAD] − 0)·h over the labelled positions, non-zero since softmax gives
    [PAD] some probability (P3.3c: every row of the tied matrix gets gradient);
    weight decay moves it as well. So a saved checkpoint may hold anything
    there (the evidence shows what this one holds). Real tokens never see it
    anyway: replacing the [PAD] row's vector by a large random one changes the
    padded positions' own outputs but leaves every real token's output
    unchanged, because [PAD] keys get probability 0. The model never looks for
    [PAD] ids in input_ids: called without attention_mask it uses all ones, and
    its real tokens attend to the [PAD] keys like to words (the evidence
    compares that call with the masked one).

    Claim ID: P4.1d
    Question: Does padding_idx make the [PAD] embedding zero, or keep it out of training?
    问题：padding_idx 会让 [PAD] 的嵌入为零，或让它不参与训练吗？
    中文：padding_idx 只挡住查表给 [PAD] 嵌入行的梯度——共享权重的 decoder 仍在训练它，它也不必为零；真正屏蔽 padding 的是 attention mask。
    原因：nn.Embedding(padding_idx=0) 在查表时不给第 0 行梯度，并且只在初始化时把它置零。它并没有冻结这一行：在 BertForMaskedLM 中
    同一个矩阵就是 decoder 的权重（tie_word_embeddings），作为 decoder 的一行，[PAD] 得到各标注位置上 (p_[PAD] − 0)·h 之和，
    因为 softmax 给 [PAD] 一些概率，所以不为零（P3.3c：共享矩阵的每一行都有梯度）；权重衰减也会改变它。所以保存的 checkpoint 中
    这一行可以是任何值（证据中列出本模型的值）。真实 token 本来就看不到它：把 [PAD] 行换成一个很大的随机向量，padding 位置自身的输出会变，
    但每个真实 token 的输出不变，因为 [PAD] key 的概率为 0。模型从不在 input_ids 里找 [PAD] 的 id：不传 attention_mask 时
    它用全 1，真实 token 会像关注普通词一样关注 [PAD] key（证据把这种调用与带 mask 的调用比较）。
    Asked in: https://ai.stackexchange.com/q/28833, huggingface/transformers#5295, PaddlePaddle/PaddleNLP#4494
    """
    words = bert.word_embeddings
    pad_id = bert.tokenizer.pad_token_id
    batch = bert.example()
    pad = batch.attention_mask == 0
    lookup = copy.deepcopy(words)  # a copy: the gradient must not touch the shared model
    lookup(batch.input_ids).sum().backward()
    used = batch.input_ids[~pad].unique()
    # A training step's gradient on the whole model: every real token labelled with itself. autograd.grad leaves
    # the shared model's .grad alone.
    logits = bert.model(**batch.as_kwargs()).logits
    labels = batch.input_ids.masked_fill(pad, -100)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    (trained,) = torch.autograd.grad(loss, words.weight)
    tied = bert.config.tie_word_embeddings
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
    evidence.table("gradient of the [PAD] row", ["from", "norm"],
                   [("the lookup alone", lookup.weight.grad[pad_id].norm()),
                    (f"a training step (decoder {'tied' if tied else 'untied'})", trained[pad_id].norm())])
    evidence.table("[PAD] row replaced by a random vector of norm ~" + f"{stranger.norm():.3g}", ["positions", "max |Δ last hidden|"],
                   [("real tokens", (replaced - original)[~pad].abs().max()), ("padded", (replaced - original)[pad].abs().max())])
    assert words.padding_idx == bert.config.pad_token_id == pad_id
    assert torch.equal(lookup.weight.grad[pad_id], torch.zeros_like(row))
    if tied:
        assert trained[pad_id].norm() > 0, "the tied decoder should send the [PAD] row gradient"
    assert bool((lookup.weight.grad[used].abs().sum(-1) > 0).all())
    torch.testing.assert_close(replaced[~pad], original[~pad], **TOL["exact"])
    assert beyond(replaced[pad], original[pad], TOL["float32_kernels"]), "a padded position's output should depend on its embedding"
    unmasked = last_hidden_state(bert.model, batch, attention_mask=None)
    evidence.table("called without attention_mask", ["positions", "max |Δ last hidden| from the masked call"],
                   [("real tokens", (unmasked - original)[~pad].abs().max())])
    assert beyond(unmasked[~pad], original[~pad], TOL["float32_kernels"]), "without a mask, [PAD] keys are attended"
