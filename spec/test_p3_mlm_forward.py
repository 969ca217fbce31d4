"""Chapter P3 — the MLM forward pass, the prediction head and the loss, every step recomputed by hand.

The path is input_ids → embeddings → encoder layers → sequence_output → head →
logits → loss. Each claim recomputes one part from the model's own weights (the
from-scratch reference in bertspec/proof/reference.py, or a line of torch in the test)
fed the very tensor transformers' module received, then the whole model end to
end, then the predictions. The masking that makes training data
(DataCollatorForLanguageModeling) closes the chapter; counterfeit models at the
end show that the claims can fail.

The batch is three sentences with four [MASK] tokens, right-padded; labels are
the original characters at the [MASK] positions and -100 everywhere else.
"""

import math
import weakref
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from bertspec.models import anatomy, versions
from bertspec.proof import counterfeits, scope, teeth
from bertspec.handbook.figures import loss_and_gradient_figure
from bertspec.models.inputs import texts_for
from bertspec.tracing.modes import training
from bertspec.proof.reference import ACTIVATIONS, IGNORE_INDEX, additive_mask, from_model, mlm_loss, token_nll
from bertspec.proof.tolerances import TOL, attention_component, forward_tolerance, score_peak
from bertspec.tracing.trace import MODEL_INPUTS, module_path

SEED = 0


# A binomial count stays within Z_BOUND standard deviations of its mean with probability
# 1 - 5.7e-7 (two-sided normal tail at 5 sigma): a correct sampler fails this once in ~2 million seeds.
Z_BOUND = 5.0


# ---- inputs and shared computations ----

def masked_batch(bert):
    """Three sentences with four [MASK]s, right-padded, in the language of the checkpoint's vocabulary."""
    return bert.encode(list(bert.texts.masked))


def answer_labels(bert, batch) -> torch.Tensor:
    """(B, T) the original token at every [MASK], -100 everywhere else."""
    filled = bert.encode(list(bert.texts.filled)).input_ids
    assert filled.shape == batch.input_ids.shape, "each [MASK] must stand for exactly one token of the filled text"
    return torch.where(batch.input_ids == bert.tokenizer.mask_token_id, filled, IGNORE_INDEX)


def real_tokens(batch) -> torch.Tensor:
    return batch.attention_mask.bool()


_REFERENCES = weakref.WeakKeyDictionary()


def reference_of(bert):
    """The from-scratch reference holding the model's weights, built once per model (~0.5 s at bert-base size)."""
    scope.reference_only_for_bert(bert)
    if bert.model not in _REFERENCES:
        _REFERENCES[bert.model] = from_model(bert.model).eval()
    return _REFERENCES[bert.model]


def sequence_output_step(bert) -> str:
    return bert.anatomy.sequence_output_step(bert.config.num_hidden_layers)


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@dataclass
class Backward:
    """One forward pass with labels and the gradients of its loss at the places people ask about."""

    loss: torch.Tensor  # ()
    logits: torch.Tensor  # (B, T, V)
    logits_grad: torch.Tensor  # (B, T, V)
    embedding_grad: torch.Tensor  # (B, T, C) at the word-embedding lookup's output
    decoder_input: torch.Tensor  # (B, T, C) the transform's output
    word_embeddings_grad: torch.Tensor  # (V, C) of the word-embedding matrix, all its uses together


def backward(bert, batch, labels) -> Backward:
    """Gradients by torch.autograd.grad: nothing accumulates in the shared model's .grad."""
    model = bert.model
    seen = {}
    handles = [
        bert.word_embeddings.register_forward_hook(lambda m, args, out: seen.update(embedded=out)),
        bert.decoder.register_forward_hook(lambda m, args, out: seen.update(h=args[0], logits=out)),
    ]
    try:
        loss = model(**batch.as_kwargs(), labels=labels).loss
    finally:
        for handle in handles:
            handle.remove()
    W = bert.word_embeddings.weight
    logits_grad, embedding_grad, w_grad = torch.autograd.grad(loss, [seen["logits"], seen["embedded"], W])
    return Backward(loss.detach(), seen["logits"].detach(), logits_grad, embedding_grad, seen["h"].detach(), w_grad)


def within_binomial_bound(count: int, n: int, p: float) -> tuple[float, float]:
    """(observed fraction, half-width of the Z_BOUND-sigma band around p) for count successes in n trials."""
    return count / n, Z_BOUND * math.sqrt(p * (1 - p) / n)


# ---- P3.1 the path from input_ids to sequence_output ----

def expected_shapes(a, b: int, t: int, config) -> dict[str, tuple]:
    """Step name -> the shape the config implies; steps not listed have the hidden size's, (B, T, hidden)."""
    embedding = getattr(config, "embedding_size", config.hidden_size)  # ALBERT and ELECTRA embed narrower (E)
    ffn = getattr(config, "intermediate_size", None) or config.hidden_dim  # DistilBERT calls it hidden_dim
    shapes = {name: (b, t) for name in MODEL_INPUTS}
    for name in (a.word_embeddings, a.token_type_embeddings, a.embedding_norm, f"{a.embedding_norm}:input", a.embeddings,
                 a.head_dense, a.head_activation, f"{a.head_norm}:input", a.head_norm):
        shapes[name] = (b, t, embedding)
    shapes[a.position_embeddings] = (None, t, embedding)  # a row of positions for the batch (BERT) or one per row (RoBERTa)
    shapes[a.decoder] = (b, t, config.vocab_size)
    for i in range(config.num_hidden_layers):
        for quantity in ("scores", "scores+mask", "probs"):
            shapes[a.attention_step(i, quantity)] = (b, config.num_attention_heads, t, t)
        if a.fused_qkv:
            shapes[a.projection_step(i, "query")] = (b, t, 3 * config.hidden_size)
        shapes[a.step(i, a.ffn_in)] = (b, t, a.ffn_in_factor * ffn)
        shapes[a.step(i, a.ffn_activation)] = (b, t, ffn)
    return shapes


def shape_is_right(step, shapes: dict, b: int, t: int, config) -> bool:
    expected = shapes.get(step.name, (b, t, config.hidden_size))
    if expected[0] is None:  # 1 (broadcast over the batch) or B
        return step.shape[0] in (1, b) and step.shape[1:] == expected[1:]
    return step.shape == expected


# Families whose embeddings are not word + token type + position, and the claim that shows theirs.
EMBEDDING_DIFFERENCES = {
    "distilbert": scope.DISTILBERT_MASK,
    "modernbert": scope.MODERNBERT_ROTARY,
}


def test_every_step_from_input_ids_to_the_logits_has_the_shape_the_config_implies(bert, evidence):
    """Every recorded step, input_ids to logits, has the shape the config implies, and the last layer's output is sequence_output.

    B sequences of T tokens become [B, T] ids, then [B, T, hidden] vectors
    through the embeddings and every layer; attention works on [B, heads, T, T]
    score matrices, the feed-forward widens to [B, T, intermediate]; the
    decoder maps to [B, T, vocab]. The last layer's final LayerNorm output is
    exactly what ``model.bert(...)`` returns as ``last_hidden_state``
    (sequence_output). The evidence lists every step with its key values.

    Claim ID: P3.1a
    Question: What shape does each tensor have on the way from input_ids to the logits?
    问题：从 input_ids 到 logits，每一步张量的形状是什么？
    中文：从 input_ids 到 logits 的每一步记录都具有配置所决定的形状，最后一层的输出就是 sequence_output。
    原因：B 个长度为 T 的序列先是 [B,T] 的 id，经过嵌入层和每一层都是 [B,T,hidden]；attention 的分数矩阵是
    [B,heads,T,T]，前馈网络扩展到 [B,T,intermediate]，decoder 映射到 [B,T,vocab]。最后一层最后一个 LayerNorm
    的输出与 model.bert(...) 返回的 last_hidden_state（sequence_output）逐位相同。证据列出每一步的关键数值。
    """
    batch = masked_batch(bert)
    trace, output = bert.trace(batch)
    b, t = batch.input_ids.shape
    steps = [s for s in trace if not s.name.endswith(":attention_mask")]  # its form is chapter P2's subject
    evidence.table("every step (masked batch)", ["step", "shape", "mean", "std", "min", "max"],
                   [(s.name, s.shape, s.mean, s.std, s.min, s.max) for s in steps])
    shapes = expected_shapes(bert.anatomy, b, t, bert.config)
    for step in steps:
        assert shape_is_right(step, shapes, b, t, bert.config), f"{step.name}: {step.shape}"
    sequence_output = bert.last_hidden(batch)
    assert torch.equal(trace.tensor(sequence_output_step(bert)), sequence_output)
    assert torch.equal(trace.tensor(bert.anatomy.decoder), output.logits)


def test_the_embeddings_are_word_plus_token_type_plus_position_vectors_then_layernorm(bert, evidence):
    """The embedding output is LayerNorm(word[id] + token_type[type] + position[index]) with the configured eps.

    Three lookups in three tables, summed per token (transformers adds word,
    then token type, then position; the test adds in the same order, so the sum
    is bit-for-bit the module's), then one LayerNorm with ``layer_norm_eps``
    from the config. In eval mode the dropout after it is the identity, so the
    module's output equals the reference's, also bit for bit (the reference
    implements BERT). RoBERTa's positions count from padding_idx + 1: the
    position ids used here are the family's own. A sentence pair is
    used so that both token types occur (where the checkpoint has two:
    type_vocab_size 1 has one row, added at every position).

    Claim ID: P3.1b
    Question: How are BERT's input embeddings computed?
    问题：BERT 的输入嵌入是怎样计算的？
    中文：嵌入层输出等于 LayerNorm(word[id] + token_type[type] + position[位置])，eps 取自配置。
    原因：三张表各查一次、按 token 相加（transformers 先加 word，再加 token type，最后加 position；测试按同样顺序相加，
    所以和与模块内部逐位相同），再做一次 eps 为 layer_norm_eps 的 LayerNorm。推理模式下其后的 dropout 是恒等映射，
    因此模块输出与参考实现逐位相同（参考实现只实现 BERT）。RoBERTa 的位置从 padding_idx + 1 数起，这里使用的正是它的位置。使用句对输入，使两种 token type 都出现（checkpoint 有两种时；type_vocab_size 为 1 时只有一行，加在每个位置上）。
    """
    a = bert.anatomy
    if a.position_embeddings is None or a.token_type_embeddings is None:
        scope.differs(bert, "its embeddings have no " + ("position table (rotary positions)" if a.position_embeddings is None
                                                         else "token-type table"), EMBEDDING_DIFFERENCES[a.family])
    batch = bert.encode([bert.texts.pair[0], bert.texts.sentence], [bert.texts.pair[1], bert.texts.short])
    trace, _ = bert.trace(batch)
    norm = bert.module(a.embedding_norm)
    ids, types = batch.input_ids, batch.token_type_ids
    positions = a.default_position_ids(ids, bert.word_embeddings.padding_idx)
    word = bert.word_embeddings.weight[ids]
    token_type = bert.module(a.token_type_embeddings).weight[types]
    position = bert.module(a.position_embeddings).weight[positions].expand_as(word)
    evidence.table("row 0: the three vectors per token (norms)",
                   ["index", "token", "type", "position id", "|word|", "|type|", "|position|", "|sum|"],
                   [(j, tok, int(types[0, j]), int(positions[0 if positions.shape[0] == 1 else 0, j]), word[0, j].norm(),
                     token_type[0, j].norm(), position[0, j].norm(), (word + token_type + position)[0, j].norm())
                    for j, tok in enumerate(bert.tokens(batch, 0))])
    rows = [(bert.config.layer_norm_eps, norm.eps)]
    if a.family == "bert":
        with torch.no_grad():
            by_reference = reference_of(bert).bert.embeddings(ids, types)
        rows[0] += (max_diff(trace.tensor(a.embeddings), by_reference),)
        torch.testing.assert_close(trace.tensor(a.embeddings), by_reference, **TOL["exact"])
    evidence.table("LayerNorm", ["eps in the config", "eps of the module", "max |module - reference| (BERT)"][:len(rows[0])], rows)
    assert set(types.unique().tolist()) == set(range(min(2, bert.config.type_vocab_size)))
    assert torch.equal(trace.tensor(a.word_embeddings), word)
    assert torch.equal(trace.tensor(a.token_type_embeddings), token_type)
    assert torch.equal(trace.tensor(a.position_embeddings).expand_as(word), position)
    assert torch.equal(trace.tensor(f"{a.embedding_norm}:input"), word + token_type + position)
    assert norm.eps == bert.config.layer_norm_eps


