"""Chapter P2.2 — the attention padding mask vs the MLM mask: two separate inputs, [MASK] visible
to attention like any token, and a prediction at [MASK] that padding does not change.

Every claim runs on each chosen attention implementation (``attn_implementation``
parametrizes the ``bert`` fixture). The batch is the plan's sentence beside a
shorter one, right-padded, so row 1 ends in [PAD] positions
(bertspec.proof.examples.padded_batch).
"""

import pytest
import torch

from bertspec.models.inputs import pad_right
from bertspec.proof import scope
from bertspec.proof.examples import padded_batch, unpadded_batch
from bertspec.proof.tolerances import TOL
from bertspec.tracing import masks, probe


@pytest.mark.counterfeits("mask_dropped", "mask_token_hidden")
def test_the_padding_mask_and_the_mlm_mask_token_are_separate_inputs(bert, evidence):
    """The attention padding mask and the MLM [MASK] token are two different inputs that never meet.

    Padding is a 0 in ``attention_mask`` and becomes an additive bias (or a
    boolean) on scores. [MASK] is a token id in ``input_ids`` (103 in the
    Chinese vocabulary) with attention_mask 1 and, in training, a label; the
    layer's mask lets every query attend to it.

    Claim ID: P2.2a
    Question: Is the attention mask the same thing as the [MASK] token?
    问题：attention mask 和 [MASK] token 是一回事吗？
    中文：attention 的 padding mask 与 MLM 的 [MASK] token 是两种不同的输入，互不相干。
    原因：padding 是 attention_mask 中的 0，变成加在分数上的偏置（或布尔值）；[MASK] 是 input_ids 里的
    一个 token id（中文词表中为 103），其 attention_mask 为 1，训练时带 label；层收到的 mask 允许所有 query 关注它。
    """
    batch = padded_batch(bert)
    tok = bert.tokenizer
    ids, am = batch.input_ids.cpu(), batch.attention_mask.cpu()
    trace, _ = bert.trace(batch)
    b, t = ids.shape
    allowed = masks.allowed(trace.all("attention_mask")[0].tensor, b, t)
    (mask_pos,) = batch.positions(tok.mask_token_id)
    evidence.table("row 0", ["position", "token", "input_id", "attention_mask", "may be attended"],
                   [(j, bert.tokens(batch)[j], int(ids[0, j]), int(am[0, j]), bool(allowed[0, :, j].all())) for j in range(t)])
    evidence.table("row 1", ["position", "token", "input_id", "attention_mask"],
                   [(j, bert.tokens(batch, 1)[j], int(ids[1, j]), int(am[1, j])) for j in range(t)])
    assert tok.mask_token_id != tok.pad_token_id
    assert am[0, mask_pos] == 1
    assert bool(allowed[0, :, mask_pos].all())
    assert torch.equal(am == 0, ids == tok.pad_token_id), "attention_mask is 0 exactly at [PAD] ids"
    assert torch.equal(allowed[:, 0, :], am.bool()), "the layer mask hides exactly the [PAD] keys"


@pytest.mark.across_families
@pytest.mark.counterfeits("mask_token_hidden")
@pytest.mark.carries(
    decoder=scope.not_applicable_to("a causal LM has no [MASK]: it predicts each next token from the tokens before it"),
    encoder_decoder=scope.differs_on("T5 hides whole spans behind sentinel tokens (<extra_id_N>) in its encoder's input, "
                                     "which attends both ways", scope.T5_SPANS))
