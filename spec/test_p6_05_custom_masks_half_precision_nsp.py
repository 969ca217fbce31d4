"""Chapter P6.5–P6.7 — questions BERT users ask again and again, each answered with the tempting
wrong answer failing: custom 3D/4D masks and packing (transformers #9366, PR #32105); where NaN
comes from in half precision (PR #17306); the NSP head and its labels (#836).

Each claim runs on the model under test; where transformers 4.x and 5.x differ,
bertspec/models/versions.py holds what each does and the claim marks what it observed.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import transformers

from bertspec.models import versions
from bertspec.models.loading import last_hidden_state
from bertspec.proof import scope
from bertspec.proof.compare import beyond, max_diff
from bertspec.proof.reference import IGNORE_INDEX
from bertspec.proof.tolerances import TOL, forward_tolerance, score_peak
from bertspec.tracing import masks
from bertspec.tracing.trace import trace_forward


# ---- P6.5 custom attention masks ----

def custom_masks(batch) -> dict:
    """The 2D mask of a padded batch in every form users pass, each meaning the same: attend to the real tokens only."""
    m = batch.attention_mask
    b, t = m.shape
    keys = m[:, None, None, :].expand(b, 1, t, t)
    return {
        "2D 0/1 integers": m,
        "2D booleans": m.bool(),
        "2D floats, 0.5 at padding": m.float().masked_fill(m == 0, 0.5),
        "3D [B, T, T] 0/1": m[:, None, :].expand(b, t, t),
        "4D [B, 1, T, T] additive": torch.zeros(b, 1, t, t).masked_fill(keys == 0, torch.finfo(torch.float32).min),
        "4D [B, 1, T, T] booleans": keys.bool(),
    }


def test_the_installed_transformers_converts_passes_on_or_refuses_each_form_of_custom_attention_mask(bert, evidence):
    """Each form of attention mask — 2D integers, booleans or soft values, 3D, 4D additive or boolean — is converted, passed on as it is, or refused, as this transformers version's code says; not every accepted form is honoured.

    4.57 converts 2D and 3D masks with (1 - mask) · finfo.min and refuses 4D
    ("Wrong shape for input_ids"); PR #32105 let 3D masks through its sdpa
    path. 5.x turns a 2D mask into booleans (any non-zero value, 0.5 too,
    means "attend"), crashes on 3D inside create_bidirectional_mask, and hands
    a 4D mask to attention untouched: additive masks work, but eager attention
    adds a boolean 4D mask as +1/+0 instead of hiding anything, while sdpa
    reads it as a keep-mask. The table (bertspec/models/versions.py, CUSTOM_MASKS)
    holds what each version and implementation does; "honoured" means the real
    tokens' outputs equal those of the plain 2D mask. The claim observes each
    form on the installed version and fails if one behaves otherwise.

    Claim ID: P6.5
    Question: Can I pass a 3D or 4D attention mask to BERT, and does it do what I mean?
    问题：能给 BERT 传 3D 或 4D 的 attention mask 吗？它会按我的意思工作吗？
    中文：每种形式的 attention mask——二维整数、布尔或软值，三维，四维加性或布尔——都会被转换、原样传递或拒绝，正如所装 transformers 版本的代码所写；被接受的形式并不都会被正确执行。
    原因：4.57 用 (1 - mask) · finfo.min 转换二维与三维 mask，拒绝四维（"Wrong shape for input_ids"）；PR #32105 让三维 mask 也能走它的
    sdpa 路径。5.x 把二维 mask 变成布尔值（任何非零值，包括 0.5，都表示"可以关注"），在 create_bidirectional_mask 中遇到三维 mask
    会崩溃，并把四维 mask 原封不动地交给 attention：加性 mask 可以工作，但 eager attention 会把布尔四维 mask 当作 +1/+0 加上去
    而不屏蔽任何东西，sdpa 则把它当作保留 mask。表格（bertspec/models/versions.py 的 CUSTOM_MASKS）记录各版本、各实现的行为；"honoured"
    表示真实 token 的输出与普通二维 mask 相同。本断言在所装版本上观察每种形式，行为不同即失败。
    Asked in: PaddlePaddle/PaddleNLP#1631, PaddlePaddle/PaddleNLP#1579, PaddlePaddle/PaddleNLP#1634, microsoft/CodeBERT#200
    """
    batch = bert.example()
    scope.attends_globally(bert, batch.input_ids.shape[1])
    if bert.anatomy.family not in versions.SHARES_BERTS_MASK_CODE[versions.MAJOR]:
        pytest.skip(f"{type(bert.encoder).__name__} of transformers {versions.VERSION} turns masks into the layers' own "
                    "with code of its own; versions.CUSTOM_MASKS holds the readings of BertModel's")
    real = batch.attention_mask.bool()
    b, t = batch.input_ids.shape
    reference = bert.last_hidden(batch)
    observed = {}
    for name, mask in custom_masks(batch).items():
        try:
            trace, output = trace_forward(bert.encoder, keep_tensors=True,
                                          **{**batch.as_kwargs(), "attention_mask": mask.to(bert.device)})
        except (RuntimeError, ValueError) as err:
            observed[name] = f"refused: {type(err).__name__}"
            continue
        received = masks.form(trace.all("attention_mask")[0].tensor, b, t)
        honoured = torch.allclose(output.last_hidden_state[real], reference[real], **TOL["float32_kernels"])
        observed[name] = f"{received}; {'honoured' if honoured else 'NOT honoured'}"
    keys = [(versions.MAJOR, bert.attn_implementation, name) for name in observed]
    evidence.table(f"observed on transformers {versions.VERSION}, {bert.attn_implementation}", ["mask passed", "observed", "expected"],
                   [(name, seen, versions.CUSTOM_MASKS.get(key, "—")) for (name, seen), key in zip(observed.items(), keys)])
    evidence.table("every version × implementation, as read in each version's code",
                   *versions.table(versions.CUSTOM_MASKS, ["transformers", "attention", "mask passed"], *keys))
    if any(key not in versions.CUSTOM_MASKS for key in keys):
        pytest.skip(f"no reading of transformers {versions.VERSION}'s mask handling yet")
    assert observed == {name: versions.CUSTOM_MASKS[key] for name, key in zip(observed, keys)}


@pytest.mark.counterfeits("mask_dropped")
def test_a_block_diagonal_mask_packs_two_sentences_into_one_row_with_the_outputs_each_has_alone(bert, evidence):
    """Two sentences packed into one row, with a block-diagonal mask and position ids restarted at 0, get exactly the outputs each gets alone.

    Packing saves the padding a batch would need. Each sentence may attend only
    to itself (a block-diagonal mask, in the form the installed version takes:
    5.x a 4D additive mask in the model's dtype, 4.57 a 3D 0/1 mask;
    bertspec.tracing.masks.packed_mask), and its positions must count from 0 again,
    since position embeddings are absolute. Then both sentences' outputs equal
    their outputs alone (within the rounding bound of
    bertspec.proof.tolerances.forward_tolerance, which grows with the largest
    attention score and output). The tempting shortcuts
    fail: without the block mask the sentences see each other, and without
    restarting the positions the second sentence is read at shifted positions.

    Claim ID: P6.5
    Question: How do I pack several sentences into one row without them seeing each other?
    问题：怎样把几个句子打包进一行，而又不让它们互相看见？
    中文：用分块对角的 mask 并把 position ids 从 0 重新开始，把两句打包进一行，每句得到的输出与单独运行时完全相同。
    原因：打包省去了 batch 所需的 padding。每句只能关注自己（分块对角 mask，采用所装版本接受的形式：5.x 为模型 dtype 的四维加性 mask，
    4.57 为三维 0/1 mask；bertspec.tracing.masks.packed_mask），而且它的位置必须重新从 0 数起，因为位置嵌入是绝对的。这样两句的输出都等于
    各自单独运行时的输出（舍入误差界 bertspec.proof.tolerances.forward_tolerance，随最大分数与输出大小增长）。诱人的捷径都会失败：没有分块 mask，两句会互相看见；不重启位置，第二句会在错开的位置上被读取。
    """
    if not scope.takes_position_ids(bert):
        scope.not_applicable(bert, f"{type(bert.encoder).__name__}.forward takes no position_ids in transformers "
                                   f"{versions.VERSION}: positions cannot restart inside a row")
    a, pad = bert.anatomy, bert.tokenizer.pad_token_id
    texts = (bert.texts.sentence, bert.texts.short)
    rows = [bert.encode(text) for text in texts]
    lengths = [r.input_ids.shape[1] for r in rows]
    scope.attends_globally(bert, sum(lengths))
    if versions.MAJOR == 4 and bert.anatomy.family == "albert":
        scope.not_applicable(bert, "AlbertModel of transformers 4.57 expands a 2D attention_mask only "
                                   "(attention_mask.unsqueeze(1).unsqueeze(2)): a block-diagonal 3D or 4D mask fails "
                                   "inside attention")
    ids = torch.cat([r.input_ids for r in rows], dim=1)
    restarted = torch.cat([a.default_position_ids(r.input_ids, pad) for r in rows], dim=1)
    counted = a.default_position_ids(ids, pad)
    block = masks.packed_mask(lengths, bert.model.dtype, versions.MAJOR).to(bert.device)
    alone = [last_hidden_state(bert.model, r)[0] for r in rows]

    def packed(mask, positions):
        with torch.no_grad():
            h = bert.encoder(**{**bert.batch(ids).as_kwargs(), "attention_mask": mask, "position_ids": positions})
        return h.last_hidden_state[0, :lengths[0]], h.last_hidden_state[0, lengths[0]:]

    ways = {"block mask, positions restarted": packed(block, restarted),
            "no block mask": packed(torch.ones_like(ids), restarted),
            "block mask, positions 0..T-1": packed(block, counted)}
    evidence.table(f"{' | '.join(texts)} packed into one row of {sum(lengths)} (mask: {masks.form(block, 1, sum(lengths))})",
                   ["packing", "max |Δ| sentence 1 vs alone", "max |Δ| sentence 2 vs alone"],
                   [(name, max_diff(a, alone[0]), max_diff(b, alone[1])) for name, (a, b) in ways.items()])
    # the rounding bound of bertspec.proof.tolerances.forward_tolerance, scores measured on the packed row
    tolerance = forward_tolerance(torch.cat(alone), bert.config,
                                  score_peak(bert.model, bert.batch(ids), attention_mask=block, position_ids=restarted))
    evidence.table("rounding bound", ["atol"], [(tolerance["atol"],)])
    for got, want in zip(ways["block mask, positions restarted"], alone):
        torch.testing.assert_close(got, want, **tolerance)
    assert beyond(ways["no block mask"][0], alone[0], tolerance)
    assert beyond(ways["block mask, positions 0..T-1"][1], alone[1], tolerance)


# ---- P6.6 where NaN comes from in half precision ----

def half_copies(bert, dtype):
    return copy.deepcopy(bert.model).to(dtype)


def scale_first_query(model, a, scale: float) -> None:
    """Multiply layer 0's query projection by ``scale`` (the first third of a fused q, k, v projection)."""
    linear = model.get_submodule(f"{a.attention(0)}.{a.query or a.fused_qkv}")
    rows = slice(None) if a.query else slice(0, linear.out_features // 3)
    with torch.no_grad():
        linear.weight[rows] *= scale
        if linear.bias is not None:
            linear.bias[rows] *= scale


def test_a_raw_score_above_65504_overflows_float16_and_eager_attention_turns_it_into_nan(bert, evidence):
    """A raw query·key product above 65504 overflows float16 to inf, and eager attention's softmax turns it into NaN; bfloat16, with float32's range, does not overflow.

    Both versions' eager attention multiplies q·kᵀ first and scales by
    1/√d after, in the model's dtype; its softmax runs in that dtype too (no
    float32 upcast: the next claim). So the raw product, √d times the score,
    must stay below float16's largest value, 65504. Trained models stay far
    below; here layer 0's query projection is scaled (on a float16 copy) until
    the largest raw product is twice 65504: eager attention's logits become
    NaN. bfloat16 keeps float32's exponent range and stays finite; float32
    too. (The fused CPU sdpa kernel computes in float32 inside and stays finite
    until q itself overflows, which the evidence shows where it applies.)

    Claim ID: P6.6
    Question: Why do I get NaN in float16 even without any padding?
    问题：为什么没有任何 padding，float16 下也会出现 NaN？
    中文：原始的 query·key 乘积超过 65504 时，float16 溢出为 inf，eager attention 的 softmax 把它变成 NaN；拥有 float32 指数范围的 bfloat16 不会溢出。
    原因：两个版本的 eager attention 都先算 q·kᵀ，再乘 1/√d，都在模型的 dtype 中进行；softmax 也在这个 dtype 中（没有升到 float32：见下一条断言）。
    所以原始乘积（分数的 √d 倍）必须小于 float16 的最大值 65504。训练过的模型远低于此；这里在 float16 副本上放大第 0 层的 query 投影，
    直到最大原始乘积达到 65504 的两倍：eager attention 的 logits 变成 NaN。bfloat16 保留 float32 的指数范围，保持有限；float32 也一样。
    （CPU 上的 sdpa 融合内核在内部用 float32 计算，在 q 本身溢出之前都保持有限，证据在适用时展示这一点。）
    """
    if (versions.MAJOR, bert.anatomy.family) in versions.SCALES_QUERY_FIRST and bert.attn_implementation == "eager":
        scope.not_applicable(bert, f"its eager attention on transformers {versions.VERSION} divides q by √d before "
                                   "q·kᵀ: the raw product this claim overflows is never formed")
    batch = bert.example()
    trace, _ = bert.trace(batch)
    head_dim = bert.config.hidden_size // bert.config.num_attention_heads
    raw = trace.all("scores")[0].tensor.abs().max().item() * math.sqrt(head_dim)
    scale = 2 * 65504 / raw
    rows, finite = [], {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        model = half_copies(bert, dtype)
        scale_first_query(model, bert.anatomy, scale)
        with torch.no_grad():
            logits = (model(**batch.as_kwargs()).logits if bert.has_mlm_head
                      else bert.anatomy.encoder(model)(**batch.as_kwargs()).last_hidden_state)
        finite[name] = bool(torch.isfinite(logits).all())
        rows.append((name, bert.attn_implementation, f"{raw * scale:.4g}", finite[name], int(torch.isnan(logits).sum())))
    evidence.table(f"layer 0's query scaled by {scale:.4g}: largest raw q·k {raw:.4g} → {raw * scale:.4g}",
                   ["dtype", "attention", "largest raw q·k", "output finite", "NaN values"], rows)
    assert finite["float32"] and finite["bfloat16"]
    if bert.attn_implementation == "eager":
        assert not finite["float16"], "float16 eager attention should overflow to NaN"


def test_transformers_eager_attention_keeps_the_models_dtype_for_its_mask_and_its_softmax(bert, evidence):
    """In a float16 model, transformers' eager attention builds the mask in float16 (finfo(float16).min, not -inf) and runs the softmax in float16, on the installed version.

    Of the three ways half precision produces NaN — a row of -inf, a score
    past 65504, an exp that overflows — transformers' choices prevent two: the
    mask is finfo(dtype).min of the model's dtype, finite, so a fully masked
    row is NaN only where every score in it is -16 or less (it is uniform only
    within ±16: PR #17306; chapter P4.2d), and
    torch.softmax subtracts each row's maximum before exp (next claim). The
    third it leaves alone: the probabilities come out in float16
    (``output_attentions``), the softmax was not upcast to float32. Observed
    on a float16 copy of the model with eager attention. A mask built by hand
    with finfo(float32).min is what the model avoids: that number is below
    float16's range and casts to -inf, so a fully masked row of float16 scores
    becomes NaN (the evidence masks one of layer 0's rows with it).

    Claim ID: P6.6
    Question: Does transformers compute attention in float32 when my model is float16?
    问题：模型是 float16 时，transformers 会用 float32 计算 attention 吗？
    中文：在 float16 模型中，transformers 的 eager attention 用 float16 构造 mask（finfo(float16).min，而不是 -inf），并在 float16 中做 softmax（所装版本上观察）。
    原因：半精度产生 NaN 有三种途径——一行全是 -inf、分数超过 65504、exp 溢出——transformers 的做法防住了其中两种：mask 是模型 dtype
    的 finfo(dtype).min，是有限数，所以整行被屏蔽时只有该行分数全都 ≤ -16 才是 NaN
    （分数在 ±16 以内才是均匀分布：PR #17306；见 P4.2d 章），torch.softmax 在 exp 之前减去每行的
    最大值（见下一条断言）。第三种它不管：概率以 float16 输出（output_attentions），softmax 没有升到 float32。在模型的 float16 eager 副本上观察。
    用 finfo(float32).min 手工构造的 mask 正是模型所避免的：这个数低于 float16 的范围，转换后成为 -inf，于是整行被屏蔽的 float16 分数
    变成 NaN（证据用它屏蔽第 0 层的一行）。
    Asked in: FlagOpen/FlagEmbedding#1121, huggingface/candle#3989, huggingface/transformers#13714, huggingface/transformers#15171, facebookresearch/ParlAI#1472
    """
    if bert.attn_implementation != "eager":
        pytest.skip("the probabilities are returned by eager attention only (sdpa's fused kernel keeps them)")
    scope.needs_additive_mask(bert)
    model = half_copies(bert, torch.float16)
    batch = bert.example()
    encoder = bert.anatomy.encoder(model)
    with torch.no_grad():
        out = encoder(**batch.as_kwargs(), output_attentions=True)
    trace, _ = trace_forward(encoder, keep_tensors=True, **batch.as_kwargs())
    mask = trace.all("attention_mask")[0].tensor
    evidence.table("a float16 model, eager attention", ["layer mask dtype", "mask value at [PAD]", "probabilities dtype"],
                   [(mask.dtype, mask.min(), out.attentions[0].dtype)])
    assert mask.dtype == torch.float16 and mask.min().item() == torch.finfo(torch.float16).min
    assert out.attentions[0].dtype == torch.float16
    float32_min = torch.tensor(torch.finfo(torch.float32).min).to(torch.float16)
    row = trace.tensor(trace.all("scores")[0].name)[0, 0, 0]
    hand_masked = torch.softmax(row + float32_min, -1)
    evidence.table("one of layer 0's float16 score rows, every key masked by hand", ["bias", "in float16", "probabilities"],
                   [("finfo(float32).min", float32_min, f"{int(hand_masked.isnan().sum())} of {row.numel()} NaN")])
    assert torch.isinf(float32_min) and bool(hand_masked.isnan().all())


def test_softmax_without_subtracting_the_maximum_overflows_float16_where_torch_softmax_does_not(bert, evidence):
    """exp of a score above ln 65504 ≈ 11.09 is inf in float16, so a softmax written as exp(x) / Σ exp(x) gives NaN; torch.softmax subtracts each row's maximum first and stays finite.

    softmax(x) = softmax(x − max x) exactly, and after the shift every
    exponent is ≤ 0, so exp ≤ 1 cannot overflow. A hand-written softmax
    without the shift overflows as soon as one score passes 11.09 in float16.
    Shown on the model's own layer-0 scores (eager, float32), scaled so that
    the largest is 2 · 11.09, then cast to float16.

    Claim ID: P6.6
    Question: Why does my own softmax give NaN in float16 when torch.softmax doesn't?
    问题：为什么我自己写的 softmax 在 float16 下得到 NaN，而 torch.softmax 不会？
    中文：float16 中大于 ln 65504 ≈ 11.09 的分数取 exp 是 inf，所以写成 exp(x) / Σ exp(x) 的 softmax 得到 NaN；torch.softmax 先减去每行的最大值，保持有限。
    原因：softmax(x) = softmax(x − max x) 严格成立，平移后每个指数都 ≤ 0，exp ≤ 1 不会溢出。不做平移的手写 softmax 只要有一个分数在
    float16 中超过 11.09 就会溢出。这里用模型自己第 0 层的分数（eager，float32），缩放使最大值为 2 · 11.09，再转为 float16。
    """
    trace, _ = bert.trace(bert.example())
    scores = trace.all("scores")[0].tensor.float()
    x = (scores * (2 * math.log(65504) / scores.max())).to(torch.float16)
    naive = x.exp() / x.exp().sum(-1, keepdim=True)
    shifted = torch.softmax(x, dim=-1)
    reference = torch.softmax(x.float(), dim=-1)
    evidence.table("layer 0 scores, scaled, in float16", ["softmax", "NaN values", "max |Δ vs float32|"],
                   [("exp(x) / Σ exp(x)", int(torch.isnan(naive).sum()), "—"),
                    ("torch.softmax (subtracts the maximum)", int(torch.isnan(shifted).sum()), max_diff(shifted.float(), reference))],
                   derived=trace.all("scores")[0].source == "derived")
    assert bool(torch.isnan(naive).any())
    assert bool(torch.isfinite(shifted).all())
    torch.testing.assert_close(shifted.float(), reference, atol=2**-10, rtol=0)


# ---- P6.7 the NSP head, its labels, and the pre-training loss ----

def nsp_is_berts(model) -> None:
    if model.anatomy.family != "bert":
        scope.not_applicable(model, "next-sentence prediction is BERT's pre-training task: RoBERTa, DistilBERT, ELECTRA "
                                    "and ModernBERT drop it, ALBERT replaces it with sentence-order prediction")


def pretraining_batch(bert):
    """A sentence pair with a [MASK] in segment A, its MLM labels, and next_sentence_label 0 ("B follows A")."""
    batch = bert.encode(bert.texts.masked[0], bert.texts.pair[1])
    filled = bert.encode(bert.texts.filled[0], bert.texts.pair[1]).input_ids
    labels = torch.where(batch.input_ids == bert.tokenizer.mask_token_id, filled, IGNORE_INDEX)
    return batch, labels, torch.tensor([0], device=bert.device)


def test_the_pretraining_loss_is_the_mlm_loss_plus_the_nsp_loss_and_needs_both_labels(bert, as_class, evidence):
    """BertForPreTraining's loss is the MLM cross entropy plus the NSP cross entropy, recomputed by hand; with only one kind of label it returns no loss at all.

    BertForPreTraining has two heads on one encoder: cls.predictions (the MLM
    head, on every position) and cls.seq_relationship (a linear layer on the
    pooler's output, two classes). Its loss adds the two cross entropies — not
    their mean — and only when both ``labels`` and ``next_sentence_label``
    are given; with one of them, ``loss`` is None (both versions).

    Claim ID: P6.7
    Question: How is BERT's pre-training loss computed from the MLM and NSP heads?
    问题：BERT 的预训练 loss 是怎样由 MLM 头和 NSP 头算出来的？
    中文：BertForPreTraining 的 loss 是 MLM 交叉熵加上 NSP 交叉熵（手工重算验证）；只给一种标签时它根本不返回 loss。
    原因：BertForPreTraining 在同一个 encoder 上有两个头：cls.predictions（MLM 头，作用于每个位置）与 cls.seq_relationship（作用于 pooler
    输出的线性层，两类）。它的 loss 是两个交叉熵相加——而不是取平均——而且只有同时给出 labels 与 next_sentence_label 时才计算；
    只给其中一个时 loss 为 None（两个版本都是）。
    """
    nsp_is_berts(bert)
    model = as_class("BertForPreTraining", bert.attn_implementation).model
    batch, labels, nsp = pretraining_batch(bert)
    with torch.no_grad():
        out = model(**batch.as_kwargs(), labels=labels, next_sentence_label=nsp)
        only_mlm = model(**batch.as_kwargs(), labels=labels).loss
    mlm = F.cross_entropy(out.prediction_logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    nsp_loss = F.cross_entropy(out.seq_relationship_logits, nsp)
    evidence.table("the pre-training loss", ["model loss", "MLM by hand", "NSP by hand", "sum", "mean of the two", "loss with labels only"],
                   [(out.loss, mlm, nsp_loss, mlm + nsp_loss, (mlm + nsp_loss) / 2, str(only_mlm))])
    torch.testing.assert_close(out.loss, mlm + nsp_loss, **TOL["loss_reduction"])
    assert beyond(out.loss, (mlm + nsp_loss) / 2, TOL["loss_reduction"])
    assert only_mlm is None


def test_next_sentence_label_0_means_b_follows_a_and_a_trained_nsp_head_tells_consecutive_pairs_from_random_ones(bert, as_class, evidence):
    """next_sentence_label 0 means "B follows A", 1 "B is random"; a trained NSP head gives consecutive pairs a higher probability of 0 than random pairs.

    The convention is Google's original one (create_pretraining_data.py) and
    transformers' docstring of ``next_sentence_label`` says it on both
    versions: index 0 is the continuation. A head that learned it (the
    checkpoint ships cls.seq_relationship, as the bundled model and
    bert-base-chinese do) must then put more probability on index 0 for pairs
    of consecutive corpus sentences than for pairs whose second sentence was
    drawn from elsewhere; a checkpoint without NSP weights gets a random head,
    and that part is skipped with the reason, as it is for a vocabulary of
    neither language (a protein's), whose example lines are drawn from its
    tokens and continue nothing.

    Claim ID: P6.7
    Question: Does next_sentence_label 0 mean "is the next sentence" or "is random"?
    问题：next_sentence_label 为 0 表示"是下一句"还是"是随机句"？
    中文：next_sentence_label 为 0 表示"B 接在 A 后面"，1 表示"B 是随机的"；训练过的 NSP 头给连续句对的"0"概率高于随机句对。
    原因：这是 Google 原始实现（create_pretraining_data.py）的约定，两个版本中 transformers 对 next_sentence_label 的 docstring 也这样写：
    索引 0 表示接续。学到这一点的头（checkpoint 带有 cls.seq_relationship，自带模型与 bert-base-chinese 都有）对语料中连续两句组成的句对，
    必须比第二句取自别处的句对给索引 0 更高的概率；没有 NSP 权重的 checkpoint 得到的是随机的头，这部分以此为由跳过；
    两种语言都不是的词表（如蛋白质词表）的例句行由其 token 抽成、互不接续，这部分同样跳过。
    """
    nsp_is_berts(bert)
    assert "0 indicates sequence B is a continuation" in transformers.BertForPreTraining.forward.__doc__
    loaded = as_class("BertForPreTraining", bert.attn_implementation)
    if "cls.seq_relationship.weight" in loaded.missing:
        pytest.skip("this checkpoint has no NSP head: transformers initialises one at random")
    if not bert.texts.natural:
        pytest.skip("the example lines are drawn from the vocabulary's own tokens, not taken from running text: "
                    "no line continues another, so there are no consecutive pairs to tell from random ones")
    lines = bert.texts.corpus()[:40]
    consecutive = list(zip(lines[:-1], lines[1:]))
    shuffled = list(zip(lines[:-1], lines[-1:] + lines[:-2][::-1]))  # second sentences from elsewhere in the corpus
    p0 = {}
    for name, pairs in (("consecutive pairs", consecutive), ("random pairs", shuffled)):
        batch = bert.encode([a for a, _ in pairs], [b for _, b in pairs])
        with torch.no_grad():
            p0[name] = loaded.model(**batch.as_kwargs()).seq_relationship_logits.softmax(-1)[:, 0].mean()
    evidence.table("mean probability of index 0 (\"B follows A\")", ["pairs", "p(0)"], list(p0.items()))
    assert p0["consecutive pairs"] > p0["random pairs"]


def test_bert_for_masked_lm_has_no_nsp_head_and_drops_the_one_in_the_checkpoint_with_its_mlm_logits_unchanged(bert, as_class, evidence):
    """BertForMaskedLM has no NSP head and no pooler: loaded from a pre-training checkpoint it drops them as unused weights, and its logits equal BertForPreTraining's MLM logits.

    The two classes share the encoder and the MLM head (cls.predictions, its
    decoder tied to the word embeddings), so their MLM logits are the same
    computation on the same weights. BertForMaskedLM has no cls.seq_relationship
    and builds its BertModel without a pooler: a checkpoint's NSP head and
    pooler are reported as unexpected ("not used") and dropped, which is
    harmless for masked-token prediction.

    Claim ID: P6.7
    Question: What happens to the NSP head when I load a pre-training checkpoint into BertForMaskedLM?
    问题：把预训练 checkpoint 加载进 BertForMaskedLM 时，NSP 头会怎样？
    中文：BertForMaskedLM 没有 NSP 头，也没有 pooler：从预训练 checkpoint 加载时，它把这两者作为未使用的权重丢弃，其 logits 与 BertForPreTraining 的 MLM logits 相同。
    原因：两个类共享 encoder 与 MLM 头（cls.predictions，其 decoder 与词嵌入共享权重），所以它们的 MLM logits 是相同权重上的相同计算。
    BertForMaskedLM 没有 cls.seq_relationship，构造的 BertModel 也没有 pooler：checkpoint 中的 NSP 头与 pooler 被报告为 unexpected（"未使用"）并丢弃，
    这对遮盖 token 的预测无害。
    """
    nsp_is_berts(bert)
    if not bert.has_mlm_head:
        pytest.skip(f"{bert.source} has no MLM head to compare")
    pretraining = as_class("BertForPreTraining", bert.attn_implementation)
    masked_lm = as_class("BertForMaskedLM", bert.attn_implementation)
    batch = bert.example()
    with torch.no_grad():
        a = masked_lm.model(**batch.as_kwargs()).logits
        b = pretraining.model(**batch.as_kwargs()).prediction_logits
    nsp_in_checkpoint = "cls.seq_relationship.weight" not in pretraining.missing
    evidence.table("BertForMaskedLM from this checkpoint", ["has cls.seq_relationship", "has a pooler", "weights not used",
                                                            "max |Δ logits| vs BertForPreTraining"],
                   [(hasattr(masked_lm.model.cls, "seq_relationship"), masked_lm.model.bert.pooler is not None,
                     ", ".join(sorted(masked_lm.unexpected)) or "—", max_diff(a, b))])
    assert not hasattr(masked_lm.model.cls, "seq_relationship") and masked_lm.model.bert.pooler is None
    if nsp_in_checkpoint:
        assert {"cls.seq_relationship.weight", "cls.seq_relationship.bias"} <= masked_lm.unexpected
    torch.testing.assert_close(a, b, **TOL["exact"])