def test_omitted_token_type_ids_mean_segment_a_for_every_token(bert, evidence):
    """Called without token_type_ids, BERT gives every token type 0 (segment A): the same output as explicit zeros, not as ones.

    A default is a mechanism too: BertEmbeddings fills a missing
    token_type_ids with zeros (a registered buffer sliced to the input's
    length), so a sentence pair encoded without them is read as one segment.
    The output equals that of explicit zeros bit for bit and differs from that
    of explicit ones, whenever the checkpoint has a second token type at all
    (type_vocab_size ≥ 2; with one type, zeros are the only valid value).

    Claim ID: P3.1b
    Question: What token_type_ids does BERT use if I don't pass any?
    问题：不传 token_type_ids 时 BERT 用什么？
    中文：不传 token_type_ids 时，BERT 把每个 token 的类型都当作 0（片段 A）：输出与显式传全 0 相同，与全 1 不同。
    原因：默认值也是一种机制：BertEmbeddings 用全 0（一个按输入长度截取的缓冲区）填充缺失的 token_type_ids，所以不带它们编码的句对
    会被当作一个片段。输出与显式全 0 逐位相同，与显式全 1 不同——只要 checkpoint 有第二种 token type（type_vocab_size ≥ 2；
    只有一种类型时，0 是唯一合法的值）。
    """
    scope.token_types(bert)
    batch = bert.encode(*bert.texts.pair)
    omitted = bert.last_hidden(batch, token_type_ids=None)
    zeros = bert.last_hidden(batch, token_type_ids=torch.zeros_like(batch.input_ids))
    rows = [("explicit zeros", max_diff(omitted, zeros))]
    if bert.config.type_vocab_size >= 2:
        ones = bert.last_hidden(batch, token_type_ids=torch.ones_like(batch.input_ids))
        rows.append(("explicit ones", max_diff(omitted, ones)))
        assert max_diff(omitted, ones) > 1e-3, "a default of ones would be indistinguishable"
    evidence.table("omitted token_type_ids vs", ["explicit", "max |Δ last hidden|"], rows)
    torch.testing.assert_close(omitted, zeros, **TOL["exact"])


@pytest.mark.counterfeits("positions_counted_from_one")
def test_omitted_position_ids_count_from_0_to_t_minus_1(bert, evidence):
    """Called without position_ids, BERT numbers the positions 0..T-1: the same output as explicit 0..T-1, not as 1..T.

    BertEmbeddings slices its registered ``position_ids`` buffer (0..max-1) to
    the input's length, the same for every row whatever its padding. The output
    equals that of explicit 0..T-1 bit for bit and differs from that of 1..T,
    the off-by-one a reimplementation makes (the counterfeit
    positions_counted_from_one).

    Claim ID: P3.1b
    Question: Which position ids does BERT use if I don't pass any?
    问题：不传 position_ids 时 BERT 用哪些位置编号？
    中文：不传 position_ids 时，BERT 把位置编号为 0..T-1：输出与显式传 0..T-1 相同，与 1..T 不同。
    原因：BertEmbeddings 把注册的 position_ids 缓冲区（0..max-1）截取到输入长度，每一行都一样，与 padding 无关。输出与显式
    0..T-1 逐位相同，与 1..T（重写时常见的差一错误，即反例 positions_counted_from_one）不同。
    """
    scope.positions_from_zero(bert)
    batch = bert.example()
    t = batch.input_ids.shape[1]
    omitted = bert.last_hidden(batch, position_ids=None)
    counted = bert.last_hidden(batch, position_ids=torch.arange(t, device=bert.device)[None])
    shifted = bert.last_hidden(batch, position_ids=torch.arange(1, t + 1, device=bert.device)[None])
    evidence.table("omitted position_ids vs", ["explicit", "max |Δ last hidden|"],
                   [("0..T-1", max_diff(omitted, counted)), ("1..T", max_diff(omitted, shifted))])
    torch.testing.assert_close(omitted, counted, **TOL["exact"])
    assert max_diff(omitted, shifted) > 1e-3


def test_in_training_mode_embedding_dropout_zeroes_a_fraction_p_and_scales_the_rest_by_1_over_1_minus_p(bert, evidence):
    """In training mode the embeddings' dropout zeroes about hidden_dropout_prob of the values and scales the rest by 1/(1-p).

    Dropout is the last step of BertEmbeddings: each value is kept with
    probability 1-p and divided by 1-p, so its expectation is unchanged. The
    kept values are exactly the LayerNorm output times float32(1/(1-p)); the
    fraction zeroed stays within 5 binomial standard deviations of p. In eval
    mode (every other claim) it is the identity.

    Claim ID: P3.1b
    Question: What does dropout do to the embeddings in training mode?
    问题：训练模式下 dropout 对嵌入层的输出做了什么？
    中文：训练模式下，嵌入层的 dropout 把约 hidden_dropout_prob 比例的值置零，其余乘以 1/(1-p)。
    原因：dropout 是 BertEmbeddings 的最后一步：每个值以 1-p 的概率保留并除以 1-p，期望不变。保留的值恰好等于
    LayerNorm 输出乘以 float32(1/(1-p))；置零比例落在 p 的 5 个二项标准差之内。推理模式下（其他所有断言）它是恒等映射。
    """
    a = bert.anatomy
    p = next(m.p for m in bert.module(a.embeddings).modules() if isinstance(m, nn.Dropout))
    batch = masked_batch(bert)
    with torch.random.fork_rng(), training(bert.model):
        torch.manual_seed(SEED)
        trace, _ = bert.trace(batch)
    normalised, out = trace.tensor(a.embedding_norm), trace.tensor(a.embeddings)
    kept = out != 0
    dropped, half_width = within_binomial_bound(int((~kept).sum()), out.numel(), p)
    evidence.table("embedding dropout (training mode)", ["p", "values", "fraction zeroed", "allowed (5 sigma)", "kept / LayerNorm output"],
                   [(p, out.numel(), dropped, f"{p:.3f} ± {half_width:.4f}", 1 / (1 - p))])
    assert abs(dropped - p) <= half_width
    assert torch.equal(out[kept], normalised[kept] * (1 / (1 - p)))


def recomputed_components(reference, trace, mask):
    """(step, recomputed, traced, tolerance) for every encoder sublayer, each fed the traced upstream activation.

    The reference is BERT's (bertspec.proof.reference), so the steps are read through BERT's anatomy.
    """
    a = anatomy.BERT
    x = trace.tensor(a.embeddings)
    for i, block in enumerate(reference.bert.encoder.layer):
        context, probs = block.attention.self(x, mask)
        attended = trace.tensor(a.step(i, a.attention_norm))
        activated = trace.tensor(a.step(i, a.ffn_activation))
        scores = trace.tensor(a.attention_step(i, "scores")).abs().max().item()
        values = trace.tensor(a.projection_step(i, "value")).abs().max().item()
        yield a.attention_step(i, "probs"), probs, trace.tensor(a.attention_step(i, "probs")), attention_component(scores)
        yield a.attention_step(i), context, trace.tensor(a.attention_step(i)), attention_component(scores, values)
        component = TOL["reference_component"]
        yield a.step(i, a.attention_norm), block.attention.output(trace.tensor(a.attention_step(i)), x), attended, component
        yield a.step(i, a.ffn_activation), block.intermediate(attended), activated, component
        x = trace.tensor(a.layer_output_step(i, len(reference.bert.encoder.layer)))
        yield a.step(i, a.output_norm), block.output(activated, attended), x, component


def test_each_encoder_layer_recomputed_by_hand_is_attention_residual_layernorm_then_ffn_residual_layernorm(bert, evidence):
    """Each encoder layer is LayerNorm(x + Attention(x)), then LayerNorm(a + FFN(a)): recomputed by hand, sublayer by sublayer.

    The reference (bertspec/proof/reference.py) writes every sublayer out: multi-head
    attention softmax(q k^T / sqrt(d) + mask) v, the output projection plus the
    residual then LayerNorm (post-LN: normalised after the sum), the
    feed-forward dense → activation → dense, plus the residual, then LayerNorm.
    Each sublayer is fed the tensor transformers' own sublayer received, so an
    error cannot hide in an earlier one. Tolerance: TOL["reference_component"],
    and for the attention probabilities and context one that grows with the
    largest score and value (bertspec.proof.tolerances.attention_component: a score
    rounded another way is off by ulps of itself, and trained checkpoints'
    scores reach ±50).

    Claim ID: P3.1c
    Question: What exactly happens inside one encoder layer?
    问题：一个 encoder 层内部到底做了什么？
    中文：每个 encoder 层都是 LayerNorm(x + Attention(x))，再 LayerNorm(a + FFN(a))：逐个子层手工重算。
    原因：参考实现（bertspec/proof/reference.py）写出每个子层：多头注意力 softmax(qk^T/sqrt(d) + mask)v，输出投影加残差后做 LayerNorm
    （post-LN：先相加再归一化），前馈网络 dense→激活→dense，加残差后 LayerNorm。每个子层都输入 transformers
    对应子层实际收到的张量，误差无法藏在前面的子层里。容差见 TOL["reference_component"]；注意力概率与上下文的容差随最大分数与最大 value
    增长（bertspec.proof.tolerances.attention_component：以另一种方式舍入的分数相差它自身的若干 ulp，而训练过的 checkpoint 分数可达 ±50）。
    """
    batch = masked_batch(bert)
    trace, _ = bert.trace(batch)
    mask = additive_mask(batch.attention_mask, torch.float32)
    with torch.no_grad():
        compared = list(recomputed_components(reference_of(bert), trace, mask))
    evidence.table("reference sublayer vs transformers (same input)", ["step", "max |diff|", "atol", "bit-equal"],
                   [(name, max_diff(ours, theirs), tol["atol"], torch.equal(ours, theirs)) for name, ours, theirs, tol in compared])
    assert len(compared) == 5 * bert.config.num_hidden_layers
    for name, ours, theirs, tol in compared:
        torch.testing.assert_close(ours, theirs, **tol, msg=lambda m, name=name: f"{name}: {m}")