def test_the_mask_token_is_attended_to_and_attends_to_every_real_token(bert, evidence):
    """[MASK] is an ordinary visible token: every query gives it weight, and it may attend to every real token.

    Nothing in attention singles out the [MASK] id. As a key it is seen by
    every query, shown through what attention outputs, so on the fused sdpa
    kernel too: shifting the [MASK] position's value moves every query's output
    in every layer and head (bertspec.tracing.probe). As a query, the mask each layer
    receives allows it every real key, exactly as for any other token; on
    eager, where the probabilities are observed, each of them is positive
    (on sdpa the table shows the tracer's derived ones). Only [PAD] keys are
    hidden.

    Claim ID: P2.2b
    Question: Is the [MASK] token hidden from attention?
    问题：[MASK] token 在 attention 中会被屏蔽吗？
    中文：[MASK] 是普通的可见 token：每个 query 都给它权重，它也可以关注每个真实 token。
    原因：attention 中没有任何针对 [MASK] id 的特殊处理。作为 key，每个 query 都能看到它——通过 attention 的输出展示，
    因此对 sdpa 融合内核同样成立：平移 [MASK] 位置的 value 会改变每一层、每个头中每个 query 的输出（bertspec.tracing.probe）。作为 query，
    每层收到的 mask 允许它看到每个真实 key，与其他 token 完全一样；在能观测概率的 eager 上，每个概率都为正（sdpa 上表格显示
    tracer 推导的概率）。只有 [PAD] key 被隐藏。
    """
    batch = unpadded_batch(bert)
    scope.attends_globally(bert, batch.input_ids.shape[1])
    (mask_pos,) = batch.positions(bert.tokenizer.mask_token_id)
    trace, _ = bert.trace(batch)
    b, t = batch.input_ids.shape
    probs = trace.stack("probs")[:, 0]  # (L, H, T, T)
    at_mask = batch.input_ids == bert.tokenizer.mask_token_id
    moved = probe.value_influence(bert.model, batch.as_kwargs(), at_mask)[:, 0]  # (L, H, T)
    allowed = masks.allowed(trace.all("attention_mask")[0].tensor, b, t)[0]  # (T, T)
    derived = trace.all("probs")[0].source == "derived"
    to_mask, from_mask = probs[..., :, mask_pos], probs[..., mask_pos, :]
    evidence.table("attention involving [MASK] (all layers and heads)", ["direction", "min", "mean", "max"],
                   [("others → [MASK], probability", to_mask.min(), to_mask.mean(), to_mask.max()),
                    ("others → [MASK], |Δ output| with its value shifted", moved.min(), moved.mean(), moved.max()),
                    ("[MASK] → others, probability", from_mask.min(), from_mask.mean(), from_mask.max())], derived=derived)
    assert bool((moved > 0).all()), "some query's output does not depend on the [MASK] value"
    assert bool(allowed[mask_pos].all()) and bool(allowed[:, mask_pos].all())
    if not derived:
        assert bool((to_mask > 0).all()) and bool((from_mask > 0).all())


@pytest.mark.across_families
@pytest.mark.counterfeits("mask_dropped")
@pytest.mark.carries(
    decoder=scope.differs_on("a decoder predicts at each row's right end, so a batch is padded on the left, where the "
                             "padding changes nothing", scope.LEFT_PADDING),
    encoder_decoder=scope.differs_on("the encoder's padding is hidden from every decoder query by the cross-attention "
                                     "mask", scope.T5_CROSS_MASK))
def test_appending_padding_does_not_change_the_prediction_at_the_mask_position(mlm, evidence):
    """The logits at [MASK] are the same with 0, 1 or 8 [PAD] tokens appended, and so is the prediction.

    Padded keys get probability exactly 0, so they add nothing to any real
    token's context. Longer matrices change only the order of float additions,
    hence the float32 kernel tolerance rather than bit equality.

    Claim ID: P2.2c
    Question: Does padding change the prediction at [MASK]?
    问题：padding 会改变 [MASK] 处的预测吗？
    中文：在句尾追加 0、1 或 8 个 [PAD]，[MASK] 位置的 logits 与预测都不变。
    原因：padding key 的概率精确为 0，对真实 token 的上下文没有贡献；矩阵变长只改变浮点加法顺序，
    因此按 float32 内核容差而非逐位比较。
    """
    base = unpadded_batch(mlm)
    (mask_pos,) = base.positions(mlm.tokenizer.mask_token_id)
    logits = {}
    for n_pad in (0, 1, 8):
        batch = pad_right(base, n_pad, mlm.tokenizer.pad_token_id)
        with torch.no_grad():
            logits[n_pad] = mlm.model(**batch.as_kwargs()).logits[0, mask_pos]
    top = {n: mlm.token(v.argmax()) for n, v in logits.items()}
    evidence.table("logits at [MASK]", ["pads appended", "argmax", "max |diff| vs 0 pads"],
                   [(n, top[n], (v - logits[0]).abs().max()) for n, v in logits.items()])
    for n in (1, 8):
        torch.testing.assert_close(logits[n], logits[0], **TOL["float32_kernels"])
        assert top[n] == top[0]
