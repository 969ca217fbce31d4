"""Chapter P3.2 — the MLM prediction head: a transform (dense → activation → LayerNorm) that
matters, then a decoder from [batch, seq, hidden] to [batch, seq, vocab] whose weight is the
word-embedding matrix itself, giving unnormalised logits.

The batch is three sentences with four [MASK] tokens, right-padded
(bertspec.proof.examples.masked_batch).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bertspec.proof import counterfeits, scope
from bertspec.proof.compare import max_diff, real_tokens
from bertspec.proof.examples import masked_batch, reference_of, sequence_output_step
from bertspec.proof.tolerances import TOL


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


@pytest.mark.across_families
@pytest.mark.counterfeits("untied_decoder", "untied_decoder_perturbed")
@pytest.mark.carries(
    decoder=scope.differs_on("the head has no bias, and is the embedding matrix only where the config ties them",
                             scope.TIED_HEAD),
    encoder_decoder=scope.differs_on("the head has no bias, and is the embedding matrix only where the config ties them",
                                     scope.TIED_HEAD))
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
    Asked in: i-machine-think/diagNNose#61, huggingface/transformers#19999, huggingface/transformers#7167
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