OTHER_GELU = {"gelu": ACTIVATIONS["gelu_new"], "gelu_new": ACTIVATIONS["gelu"], "gelu_pytorch_tanh": ACTIVATIONS["gelu"]}


def test_the_feed_forward_and_head_activation_is_the_configured_gelu_not_its_other_variant(bert, evidence):
    """The feed-forward and head non-linearity is the configured one: "gelu" is the exact erf GELU, not the tanh approximation.

    ``hidden_act="gelu"`` in transformers is x·Φ(x) computed with erf; the
    original TensorFlow BERT and GPT-2 used the tanh approximation
    ("gelu_new"). The two differ by at most 4.7e-4 (at x ≈ ±2.7):
    small, but a reimplementation that picks the wrong one does not reproduce
    the model. The activation's output equals the configured function bit for
    bit and differs from the other variant.

    Claim ID: P3.1c
    Question: Does BERT use the exact GELU or the tanh approximation?
    问题：BERT 用的是精确的 GELU 还是 tanh 近似？
    中文：前馈网络与预测头的非线性就是配置的那个："gelu" 是用 erf 精确计算的 GELU，而非 tanh 近似。
    原因：transformers 中 hidden_act="gelu" 是用 erf 计算的 x·Φ(x)；原始 TensorFlow BERT 与 GPT-2 用的是 tanh
    近似（"gelu_new"）。两者最多相差 4.7e-4（在 x≈±2.7 处），很小，但选错的重写无法复现模型。激活输出与配置的函数逐位相同，
    且与另一种变体不同。
    """
    a = bert.anatomy
    if a.ffn_in_factor != 1:
        scope.differs(bert, "a gated feed-forward (GeGLU): the activation is applied to half the projection, "
                            "times the other half", scope.MODERNBERT_PRE_LN)
    act = getattr(bert.config, "hidden_act", getattr(bert.config, "activation", None))
    if act not in OTHER_GELU:
        pytest.skip(f"hidden_act={act!r} is not a GELU")
    trace, _ = bert.trace(masked_batch(bert))
    pairs = [(a.step(i, a.ffn_in), a.step(i, a.ffn_activation)) for i in range(bert.config.num_hidden_layers)]
    if a.head_activation is not None:
        pairs.append((a.head_dense, a.head_activation))
    rows = []
    for before, after in pairs:
        x, y = trace.tensor(before), trace.tensor(after)
        rows.append((after, max_diff(y, ACTIVATIONS[act](x)), max_diff(y, OTHER_GELU[act](x))))
        assert torch.equal(y, ACTIVATIONS[act](x)), after
        assert not torch.equal(y, OTHER_GELU[act](x)), after
    evidence.table(f"activation output vs the formula (hidden_act={act!r})", ["step", "max |diff| configured", "max |diff| other variant"], rows)


def test_every_layernorm_standardises_each_position_then_scales_and_shifts_it_with_the_configured_eps(bert, evidence):
    """Every LayerNorm output is weight · (x − mean) / sqrt(var + eps) + bias per position, with the biased variance and the configured eps.

    Written out in float64 for every LayerNorm of the model — each one the
    trace recorded (embeddings, two per layer, the head's transform), and none
    left out. The standardised part has mean 0 and
    variance 1 per position by construction, which is why the step table shows
    LayerNorm outputs with mean ≈ 0 and std ≈ 1 where the learned weight is
    near 1 and the bias near 0. Tolerance: TOL["layernorm_by_hand"], far below
    what a wrong eps or the unbiased variance would change.

    Claim ID: P3.1c
    Question: What does BERT's LayerNorm compute, and with which eps?
    问题：BERT 的 LayerNorm 计算的是什么，eps 是多少？
    中文：每个 LayerNorm 的输出都是逐位置的 weight·(x−mean)/sqrt(var+eps)+bias，方差为有偏方差，eps 取自配置。
    原因：对模型的每个 LayerNorm（trace 记录到的嵌入层、每层两个、预测头的 transform，一个不漏）用 float64 手工计算。标准化部分在每个
    位置上均值为 0、方差为 1，这正是步骤表中 LayerNorm 输出均值≈0、标准差≈1 的原因（当学到的 weight 接近 1、bias 接近 0）。
    容差 TOL["layernorm_by_hand"] 远小于 eps 错误或使用无偏方差造成的差异。
    """
    trace, _ = bert.trace(masked_batch(bert))
    eps = getattr(bert.config, "layer_norm_eps", getattr(bert.config, "norm_eps", 1e-12))  # DistilBERT's is fixed, 1e-12
    rows = []
    norms = [(s.name, bert.module(module_path(s.name))) for s in trace if f"{s.name}:input" in trace]
    names = [name for name, module in norms if isinstance(module, nn.LayerNorm)]  # ModernBERT's first attn_norm is Identity
    for name in names:
        module = bert.module(module_path(name))
        x = trace.tensor(f"{name}:input").to(torch.float64)
        z = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + module.eps)
        bias = 0.0 if module.bias is None else module.bias.detach().double()  # ModernBERT's norms have none
        by_hand = z * module.weight.detach().double() + bias
        observed = trace.tensor(name)
        rows.append((name, module.eps, max_diff(observed.double(), by_hand), z.mean(-1).abs().max(), (z.std(-1, unbiased=False) - 1).abs().max()))
        assert module.eps == eps, name
        torch.testing.assert_close(observed, by_hand.float(), **TOL["layernorm_by_hand"], msg=lambda m, name=name: f"{name}: {m}")
    evidence.table("LayerNorm by hand (float64)", ["step", "eps", "max |module - by hand|", "max |mean z|", "max |std z - 1|"], rows)
    checked = {id(bert.module(module_path(name))) for name in names}
    assert checked == {id(m) for m in bert.model.modules() if isinstance(m, nn.LayerNorm)}, "a LayerNorm went unchecked"
    assert len(names) >= 1 + 2 * bert.config.num_hidden_layers  # ALBERT's shared norms: once per occurrence


GELU_MINIMUM = -0.1700  # min of x·Φ(x), at x ≈ -0.7518 (the tanh variant's is the same to 4 decimals)


def step_summary(step) -> str:
    def number(v):
        return f"{v:.4f}".replace("-0.0000", "0.0000")

    return f"{step.shape} mean {number(step.mean)} std {number(step.std)} min {number(step.min)} max {number(step.max)}"


def test_the_bundled_models_path_from_input_ids_to_the_prediction_matches_its_snapshot(mlm, snapshot):
    """The bundled model's every step on the plan's sentence, shape and mean/std/min/max, is the reviewed one.

    Why the recorded values are right is asserted by the claims above and
    checked again here where cheap: shapes follow the config; LayerNorm outputs
    are standardised vectors scaled and shifted (mean ≈ 0, std ≈ 1 where weight
    ≈ 1); attention probabilities lie in [0, 1]; GELU outputs never go below
    its minimum, -0.17; logits are unbounded scores. The snapshot pins the rest
    (the learned values), so a change in transformers, torch or the model file
    shows up as a reviewable diff. Masks are chapter P2's (their form differs by
    version), so they are left out; everything else is the same on 4.57 and 5.x.

    Claim ID: P3.1d
    Question: Has any step of the bundled model's forward pass changed since it was reviewed?
    问题：自带模型前向传播的某一步与审核时相比有变化吗？
    中文：自带模型在计划例句上的每一步（形状与均值/标准差/最小值/最大值）都与已审核的快照一致。
    原因：这些数值为何正确由前面的断言保证，并在此再做廉价检查：形状由配置决定；LayerNorm 输出是经缩放平移的标准化向量
    （weight≈1 时均值≈0、标准差≈1）；注意力概率在 [0,1]；GELU 输出不低于其最小值 -0.17；logits 是无界分数。
    快照固定其余部分（学到的数值），使 transformers、torch 或模型文件的变化表现为可审阅的差异。mask 属于 P2 章（形式随版本不同），
    故不纳入；其余在 4.57 与 5.x 上相同。
    """
    batch = mlm.example(padded=False)
    trace, output = mlm.trace(batch)
    steps = [s for s in trace if not s.name.endswith((":attention_mask", ":scores+mask"))]
    for s in trace.all("probs"):
        assert 0.0 <= s.min and s.max <= 1.0, s.name
    for s in steps:
        if s.name.endswith("act_fn"):
            assert s.min >= GELU_MINIMUM, s.name
    (mask_position,) = batch.positions(mlm.tokenizer.mask_token_id)
    top = output.logits[0, mask_position].softmax(-1).topk(5)
    assert snapshot == {
        "steps, in execution order": [f"{s.name}: {step_summary(s)}" for s in steps],
        "top 5 at [MASK]": [f"{mlm.token(i)} {p:.4f}" for p, i in zip(top.values.tolist(), top.indices.tolist())],
    }


# ---- P4.2b the reference end to end ----

@pytest.mark.counterfeits("head_without_transform")
def test_the_reference_forward_reproduces_transformers_logits_sequence_output_and_loss(mlm, evidence):
    """The from-scratch reference, given only the state dict, reproduces transformers' logits, sequence_output and loss.

    bertspec/proof/reference.py loads the weights with ``strict=True`` and spells out
    every step; run end to end on the padded, masked batch it agrees with
    transformers everywhere, padded positions included. On eager the arithmetic
    turns out bit-equal; sdpa's fused kernel rounds differently, so each output
    is held to the rounding bound of bertspec.proof.tolerances.forward_tolerance: L
    layers x (2 (sqrt(head_dim) u32 + 2u) x the largest score + (2 sqrt(hidden)
    + sqrt(intermediate)) u32 + 3u) x max|output| (float32, u = u32 = 2^-24),
    which grows with the scores a trained checkpoint has.

    Claim ID: P4.2b
    Question: Can BERT be rebuilt from scratch from its state dict alone?
    问题：只用 state dict 能从零重建 BERT 吗？
    中文：只拿到 state dict 的从零实现，复现了 transformers 的 logits、sequence_output 与 loss。
    原因：bertspec/proof/reference.py 以 strict=True 加载权重并写出每一步；在带 padding 与 [MASK] 的 batch 上端到端运行，
    与 transformers 处处一致（含 padding 位置）。eager 下实际逐位相同；sdpa 的融合内核舍入不同，整个模型按
    舍入误差界 bertspec.proof.tolerances.forward_tolerance 比较：L 层 ×（2 (sqrt(head_dim) u32 + 2u) × 最大分数
    + (2 sqrt(hidden) + sqrt(intermediate)) u32 + 3u）× max|输出|，随训练过的 checkpoint 的分数增长。
    """
    batch = masked_batch(mlm)
    labels = answer_labels(mlm, batch)
    with torch.no_grad():
        ours = reference_of(mlm)(**batch.as_kwargs(), labels=labels)
        theirs = mlm.model(**batch.as_kwargs(), labels=labels, output_hidden_states=True)
    pairs = [("logits", ours.logits, theirs.logits), ("sequence_output", ours.hidden_states, theirs.hidden_states[-1]),
             ("loss", ours.loss, theirs.loss)]
    peak = score_peak(mlm.model, batch)
    bounds = {name: forward_tolerance(b, mlm.config, peak) for name, _, b in pairs}
    evidence.table(f"reference vs transformers {transformers.__version__} ({mlm.attn_implementation})",
                   ["output", "shape", "max |diff|", "bit-equal", "bound (atol)"],
                   [(name, tuple(a.shape), max_diff(a, b), torch.equal(a, b), bounds[name]["atol"]) for name, a, b in pairs])
    for name, a, b in pairs:
        torch.testing.assert_close(a, b, **bounds[name], msg=lambda m, name=name: f"{name}: {m}")


