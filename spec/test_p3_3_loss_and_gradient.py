"""Chapter P3.3 — the loss and its gradient: cross-entropy with ignore_index -100, recomputed
by hand; which positions and parameters receive gradient; one gradient step; and what each
setting of the labels does to the loss.

The batch is three sentences with four [MASK] tokens, right-padded
(bertspec.proof.examples.masked_batch); labels are the original characters at
the [MASK] positions and -100 everywhere else (answer_labels there).
"""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bertspec.handbook.figures import loss_and_gradient_figure
from bertspec.proof import scope
from bertspec.proof.compare import real_tokens
from bertspec.proof.examples import answer_labels, masked_batch
from bertspec.proof.reference import IGNORE_INDEX, mlm_loss, token_nll
from bertspec.proof.tolerances import TOL


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


@pytest.mark.counterfeits("loss_counting_ignored_positions")
def test_the_model_loss_is_cross_entropy_with_ignore_index_minus_100(mlm, evidence):
    """BertForMaskedLM's loss is CrossEntropyLoss over the flattened logits with ignore_index=-100: only labelled positions count.

    CrossEntropyLoss's default ignore_index is -100, which is why "-100" means
    "no label". The model's loss equals that loss on [B·T, V] logits bit for
    bit, and equals the cross entropy of the labelled positions alone (up to
    float32 summation order, TOL["loss_reduction"]): the ignored positions
    contribute nothing, not even to the count. Old examples mark "no label"
    with -1, transformers' value until early 2020 (#2418, PR #2426): -1 is not
    the ignore_index, so the same labels with -1 make the model's loss fail
    with "Target -1 is out of bounds", which the evidence records.

    Claim ID: P3.3a
    Question: What loss does BertForMaskedLM compute, and why are -100 labels ignored?
    问题：BertForMaskedLM 算的是什么 loss？为什么标签 -100 会被忽略？
    中文：BertForMaskedLM 的 loss 就是在展平的 logits 上、ignore_index=-100 的 CrossEntropyLoss：只有带标签的位置计入。
    原因：CrossEntropyLoss 的默认 ignore_index 是 -100，这就是"-100 表示没有标签"的由来。模型的 loss 与在 [B·T, V]
    logits 上算出的该损失逐位相同，也等于只对带标签位置计算的交叉熵（差别仅在 float32 求和顺序，TOL["loss_reduction"]）：
    被忽略的位置毫无贡献，连计数都不算。旧示例用 -1 表示"没有标签"，这是 transformers 在 2020 年初之前的取值（#2418、PR #2426）：
    -1 不是 ignore_index，把同样的标签改用 -1 后，模型计算 loss 时报 "Target -1 is out of bounds"，证据记录了这条错误。
    Asked in: huggingface/transformers#2491, huggingface/transformers#2418, huggingface/transformers#2426, huggingface/transformers#2946, huggingface/transformers#3499, huggingface/transformers#20797, EricFillion/happy-transformer#128, alexa/dialoglue#19, mosaicml/examples#457
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
    with pytest.raises((IndexError, RuntimeError), match="out of bounds") as minus_one, torch.no_grad():
        mlm.model(**batch.as_kwargs(), labels=labels.masked_fill(~labelled, -1))
    evidence.text("the same labels with -1 where -100 was", f"{minus_one.type.__name__}: {minus_one.value}")


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


@pytest.mark.across_families
@pytest.mark.counterfeits("loss_counting_ignored_positions")
@pytest.mark.carries(
    decoder=scope.differs_on("a causal LM's labels are its inputs, shifted inside the model: the logits before a -100 "
                             "label get no gradient", scope.CAUSAL_GRADIENT),
    encoder_decoder=scope.differs_on("T5 shifts the labels right into decoder_input_ids; its loss skips -100 labels, "
                                     "unshifted", scope.T5_SHIFT))
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