def test_the_reference_predicts_the_same_token_as_transformers_at_every_mask(mlm, evidence):
    """At every [MASK] the reference's highest-scoring token is transformers' highest-scoring token.

    Close logits could still disagree on the argmax when two candidates are
    nearly tied; the evidence gives each position's margin between the best and
    the second-best score, which is many orders of magnitude above the
    reference's largest logit difference.

    Claim ID: P4.2b
    Question: Does the from-scratch reference predict the same tokens as transformers?
    问题：从零实现预测的 token 与 transformers 一样吗？
    中文：在每个 [MASK] 位置，参考实现得分最高的 token 与 transformers 的相同。
    原因：logits 接近时，若两个候选几乎并列，argmax 仍可能不同；证据给出每个位置第一与第二高分之差，
    它比参考实现与 transformers 的最大 logit 差大许多个数量级。
    """
    batch = masked_batch(mlm)
    masked = batch.input_ids == mlm.tokenizer.mask_token_id
    with torch.no_grad():
        ours = reference_of(mlm)(**batch.as_kwargs()).logits[masked]
        theirs = mlm.model(**batch.as_kwargs()).logits[masked]
    top2 = theirs.topk(2).values
    evidence.table("prediction at each [MASK]", ["[MASK] #", "transformers", "reference", "margin best - second", "max |diff| of logits"],
                   [(k, mlm.token(theirs[k].argmax()), mlm.token(ours[k].argmax()),
                     top2[k, 0] - top2[k, 1], max_diff(ours[k], theirs[k])) for k in range(len(theirs))])
    assert len(theirs) == 4
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


# ---- P3.2 the prediction head ----

@pytest.mark.counterfeits("head_without_transform")
def test_the_prediction_head_is_a_transform_dense_activation_layernorm_followed_by_the_decoder(mlm, evidence):
    """The MLM head is a transform (dense hidden→hidden, activation, LayerNorm) followed by the decoder (hidden→vocab).

    BertLMPredictionHead applies, at every position, transform = LayerNorm(act(
    dense(h))) and then decoder(x) = x Wᵀ + b. Recomputed by the reference from
    sequence_output, each stage equals the traced one, and the result equals
    the model's logits (TOL["reference_component"]).

    Claim ID: P3.2a
    Question: What is inside BERT's MLM prediction head?
    问题：BERT 的 MLM 预测头里有什么？
    中文：MLM 预测头由 transform（dense hidden→hidden、激活、LayerNorm）和随后的 decoder（hidden→vocab）组成。
    原因：BertLMPredictionHead 在每个位置先做 transform = LayerNorm(act(dense(h)))，再做 decoder(x) = xWᵀ + b。
    参考实现从 sequence_output 重算，每一阶段都与 trace 记录的一致，结果等于模型的 logits（TOL["reference_component"]）。
    """
    a = mlm.anatomy
    dense, norm, decoder = mlm.module(a.head_dense), mlm.module(a.head_norm), mlm.decoder
    activation = mlm.module(a.head_activation) if a.head_activation else F.gelu  # RoBERTa calls gelu as a function
    c, v = mlm.config.hidden_size, mlm.config.vocab_size
    width = getattr(mlm.config, "embedding_size", c)  # ALBERT's and ELECTRA's head maps back to the embedding width
    batch = masked_batch(mlm)
    trace, output = mlm.trace(batch)
    sequence_output = trace.tensor(sequence_output_step(mlm))
    with torch.no_grad():
        transformed = norm(activation(dense(sequence_output)))
        # The decoder by its weights, not by calling the module: what the model's head hands it is under test.
        logits = F.linear(transformed, decoder.weight, mlm.decoder_bias)
    evidence.table("the head's modules", ["role", "module", "type", "shape / setting"], [
        ("transform: dense", a.head_dense, type(dense).__name__, f"{dense.in_features} → {dense.out_features}"),
        ("transform: activation", a.head_activation or "(a function)", type(activation).__name__, ""),
        ("transform: LayerNorm", a.head_norm, type(norm).__name__, f"eps {norm.eps}"),
        ("decoder", a.decoder, type(decoder).__name__, f"{decoder.in_features} → {decoder.out_features}"),
    ])
    rows = [("transform output (modules, by hand)", max_diff(transformed, trace.tensor(a.head_norm))),
            ("logits (modules, by hand)", max_diff(logits, output.logits))]
    if a.family == "bert":
        reference_head = reference_of(mlm).cls.predictions
        with torch.no_grad():
            rows.append(("logits (from-scratch reference)", max_diff(reference_head(sequence_output), output.logits)))
            torch.testing.assert_close(reference_head(sequence_output), output.logits, **TOL["reference_component"])
    evidence.table("recomputed from sequence_output vs traced", ["stage", "max |diff|"], rows)
    assert (dense.in_features, dense.out_features) == (c, width)
    assert (decoder.in_features, decoder.out_features) == (width, v)
    assert isinstance(norm, nn.LayerNorm)
    torch.testing.assert_close(transformed, trace.tensor(a.head_norm), **TOL["reference_component"])
    torch.testing.assert_close(logits, output.logits, **TOL["reference_component"])


@pytest.mark.counterfeits("head_without_transform")
def test_removing_the_head_transform_changes_the_logits_and_the_predictions(mlm, evidence):
    """Without its transform the head scores the raw sequence_output, and the logits and predictions change.

    The decoder is the word-embedding matrix, so a logit is a dot product with
    a token's *input* embedding; the transform (dense, GELU, LayerNorm with its
    own weight and bias) moves each sequence_output vector into that space
    before the comparison. Skipping it (the head then sees sequence_output
    directly, the counterfeit in bertspec/proof/counterfeits.py) changes the logits
    by O(1) and the argmax at real positions. The evidence shows how far the
    transform turns each vector (cosine between its input and output).

    Claim ID: P3.2b
    Question: Why does the MLM head need a transform before the decoder?
    问题：MLM 预测头为什么要在 decoder 之前做 transform？
    中文：去掉 transform 后，预测头直接对 sequence_output 打分，logits 与预测都会改变。
    原因：decoder 就是词嵌入矩阵，logit 是与 token 输入嵌入的点积；transform（dense、GELU、带自身 weight 和 bias
    的 LayerNorm）先把每个 sequence_output 向量变换到这个空间再比较。跳过它（预测头直接看到 sequence_output，
    即 bertspec/proof/counterfeits.py 中的伪造模型）会使 logits 改变 O(1) 量级，真实位置的 argmax 也会改变。
    证据给出 transform 把每个向量转动了多少（输入与输出的余弦）。
    """
    reason = counterfeits.why_not("head_without_transform", mlm)
    if reason:
        scope.not_applicable(mlm, reason)
    batch = masked_batch(mlm)
    real = real_tokens(batch)
    trace, output = mlm.trace(batch)
    with torch.no_grad(), counterfeits.head_without_transform(mlm):
        bare = mlm.model(**batch.as_kwargs()).logits
    with_transform, without = output.logits.argmax(-1), bare.argmax(-1)
    cosine = F.cosine_similarity(trace.tensor(sequence_output_step(mlm)), trace.tensor(mlm.anatomy.head_norm), dim=-1)
    evidence.table("row 0: predictions with and without the transform", ["position", "input", "with", "without", "cos(h, transform(h))"],
                   [(j, tok, mlm.token(with_transform[0, j]), mlm.token(without[0, j]), cosine[0, j])
                    for j, tok in enumerate(mlm.tokens(batch, 0))])
    changed = (with_transform != without)[real]
    evidence.table("effect", ["real positions", "predictions changed", "max |Δ logits|"],
                   [(int(real.sum()), int(changed.sum()), max_diff(bare, output.logits))])
    assert max_diff(bare, output.logits) > 0.1
    assert bool(changed.any())


def test_the_decoder_maps_batch_seq_hidden_to_batch_seq_vocab_one_score_per_vocabulary_entry(mlm, evidence):
    """The decoder maps [batch, seq, hidden] to [batch, seq, vocab]: at each position, one score per vocabulary entry.

    Its weight is [vocab, hidden]: row v is token v's vector, so logit v at a
    position is that row's dot product with the transformed hidden state, plus
    bias v. Checked by hand at one [MASK] position (a matrix-vector product;
    TOL["reference_component"]).

    Claim ID: P3.2c
    Question: How does the decoder turn a hidden state into one score per vocabulary token?
    问题：decoder 怎样把隐藏状态变成词表中每个 token 的分数？
    中文：decoder 把 [batch, seq, hidden] 映射为 [batch, seq, vocab]：每个位置对词表中每个 token 给出一个分数。
    原因：其权重为 [vocab, hidden]，第 v 行是 token v 的向量，所以某位置的第 v 个 logit 是该行与变换后隐藏状态的点积
    加上 bias v。在一个 [MASK] 位置用矩阵-向量乘法手工验证（TOL["reference_component"]）。
    """
    batch = masked_batch(mlm)
    trace, output = mlm.trace(batch)
    decoder = mlm.decoder
    h = trace.tensor(mlm.anatomy.head_norm)
    b, t = batch.input_ids.shape
    c, v = getattr(mlm.config, "embedding_size", mlm.config.hidden_size), mlm.config.vocab_size
    j = batch.positions(mlm.tokenizer.mask_token_id)[0]
    with torch.no_grad():
        by_hand = decoder.weight @ h[0, j] + mlm.decoder_bias
    evidence.table("decoder", ["input", "weight", "bias", "output", "max |by hand - logits| at [MASK]"],
                   [(tuple(h.shape), tuple(decoder.weight.shape), tuple(decoder.bias.shape), tuple(output.logits.shape),
                     max_diff(by_hand, output.logits[0, j]))])
    assert h.shape == (b, t, c) and output.logits.shape == (b, t, v)
    assert decoder.weight.shape == (v, c)
    torch.testing.assert_close(by_hand, output.logits[0, j], **TOL["reference_component"])


def storage_span(t: torch.Tensor) -> range:
    start = t.untyped_storage().data_ptr()
    return range(start, start + t.untyped_storage().nbytes())


@pytest.mark.counterfeits("untied_decoder", "untied_decoder_perturbed")
def test_the_decoder_weight_is_the_word_embedding_matrix_itself_and_its_bias_is_its_own(mlm, evidence):
    """The decoder's weight is the word-embedding matrix itself (same storage, not a copy); its bias is a separate vector.

    Weight tying: the input lookup and the output scoring share one [vocab,
    hidden] parameter, so an update through either use moves both. Equal
    values would not prove it (a copy made at load time is equal until the
    first training step): the two are the same Parameter object at the same
    address. The bias has no counterpart in the embeddings: cls.predictions.bias,
    [vocab], which the decoder uses as its bias, stored outside the matrix.

    Claim ID: P3.2c
    Question: Is the decoder weight a copy of the word embeddings?
    问题：decoder 的权重是词嵌入矩阵的拷贝吗？
    中文：decoder 的权重就是词嵌入矩阵本身（同一存储，不是拷贝）；它的 bias 是一个独立的向量。
    原因：权重共享：输入查表与输出打分共用一个 [vocab, hidden] 参数，经任一用途的更新都会同时改变两者。数值相等不能证明这一点
    （加载时做的拷贝在第一次训练更新前也相等）：两者是同一个 Parameter 对象、同一个地址。bias 在嵌入层中没有对应物：
    它是 cls.predictions.bias（[vocab]），decoder 以它为 bias，存放在矩阵之外。
    """
    a = mlm.anatomy
    W, decoder, bias = mlm.word_embeddings.weight, mlm.decoder, mlm.decoder_bias
    held = {f"{a.word_embeddings}.weight": W, f"{a.decoder}.weight": decoder.weight, f"{a.decoder}.bias": decoder.bias,
            a.decoder_bias: bias}
    evidence.table("who holds what", ["tensor", "shape", "is the embedding matrix", "at the embedding matrix's address",
                                      f"at {a.decoder_bias}'s address"],
                   [(name, tuple(t.shape), t is W, t.data_ptr() == W.data_ptr(), t.data_ptr() == bias.data_ptr()) for name, t in held.items()])
    evidence.text("config", f"tie_word_embeddings = {getattr(mlm.config, 'tie_word_embeddings', None)}")
    assert decoder.weight is W
    assert decoder.weight.data_ptr() == W.data_ptr()
    assert decoder.bias.data_ptr() == bias.data_ptr() and bias.shape == (mlm.config.vocab_size,)
    assert bias.data_ptr() not in storage_span(W)


@pytest.mark.counterfeits("logits_softmaxed")
def test_prediction_scores_are_unnormalised_logits_that_softmax_turns_into_a_distribution(mlm, evidence):
    """The prediction scores are unnormalised logits: softmax turns each position's into a distribution, and its argmax is the prediction.

    A logit is a dot product plus a bias: any real number, not a probability.
    softmax(z)_v = exp(z_v) / Σ exp(z) maps a position's scores to values in
    (0, 1) that sum to 1; it is monotone, so the most probable token is the
    highest-scoring one, and argmax of the logits is the prediction without a
    softmax at all.

    Claim ID: P3.2d
    Question: Are prediction_scores probabilities?
    问题：prediction_scores 是概率吗？
    中文：prediction_scores 是未归一化的 logits：softmax 把每个位置的分数变成概率分布，其 argmax 就是预测。
    原因：logit 是点积加偏置，可以是任意实数，不是概率。softmax(z)_v = exp(z_v)/Σexp(z) 把一个位置的分数映射到 (0,1)
    且和为 1；它是单调的，所以概率最大的 token 就是分数最高的 token，不做 softmax 直接取 logits 的 argmax 即是预测。
    """
    batch = masked_batch(mlm)
    masked = batch.input_ids == mlm.tokenizer.mask_token_id
    with torch.no_grad():
        logits = mlm.model(**batch.as_kwargs()).logits[masked]  # (n_masks, V)
    probs = logits.softmax(-1)
    top = logits[0].topk(5)
    evidence.table("first [MASK]: top 5", ["token", "logit", "probability"],
                   [(mlm.token(i), z, probs[0, i]) for z, i in zip(top.values, top.indices)])
    evidence.table("every [MASK]", ["logits min", "logits max", "logits sum", "probabilities sum"],
                   [(z.min(), z.max(), z.sum(), p.sum()) for z, p in zip(logits, probs)])
    assert bool((logits < 0).any(dim=-1).all()), "a probability cannot be negative: these are not probabilities"
    assert bool((probs > 0).all()) and bool((probs < 1).all())
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs[:, 0]), **TOL["prob_sum"])
    assert torch.equal(probs.argmax(-1), logits.argmax(-1))


def test_the_bundled_model_completes_beijing_is_chinas_capital_with_du(mlm, evidence):
    """On the bundled model, 北京是中国的首[MASK]。 is completed with 都 ("capital"), the plan's example.

    The argmax of the logits at the [MASK] position is the prediction; the
    bundled model was trained on fixtures/corpus.zh.txt, where 首都 is common.
    Another checkpoint predicts what it learned, so this claim runs on the
    bundled model only.

    Claim ID: P3.2d
    Question: What does the bundled model predict for 北京是中国的首[MASK]?
    问题：自带模型把"北京是中国的首[MASK]"补全成什么？
    中文：在自带模型上，北京是中国的首[MASK]。被补全为"都"，即计划中的例子。
    原因：[MASK] 位置 logits 的 argmax 就是预测；自带模型在 fixtures/corpus.zh.txt 上训练，其中"首都"很常见。
    其他 checkpoint 预测的是它们各自学到的内容，因此本断言只在自带模型上运行。
    """
    if not mlm.is_default:
        pytest.skip("what a checkpoint predicts depends on its training; this is the bundled model's")
    batch = mlm.example(padded=False)
    (j,) = batch.positions(mlm.tokenizer.mask_token_id)
    with torch.no_grad():
        probs = mlm.model(**batch.as_kwargs()).logits[0, j].softmax(-1)
    top = probs.topk(3)
    evidence.table(f"{mlm.texts.sentence} at position {j}", ["token", "probability"],
                   [(mlm.token(i), p) for p, i in zip(top.values, top.indices)])
    assert mlm.token(probs.argmax()) == "都"


# ---- P3.3 the loss ----

@pytest.mark.counterfeits("loss_counting_ignored_positions")
def test_the_model_loss_is_cross_entropy_with_ignore_index_minus_100(mlm, evidence):
    """BertForMaskedLM's loss is CrossEntropyLoss over the flattened logits with ignore_index=-100: only labelled positions count.

    CrossEntropyLoss's default ignore_index is -100, which is why "-100" means
    "no label". The model's loss equals that loss on [B·T, V] logits bit for
    bit, and equals the cross entropy of the labelled positions alone (up to
    float32 summation order, TOL["loss_reduction"]): the ignored positions
    contribute nothing, not even to the count.

    Claim ID: P3.3a
    Question: What loss does BertForMaskedLM compute, and why are -100 labels ignored?
    问题：BertForMaskedLM 算的是什么 loss？为什么标签 -100 会被忽略？
    中文：BertForMaskedLM 的 loss 就是在展平的 logits 上、ignore_index=-100 的 CrossEntropyLoss：只有带标签的位置计入。
    原因：CrossEntropyLoss 的默认 ignore_index 是 -100，这就是"-100 表示没有标签"的由来。模型的 loss 与在 [B·T, V]
    logits 上算出的该损失逐位相同，也等于只对带标签位置计算的交叉熵（差别仅在 float32 求和顺序，TOL["loss_reduction"]）：
    被忽略的位置毫无贡献，连计数都不算。
    """
    batch = masked_batch(mlm)
    labels = answer_labels(mlm, batch)
    labelled = labels != IGNORE_INDEX
    loss_fct = nn.CrossEntropyLoss()
    with torch.no_grad():
        output = mlm.model(**batch.as_kwargs(), labels=labels)
    flattened = loss_fct(output.logits.view(-1, mlm.config.vocab_size), labels.view(-1))
    only_labelled = F.cross_entropy(output.logits[labelled], labels[labelled])
    evidence.table("the loss three ways",
                   ["model loss", "CrossEntropyLoss() on [B*T, V]", "cross entropy of labelled positions only", "ignore_index", "labelled / all"],
                   [(output.loss, flattened, only_labelled, loss_fct.ignore_index, f"{int(labelled.sum())} / {labels.numel()}")])
    assert loss_fct.ignore_index == IGNORE_INDEX == -100
    torch.testing.assert_close(output.loss, flattened, **TOL["exact"])
    torch.testing.assert_close(output.loss, only_labelled, **TOL["loss_reduction"])


@pytest.mark.counterfeits("loss_counting_ignored_positions")
def test_a_hand_written_log_softmax_gather_mean_loss_equals_the_models_loss(mlm, evidence):
    """A loss written by hand — log-softmax, gather the label's entry, mean over labelled positions — equals the model's.

    Cross entropy at one position is −log softmax(z)[label] = logsumexp(z) −
    z[label]; the loss is its mean over the positions whose label is not -100
    (bertspec.proof.reference.mlm_loss). The evidence lists each labelled position's
    term.

    Claim ID: P3.3b
    Question: How do I compute the MLM loss by hand?
    问题：怎样手工计算 MLM 的 loss？
    中文：手写的损失——log-softmax、取出标签对应项、对带标签位置求平均——等于模型的 loss。
    原因：一个位置的交叉熵是 −log softmax(z)[label] = logsumexp(z) − z[label]；loss 是它在标签不为 -100 的位置上的平均
    （bertspec.proof.reference.mlm_loss）。证据列出每个带标签位置的项。
    """
    batch = masked_batch(mlm)
    labels = answer_labels(mlm, batch)
    with torch.no_grad():
        output = mlm.model(**batch.as_kwargs(), labels=labels)
    nll = token_nll(output.logits, labels)
    by_hand = mlm_loss(output.logits, labels)
    evidence.table("per labelled position", ["row", "position", "label", "-log p(label)"],
                   [(b, t, mlm.token(labels[b, t]), nll[b, t]) for b, t in (labels != IGNORE_INDEX).nonzero().tolist()])
    evidence.table("loss", ["by hand", "model", "|diff|"], [(by_hand, output.loss, (by_hand - output.loss).abs())])
    torch.testing.assert_close(by_hand, output.loss, **TOL["loss_reduction"])


@pytest.mark.counterfeits("loss_counting_ignored_positions")
def test_only_labelled_positions_receive_gradient_on_the_logits(mlm, evidence):
    """d loss / d logits is exactly zero at every position labelled -100, and (softmax − one_hot(label)) / n at the n labelled ones.

    The loss reads the logits only at labelled positions, so nothing flows back
    to the others' logits: their gradient is 0.0, not small. At a labelled
    position the gradient of the mean cross entropy is (p − y) / n: every
    vocabulary entry is pushed down by its probability, the label pulled up.
    This is "only [MASK] positions take part in the update" — for the logits.

    Claim ID: P3.3c
    Question: Which positions receive gradient on the logits?
    问题：logits 上哪些位置会收到梯度？
    中文：在标签为 -100 的每个位置，d loss / d logits 严格为 0；在 n 个带标签位置上为 (softmax − one_hot(label)) / n。
    原因：loss 只读取带标签位置的 logits，其他位置的 logits 不会收到任何梯度：是 0.0，不是很小。带标签位置上平均交叉熵的梯度是
    (p − y)/n：每个词表项按其概率被压低，标签项被抬高。这就是"只有 [MASK] 位置参与梯度更新"——就 logits 而言。
    """
    batch = masked_batch(mlm)
    labels = answer_labels(mlm, batch)
    labelled = labels != IGNORE_INDEX
    grads = backward(mlm, batch, labels)
    n = int(labelled.sum())
    expected = (grads.logits.softmax(-1) - F.one_hot(labels.clamp(min=0), mlm.config.vocab_size)) / n
    norms = grads.logits_grad.norm(dim=-1)
    evidence.matrix("|d loss / d logits| per position", norms, [f"row {b}" for b in range(norms.shape[0])], range(norms.shape[1]))
    assert torch.equal(grads.logits_grad[~labelled], torch.zeros_like(grads.logits_grad[~labelled]))
    assert bool((norms[labelled] > 0).all())
    torch.testing.assert_close(grads.logits_grad[labelled], expected[labelled], **TOL["softmax_gradient"])


@pytest.mark.counterfeits("loss_counting_ignored_positions", "gradient_only_at_labels")
def test_every_real_token_of_a_labelled_sequence_receives_gradient_on_its_input_embedding(mlm, evidence):
    """Yet every real token of a labelled sequence gets gradient on its input embedding, unlabelled ones included; [PAD] gets exactly none.

    People confuse this with the previous claim. The logit at a [MASK] depends,
    through attention in every layer, on every token the [MASK] can see, so the
    gradient reaches all their input embeddings (and the weights). [PAD]
    positions are hidden keys (probability exactly 0) and carry no label, so
    their gradient is exactly 0.0. The figure shows both quantities per
    position.

    Claim ID: P3.3c
    Question: Do unmasked tokens get any gradient in MLM training?
    问题：MLM 训练中没有被遮盖的 token 会收到梯度吗？
    中文：然而，带标签序列中每个真实 token 的输入嵌入都会收到梯度（包括没有标签的 token）；[PAD] 严格收不到。
    原因：这一点常与上一条混淆。[MASK] 处的 logit 通过每一层的 attention 依赖于它能看到的所有 token，所以梯度会到达它们
    全部的输入嵌入（以及权重）。[PAD] 位置是被屏蔽的 key（概率严格为 0），又没有标签，因此梯度严格为 0.0。图中按位置展示两者。
    """
    batch = masked_batch(mlm)
    labels = answer_labels(mlm, batch)
    labelled, real = labels != IGNORE_INDEX, real_tokens(batch)
    grads = backward(mlm, batch, labels)
    logits_norm, embedding_norm = grads.logits_grad.norm(dim=-1), grads.embedding_grad.norm(dim=-1)
    evidence.figure("which positions carry loss and which receive gradient",
                    loss_and_gradient_figure(labelled, real, logits_norm, embedding_norm,
                                             [mlm.tokens(batch, r) for r in range(len(real))],
                                             f"{mlm.attn_implementation}: stars = labelled positions, grey = [PAD]"))
    evidence.matrix("|d loss / d input embedding| per position", embedding_norm, [f"row {b}" for b in range(len(real))], range(real.shape[1]))
    assert bool(labelled.any(dim=1).all()), "every row carries a label"
    assert bool((embedding_norm[real] > 0).all())
    assert torch.equal(grads.embedding_grad[~real], torch.zeros_like(grads.embedding_grad[~real]))
    assert bool((logits_norm[real & ~labelled] == 0).all()), "the contrast: no gradient on these positions' logits"


@pytest.mark.counterfeits("untied_decoder", "untied_decoder_perturbed")
def test_the_tied_matrix_receives_gradient_from_both_the_embedding_lookup_and_the_decoder(mlm, evidence):
    """The tied word-embedding matrix's gradient is the sum of its two uses: the input lookup's rows and the decoder's every row.

    As decoder weight, row v gets Σ over positions of d loss/d logit_v · h:
    every row, since softmax gives every token some probability. As input
    table, row v gets the gradient of every input embedding that looked it up
    (the [PAD] row excepted: padding_idx). autograd adds the two; the test
    computes each with the same products autograd uses, and their sum equals
    the matrix's gradient bit for bit. A decoder holding a copy would get the
    first part and leave the embedding matrix with only the second.

    Claim ID: P3.3c
    Question: Where does the tied word-embedding matrix get its gradient from?
    问题：共享的词嵌入矩阵的梯度从哪里来？
    中文：共享的词嵌入矩阵的梯度是两种用途之和：输入查表对应的行，加上 decoder 对所有行的贡献。
    原因：作为 decoder 权重，第 v 行得到各位置 d loss/d logit_v · h 之和：每一行都有，因为 softmax 给每个 token 一些概率。
    作为输入表，第 v 行得到所有查到它的输入嵌入的梯度（[PAD] 行除外：padding_idx）。autograd 把两者相加；测试用与 autograd
    相同的乘积分别计算，二者之和与矩阵的梯度逐位相同。如果 decoder 持有的是拷贝，它会拿走第一部分，嵌入矩阵只剩第二部分。
    """
    batch = masked_batch(mlm)
    labels = answer_labels(mlm, batch)
    grads = backward(mlm, batch, labels)
    ids = batch.input_ids.flatten()
    as_decoder = grads.logits_grad.flatten(0, 1).T @ grads.decoder_input.flatten(0, 1)  # (V, C)
    as_lookup = torch.zeros_like(as_decoder).index_add_(0, ids, grads.embedding_grad.flatten(0, 1))
    pad_id = mlm.word_embeddings.padding_idx
    if pad_id is not None:
        as_lookup[pad_id] = 0.0
    looked_up = torch.zeros(len(as_decoder), dtype=torch.bool, device=ids.device).index_fill_(0, ids, True)
    shown = [int(ids[1]), mlm.tokenizer.mask_token_id, int((~looked_up).nonzero()[-1])]
    evidence.table("rows of the gradient (norms)", ["row", "token", "in the input", "from the decoder", "from the lookup", "total"],
                   [(v, mlm.token(v), bool(looked_up[v]), as_decoder[v].norm(), as_lookup[v].norm(), grads.word_embeddings_grad[v].norm()) for v in shown])
    assert bool((as_decoder.norm(dim=-1) > 0).all()), "the decoder use reaches every row"
    assert bool((as_lookup[~looked_up] == 0).all()) and bool((as_lookup[ids[ids != pad_id]].norm(dim=-1) > 0).all())
    assert torch.equal(grads.word_embeddings_grad, as_decoder + as_lookup)


@pytest.mark.counterfeits("decoder_bias_untied")
def test_a_labelled_batch_sends_gradient_to_every_parameter_on_the_mlm_path_and_none_to_rows_it_never_used(mlm, evidence):
    """A labelled batch gives every parameter on the MLM path a gradient — embeddings, every layer, the head's transform, the decoder matrix and its own bias — and none to table rows it never used.

    Training is the point of the loss, so each parameter's gradient is checked
    where it should and should not be. Through the [MASK] logits and attention,
    every weight and bias of every layer and of the head's transform gets a
    non-zero gradient; the decoder's bias, cls.predictions.bias, gets exactly
    d loss / d logits summed over positions; the word-embedding matrix gets
    gradient in every row (the decoder scores every token). Rows of a table the
    batch never looked up get exactly none: positions at or beyond the batch's
    length T, token types it does not use. A decoder whose bias were a copy of
    cls.predictions.bias (the counterfeit decoder_bias_untied) would leave the
    real one untrained.

    Claim ID: P3.3c
    Question: Which parameters does a labelled batch actually train?
    问题：一个带标签的 batch 实际训练了哪些参数？
    中文：带标签的 batch 让 MLM 路径上的每个参数都得到梯度——嵌入层、每一层、预测头的 transform、decoder 矩阵及其自己的 bias——而 batch 从未查到的表行得不到梯度。
    原因：训练是 loss 的目的，所以逐个参数检查梯度该有与不该有的地方。通过 [MASK] 处的 logits 与 attention，每一层和预测头 transform 的
    每个权重与偏置都得到非零梯度；decoder 的 bias（cls.predictions.bias）恰好得到 d loss / d logits 在各位置上的和；词嵌入矩阵的每一行
    都有梯度（decoder 给每个 token 打分）。batch 从未查到的表行严格没有梯度：位置 ≥ batch 长度 T 的行、未使用的 token type。
    如果 decoder 的 bias 是 cls.predictions.bias 的拷贝（反例 decoder_bias_untied），真正的 bias 就得不到训练。
    """
    batch = masked_batch(mlm)
    labels = answer_labels(mlm, batch)
    model = mlm.model
    params = dict(model.named_parameters())
    loss = model(**batch.as_kwargs(), labels=labels).loss
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)))
    a = mlm.anatomy
    rows_unused = {}
    if a.position_embeddings:
        positions = a.default_position_ids(batch.input_ids, mlm.word_embeddings.padding_idx).expand_as(batch.input_ids)
        used = positions[batch.attention_mask.bool()].unique().cpu()  # RoBERTa's padding row gets none either
        rows_unused[f"{a.position_embeddings}.weight"] = ~torch.isin(torch.arange(mlm.config.max_position_embeddings), used)
    if a.token_type_embeddings:
        used_types = batch.token_type_ids.unique().cpu()
        rows_unused[f"{a.token_type_embeddings}.weight"] = ~torch.isin(torch.arange(mlm.config.type_vocab_size), used_types)
    logits_grad = backward(mlm, batch, labels).logits_grad
    evidence.table("gradient per parameter", ["parameter", "shape", "|grad|", "rows with none"],
                   [(name, tuple(p.shape), 0.0 if grads[name] is None else grads[name].norm(),
                     int(rows_unused[name].sum()) if name in rows_unused else "") for name, p in params.items()])
    for name, grad in grads.items():
        assert grad is not None and grad.norm() > 0, f"{name} receives no gradient"
        if name in rows_unused:
            unused = rows_unused[name].to(grad.device)
            assert torch.equal(grad[unused], torch.zeros_like(grad[unused])), f"{name}: an unused row has gradient"
            assert bool((grad[~unused].norm(dim=-1) > 0).all()), f"{name}: a used row has none"
    assert bool((grads[f"{a.word_embeddings}.weight"].norm(dim=-1) > 0).all())
    torch.testing.assert_close(grads[a.decoder_bias], logits_grad.sum((0, 1)), **TOL["loss_reduction"])


def test_one_gradient_step_on_a_labelled_batch_lowers_its_loss(mlm, evidence):
    """One step of gradient descent on a labelled batch lowers that batch's loss, by about what the gradient predicts.

    The gradient is the direction of steepest increase, so a small step
    against it lowers the loss by about lr · |g|² (first order). On a deep
    copy of the model under test (the shared model is not trained), in eval
    mode so dropout does not interfere, one SGD step with lr = s / |g| —
    every parameter together moves by s — must lower the loss; the evidence
    compares the decrease with the first-order prediction s · |g|. s starts at
    0.01 and shrinks tenfold (to 1e-4 at most) while the loss rises: "small"
    is relative to the curvature, and a checkpoint with trained-size weights
    (scores of tens, saturated softmax rows) curves faster than the bundled one.

    Claim ID: P3.3c
    Question: Does one training step on a batch actually lower its loss?
    问题：在一个 batch 上做一步训练，它的 loss 真的会下降吗？
    中文：在带标签的 batch 上做一步梯度下降，这个 batch 的 loss 会下降，降幅与梯度的预测相当。
    原因：梯度是增长最快的方向，逆着它走一小步，loss 约下降 lr · |g|²（一阶近似）。在被测模型的深拷贝上（共享模型不被训练），
    推理模式下（dropout 不干扰），用 lr = s / |g| 的 SGD 走一步——所有参数合起来移动 s——loss 必须下降；证据把降幅与一阶预测
    s · |g| 比较。s 从 0.01 起，loss 上升时缩小十倍（最小 1e-4）：“小”是相对曲率而言，权重达训练规模的 checkpoint 曲率更大。
    """
    import copy

    batch = masked_batch(mlm)
    labels = answer_labels(mlm, batch)
    model = copy.deepcopy(mlm.model)
    params = [p for p in model.parameters() if p.requires_grad]
    before = model(**batch.as_kwargs(), labels=labels).loss
    grads = torch.autograd.grad(before, params)
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
    start = [p.detach().clone() for p in params]
    rows = []
    for step in (1e-2, 1e-3, 1e-4):
        with torch.no_grad():
            for p, p0, g in zip(params, start, grads):
                p.copy_(p0 - step / norm * g)
            after = model(**batch.as_kwargs(), labels=labels).loss
        rows.append((step, before, after, before - after, step * norm))
        if after < before:
            break
    evidence.table("one SGD step, parameters moved by s in total", ["s", "loss before", "loss after", "decrease",
                                                                     "first-order prediction s·|g|"], rows)
    assert after < before


LABEL_SETTINGS = ("every_real_position", "one_position", "several_positions", "special_tokens_too")


def labels_for(setting: str, bert, batch) -> torch.Tensor:
    """(B, T) labels: the original characters at the chosen positions, -100 elsewhere."""
    masked = answer_labels(bert, batch)
    if setting == "every_real_position":
        return torch.where(real_tokens(batch), bert.encode(list(bert.texts.filled)).input_ids, IGNORE_INDEX)
    if setting == "one_position":
        first = (masked != IGNORE_INDEX).nonzero()[0]
        one = torch.full_like(masked, IGNORE_INDEX)
        one[first[0], first[1]] = masked[first[0], first[1]]
        return one
    if setting == "several_positions":
        return masked
    special = torch.isin(batch.input_ids, torch.tensor(bert.tokenizer.all_special_ids, device=batch.input_ids.device))
    special &= batch.input_ids != bert.tokenizer.mask_token_id
    return torch.where(special, batch.input_ids, masked)  # [CLS], [SEP] and [PAD] labelled as themselves


@pytest.mark.counterfeits("loss_counting_ignored_positions", setting="several_positions")
@pytest.mark.parametrize("setting", LABEL_SETTINGS)
def test_the_loss_is_the_mean_not_the_sum_of_the_per_position_losses_over_exactly_the_labelled_positions(mlm, setting, evidence):
    """Whatever is labelled — every position, one, several, or [CLS]/[SEP]/[PAD] too — the loss is the mean of their per-position losses.

    The reduction is a mean over the labelled positions (sum / count), not a
    sum, so the loss does not grow with the number of [MASK]s; with one label
    it is that position's loss. The loss knows nothing of special tokens: a
    label on [CLS], [SEP] or even [PAD] is counted like any other (the model
    does compute logits at [PAD] positions) — which is why the collator never
    labels them.

    Claim ID: P3.3d
    Question: Is the MLM loss a sum or a mean over the labelled positions?
    问题：MLM 的 loss 是对带标签位置求和还是求平均？
    中文：无论标注的是全部位置、一个、多个，还是连 [CLS]/[SEP]/[PAD] 也标注，loss 都是这些位置损失的平均值而非总和。
    原因：归约方式是在带标签位置上求平均（和/个数），而不是求和，所以 loss 不随 [MASK] 数量增长；只有一个标签时就是该位置的损失。
    loss 不认识特殊 token：[CLS]、[SEP] 甚至 [PAD] 上的标签与其他标签一样被计入（模型确实在 [PAD] 位置计算 logits）——
    这正是数据整理器从不标注它们的原因。
    """
    batch = masked_batch(mlm)
    labels = labels_for(setting, mlm, batch)
    labelled = labels != IGNORE_INDEX
    with torch.no_grad():
        output = mlm.model(**batch.as_kwargs(), labels=labels)
    nll = token_nll(output.logits, labels)[labelled]
    tokens = [mlm.token(i) for i in labels[labelled]]
    evidence.table(f"labels: {setting}", ["labelled positions", "labels", "mean of per-position losses", "sum", "model loss"],
                   [(len(nll), " ".join(tokens), nll.mean(), nll.sum(), output.loss)])
    expected_count = {"every_real_position": int(real_tokens(batch).sum()), "one_position": 1, "several_positions": 4}
    assert len(nll) == expected_count.get(setting, len(nll))
    torch.testing.assert_close(output.loss, nll.mean(), **TOL["loss_reduction"])
    if len(nll) > 1:
        assert abs(output.loss.item() - nll.sum().item()) > 0.1 * nll.sum().item(), "a sum would grow with the count"
    if setting == "special_tokens_too":
        tok = mlm.tokenizer
        assert {tok.cls_token, tok.sep_token, tok.pad_token} <= set(tokens)


def guarded_mlm_loss(logits, labels):
    """The mean loss over labelled positions, 0.0 (with zero gradient) when there is none."""
    labelled = labels != IGNORE_INDEX
    return token_nll(logits, labels).sum() / labelled.sum().clamp(min=1)


@pytest.mark.counterfeits("loss_counting_ignored_positions")
def test_with_no_labelled_position_the_loss_is_nan_and_a_guarded_mean_gives_zero(mlm, evidence):
    """With every label -100 the loss is NaN (0 / 0); a mean whose count is clamped to at least 1 gives 0.0.

    The mean over labelled positions divides a sum over nothing (0.0) by a
    count of nothing (0). Observed here: the gradient that reaches the logits
    is still all zeros — the NaN does no harm through backward, but it poisons
    every value computed from the loss (running averages, sums over
    micro-batches, NaN checks that skip steps). A batch without a [MASK] is
    easy to produce with short sequences and 15% masking; clamping the count,
    sum / max(count, 1), returns 0.0 with the same zero gradient.

    Claim ID: P3.3d
    Question: Why is the loss NaN when a batch has no [MASK]?
    问题：batch 中没有 [MASK] 时 loss 为什么是 NaN？
    中文：所有标签都是 -100 时 loss 为 NaN（0/0）；把计数下限设为 1 的平均给出 0.0。
    原因：对带标签位置的平均，是用"空集上的和"（0.0）除以"空集的个数"（0）。这里观察到：到达 logits 的梯度仍全为 0——
    NaN 在反向传播中无害，但会污染由 loss 计算的一切数值（滑动平均、多个 micro-batch 的求和、跳过步骤的 NaN 检查）。
    短序列加 15% 的遮盖很容易产生没有 [MASK] 的 batch；把计数截断为 sum / max(count, 1) 会返回 0.0，梯度同样为 0。
    """
    batch = masked_batch(mlm)
    labels = torch.full_like(batch.input_ids, IGNORE_INDEX)
    grads = backward(mlm, batch, labels)
    logits = grads.logits.requires_grad_()
    guarded = guarded_mlm_loss(logits, labels)
    (guarded_grad,) = torch.autograd.grad(guarded, logits)
    evidence.table("no labelled position", ["loss", "labelled count", "d loss / d logits", "guarded loss", "d guarded / d logits"],
                   [(grads.loss, 0, f"max |·| {grads.logits_grad.abs().max().item():.3g}, NaN: {bool(grads.logits_grad.isnan().any())}",
                     guarded, f"max |·| {guarded_grad.abs().max().item():.3g}")])
    assert torch.isnan(grads.loss)
    assert torch.equal(grads.logits_grad, torch.zeros_like(grads.logits_grad))
    assert guarded.item() == 0.0 and torch.equal(guarded_grad, torch.zeros_like(guarded_grad))


# ---- masking for training: DataCollatorForLanguageModeling ----

REPEATS = 8  # the corpus (204 lines, ~1750 ordinary characters) 8 times: ~14000 positions, ~2100 selected
COLLATOR_SEED = 1234


@dataclass
class Collated:
    original: torch.Tensor  # (N, T) the ids before masking, right-padded
    inputs: torch.Tensor  # (N, T) what the model is fed
    labels: torch.Tensor  # (N, T)
    special: torch.Tensor  # (N, T) [CLS], [SEP], [PAD] (any special id)


def collate(tokenizer, examples, seed) -> Collated:
    collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
    batch = collator([list(e) for e in examples])
    original = nn.utils.rnn.pad_sequence([torch.tensor(e) for e in examples], batch_first=True, padding_value=tokenizer.pad_token_id)
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    return Collated(original, batch["input_ids"], batch["labels"], special)


def corpus_examples(tokenizer, repeats=REPEATS) -> list[list[int]]:
    """The corpus of the example texts (fixtures/corpus.zh.txt or .en.txt, or lines spelled with the vocabulary's own
    tokens), tokenized, ``repeats`` times."""
    return tokenizer(texts_for(tokenizer).corpus())["input_ids"] * repeats


def test_the_collator_selects_about_15_percent_of_ordinary_tokens_labels_only_those_and_never_a_special_token(tokenizer, evidence):
    """DataCollatorForLanguageModeling selects ~15% of ordinary tokens, labels exactly those with their original id, and never selects [CLS], [SEP] or [PAD].

    Each non-special position is selected independently with probability
    mlm_probability = 0.15. Fed token ids alone, as here, the collator builds
    the special-tokens mask itself from every special id of the tokenizer, so
    [CLS], [SEP], [PAD], and also [UNK] and a typed [MASK], have probability 0;
    a mask the tokenizer supplies marks fewer (the next claim). Selected
    positions are labelled with the original id, every other position -100,
    and unselected inputs are left as they were. Over ~14,000 positions of the
    corpus in the vocabulary's language (fixtures/corpus.zh.txt, or .en.txt, or
    lines spelled with a domain vocabulary's own tokens), with a fixed seed,
    the fraction stays within 5 binomial standard deviations of 0.15.

    Claim ID: P3.3c
    Question: Which tokens does DataCollatorForLanguageModeling pick for masking?
    问题：DataCollatorForLanguageModeling 会挑哪些 token 来遮盖？
    中文：DataCollatorForLanguageModeling 选中约 15% 的普通 token，只为它们打上原始 id 作为标签，从不选中 [CLS]、[SEP]、[PAD]。
    原因：每个非特殊位置以 mlm_probability=0.15 的概率独立被选中。像这里这样只给 token id 时，数据整理器用分词器的全部特殊 id
    自己构造特殊 token mask，所以 [CLS]、[SEP]、[PAD]，还有 [UNK] 与文本中的 [MASK]，被选中的概率都为 0；由分词器提供的 mask
    标记得更少（见下一条断言）。被选中的位置以原始 id 为标签，其余位置为 -100，未被选中的输入保持不变。在与词表同语言的语料
    （fixtures/corpus.zh.txt 或 .en.txt，或用领域词表自身 token 拼成的行）约 14000 个位置上（固定种子），比例落在 0.15 的 5 个二项标准差之内。
    """
    c = collate(tokenizer, corpus_examples(tokenizer), COLLATOR_SEED)
    selected = c.labels != IGNORE_INDEX
    ordinary = ~c.special
    fraction, half_width = within_binomial_bound(int(selected[ordinary].sum()), int(ordinary.sum()), 0.15)
    evidence.table("selection", ["ordinary positions", "selected", "fraction", "allowed (5 sigma)", "special positions", "selected among them"],
                   [(int(ordinary.sum()), int(selected.sum()), fraction, f"0.15 ± {half_width:.4f}", int(c.special.sum()), int(selected[c.special].sum()))])
    assert abs(fraction - 0.15) <= half_width
    assert not bool(selected[c.special].any())
    assert torch.equal(c.labels[selected], c.original[selected])
    assert torch.equal(c.inputs[~selected], c.original[~selected])


def test_whether_unk_and_a_typed_mask_can_be_selected_depends_on_who_builds_the_special_tokens_mask(tokenizer, evidence):
    """Whether the collator may select [UNK] and a [MASK] typed in the text depends on who builds the special-tokens mask: the collator excludes them, a tokenizer-supplied mask does not.

    DataCollatorForLanguageModeling skips the positions its special-tokens
    mask marks. Given token ids alone, it builds that mask itself with
    ``get_special_tokens_mask(already_has_special_tokens=True)``, which marks
    every special id: [CLS], [SEP], [PAD], [UNK] and [MASK]. Given the
    tokenizer's own mask (``return_special_tokens_mask=True``, as transformers'
    run_mlm example passes it), it uses that one, which marks only the
    [CLS]/[SEP] the tokenizer added (and padding): an [UNK] or a literal
    [MASK] in the text is then an ordinary position that can be selected and
    labelled. Shown with mlm_probability = 1.0, so every eligible position is
    selected and nothing depends on chance.

    Claim ID: P3.3c
    Question: Can the MLM collator choose [UNK] or a [MASK] that is already in my text?
    问题：MLM 数据整理器会选中 [UNK] 或文本里本来就有的 [MASK] 吗？
    中文：数据整理器能否选中 [UNK] 与文本中手写的 [MASK]，取决于谁构造特殊 token mask：整理器自己构造时排除它们，分词器提供的 mask 则不排除。
    原因：DataCollatorForLanguageModeling 跳过其特殊 token mask 标记的位置。只给 token id 时，它用
    get_special_tokens_mask(already_has_special_tokens=True) 自己构造这个 mask，标记所有特殊 id：[CLS]、[SEP]、[PAD]、[UNK] 与 [MASK]。
    给出分词器自己的 mask（return_special_tokens_mask=True，transformers 的 run_mlm 示例就这样传）时，它使用那个 mask，而那个 mask
    只标记分词器添加的 [CLS]/[SEP]（以及 padding）：文本中的 [UNK] 或手写的 [MASK] 就成了可以被选中并打标签的普通位置。
    这里用 mlm_probability = 1.0 展示，每个可选位置都会被选中，与随机性无关。
    """
    texts = texts_for(tokenizer)
    text = texts.around_unknown[0] + chr(0x20000) + texts.around_unknown[1] + f" {tokenizer.mask_token}"
    encoded = tokenizer([text, texts.short], return_special_tokens_mask=True)
    features = [{key: encoded[key][i] for key in encoded} for i in range(2)]
    ids = features[0]["input_ids"]
    where = {t: ids.index(getattr(tokenizer, f"{t}_token_id")) for t in ("unk", "mask")}
    selected = {}
    for built_by, given in (("the collator (token ids alone)", [{"input_ids": f["input_ids"]} for f in features]),
                            ("the tokenizer (return_special_tokens_mask=True)", features)):
        with torch.random.fork_rng():  # the collator draws from the global generator
            labels = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=1.0)(given)["labels"][0]
        selected[built_by] = {t: bool(labels[i] != IGNORE_INDEX) for t, i in where.items()}
    evidence.table(f"{text!r} with mlm_probability = 1.0", ["special-tokens mask built by", "[UNK] selected", "[MASK] selected"],
                   [(by, s["unk"], s["mask"]) for by, s in selected.items()])
    assert selected["the collator (token ids alone)"] == {"unk": False, "mask": False}
    assert selected["the tokenizer (return_special_tokens_mask=True)"] == {"unk": True, "mask": True}


def test_the_collator_turns_80_percent_of_selected_tokens_into_mask_10_percent_into_random_tokens_and_keeps_10_percent(tokenizer, evidence):
    """Of the selected tokens the collator replaces ~80% with [MASK], ~10% with a random token and leaves ~10% unchanged.

    The model must predict the original at every selected position, yet it
    cannot know which ones were left as they were: so it must represent every
    token well, not only [MASK]. The random token is drawn uniformly from the
    whole vocabulary (len(tokenizer)), so it equals the original or [MASK] with
    probability 1/V each: the expected shares are 0.8 + 0.1/V, 0.1 + 0.1/V and
    0.1 − 0.2/V. Each observed share stays within 5 binomial standard deviations.

    Claim ID: P3.3c
    Question: What is the 80/10/10 rule in BERT's masking?
    问题：BERT 遮盖中的 80/10/10 规则是什么？
    中文：在被选中的 token 中，数据整理器把约 80% 替换为 [MASK]、约 10% 替换为随机 token、约 10% 保持不变。
    原因：模型必须在每个被选中位置预测原 token，却无法知道哪些位置没有被替换：因此它必须为每个 token 学好表示，而不只是 [MASK]。
    随机 token 从整个词表（len(tokenizer)）均匀抽取，分别以 1/V 的概率恰好等于原 token 或 [MASK]：期望比例为 0.8+0.1/V、
    0.1+0.1/V 与 0.1−0.2/V。每个观测比例都落在 5 个二项标准差之内。
    """
    c = collate(tokenizer, corpus_examples(tokenizer), COLLATOR_SEED)
    selected = c.labels != IGNORE_INDEX
    fed, original = c.inputs[selected], c.original[selected]
    n, v = len(fed), len(tokenizer)
    to_mask = fed == tokenizer.mask_token_id
    kept = fed == original
    shares = {"[MASK]": (to_mask, 0.8 + 0.1 / v), "random token": (~to_mask & ~kept, 0.1 - 0.2 / v), "unchanged": (kept, 0.1 + 0.1 / v)}
    rows = []
    for name, (hits, p) in shares.items():
        fraction, half_width = within_binomial_bound(int(hits.sum()), n, p)
        rows.append((name, int(hits.sum()), fraction, f"{p:.4f} ± {half_width:.4f}"))
        assert abs(fraction - p) <= half_width, name
    evidence.table(f"what the {n} selected positions are fed (V = {v})", ["became", "count", "share", "allowed (5 sigma)"], rows)


def test_a_seeded_collator_masks_reproducibly_and_seed_0_counts_as_a_seed_only_from_transformers_5(tokenizer, evidence):
    """A collator built with seed=N masks the same positions whatever the global RNG; in transformers 4.57 seed=0 silently means "unseeded".

    With a seed the collator draws from its own torch.Generator, created on the
    first call and advanced by every call (a second batch gets new masks; a new
    collator with the same seed starts over). Without one it draws from the
    global torch RNG (torch.manual_seed). transformers 4.57 creates the
    generator only ``if self.seed`` — false for 0 — so seed=0 masks differently
    under different global seeds; 5.x checks ``is not None``. The test observes
    which, per installed version.

    Claim ID: P3.3c
    Question: Does a seed make DataCollatorForLanguageModeling's masking reproducible?
    问题：给 DataCollatorForLanguageModeling 设种子后，遮盖结果可复现吗？
    中文：用 seed=N 构造的数据整理器无论全局随机数状态如何都遮盖相同位置；在 transformers 4.57 中 seed=0 会被悄悄当作"无种子"。
    原因：有种子时整理器从自己的 torch.Generator 抽样，它在第一次调用时创建、每次调用都会前进（第二个 batch 得到新的遮盖；同种子
    的新整理器从头开始）。没有种子时使用全局 torch 随机数（torch.manual_seed）。transformers 4.57 只在 `if self.seed` 为真时创建
    生成器——0 为假——所以 seed=0 在不同全局种子下遮盖不同；5.x 检查 `is not None`。测试按所装版本记录观察结果。
    """
    examples = corpus_examples(tokenizer, repeats=1)[:40]

    def masks_under_global_seed(global_seed, seed):
        with torch.random.fork_rng():
            torch.manual_seed(global_seed)
            return collate(tokenizer, examples, seed).labels

    def reproducible(seed):
        return torch.equal(masks_under_global_seed(1, seed), masks_under_global_seed(2, seed))

    collator = transformers.DataCollatorForLanguageModeling(tokenizer, seed=COLLATOR_SEED)
    first, second = collator(examples)["labels"], collator(examples)["labels"]
    observed = {"seed=1234": reproducible(COLLATOR_SEED), "seed=0": reproducible(0), "seed=None": reproducible(None)}
    evidence.table(f"same masks under global seeds 1 and 2? (transformers {transformers.__version__})", list(observed), [list(observed.values())])
    evidence.text("one seeded collator, called twice", f"same masks both calls: {torch.equal(first, second)}")
    evidence.table("does seed=0 seed the collator? (read in each version's data_collator.py)",
                   *versions.table(versions.SEED_ZERO_IS_A_SEED, ["transformers"], versions.MAJOR))
    assert observed["seed=1234"] and not observed["seed=None"]
    assert observed["seed=0"] == versions.SEED_ZERO_IS_A_SEED[versions.MAJOR]
    assert torch.equal(first, masks_under_global_seed(3, COLLATOR_SEED))
    assert not torch.equal(first, second)


# ---- the claims above go red on the counterfeits declared at them ----

test_each_claim_goes_red_on_the_counterfeits_declared_at_it = teeth.meta_test(globals())
