"""Chapter P8.5 — the encoder-decoder: T5's cross-attention, causal decoder, shifted labels and unscaled scores.
"""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from bertspec.builders.beyond_encoders import T5_SENTINELS, corrupt_spans
from bertspec.builders.default_model import read_corpus
from bertspec.models import versions
from bertspec.proof import scope
from bertspec.proof.generation import HIDDEN_SPAN, untrained_twin
from bertspec.proof.tolerances import TOL, attention_component, generative_tolerance, kernel_tolerance
from bertspec.tracing import hooks, masks

SPAN_SEED = 99  # hides spans other than the build's (seed 1234) in the corpus lines
NO_ENCODER = scope.not_applicable_to("a decoder has no encoder: no cross-attention, no encoder input, "
                                     "no decoder inputs made from labels")
# Two encoder inputs of different lengths, right-padded as T5's tokenizer pads, and the spans each hides.
LONG, SHORT = ("北京是中国的首<extra_id_0>。", "<extra_id_0>都"), ("上<extra_id_0>", "<extra_id_0>海是中国")


@dataclass
class Attended:
    """What one T5 attention module was handed and made on one forward."""

    path: str
    kind: str  # "self" or "cross"
    module: torch.nn.Module
    hidden: torch.Tensor  # the queries' input (normed)
    sources: torch.Tensor  # the keys' and values' input: hidden itself, or the encoder's output
    mask: torch.Tensor | None  # as the module received it
    bias: torch.Tensor | None = None  # the position bias it returned (4.57: with the mask added)
    context: torch.Tensor | None = None  # what its output projection o received: probabilities @ values, heads joined

    @property
    def stack(self) -> str:
        return self.path.split(".")[0]


def attended(generative, **inputs) -> list[Attended]:
    """Run T5 once on ``inputs``; what each attention module (encoder self, decoder self and cross) took and made."""
    model, route = generative.model, generative.anatomy.mask_route
    found, handles = {}, []

    def watch(path, kind):
        def pre(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            sources = kwargs.get("key_value_states")
            found[path] = Attended(path, kind, module, hidden, hidden if sources is None else sources,
                                   route.mask(module, args, kwargs))

        def post(module, args, kwargs, output):
            found[path].bias = output[1]

        def context(module, args, kwargs):
            found[path].context = args[0]

        return pre, post, context

    for path, kind, module in generative.anatomy.attention_modules(model):
        pre, post, context = watch(path, kind)
        handles += hooks.register(module, pre=pre, post=post) + hooks.register(module.o, pre=context)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        hooks.remove(handles)
    return list(found.values())


def mask_applied(a: Attended, queries: int, keys: int) -> torch.Tensor | float:
    """The additive mask the module's attention applies beyond the bias it returned (versions.T5_BIAS_HOLDS_MASK)."""
    if versions.T5_BIAS_HOLDS_MASK[versions.MAJOR]:
        return 0.0
    mask = a.mask
    if mask is None and getattr(a.module, "is_causal", False) and queries > 1:  # sdpa, nothing padded: the flag
        mask = torch.ones(queries, keys, dtype=torch.bool).tril()
    if mask is None:
        return 0.0
    return torch.where(mask, 0.0, torch.finfo(a.hidden.dtype).min) if mask.dtype == torch.bool else mask


def by_hand(a: Attended, scale: float = 1.0) -> tuple[torch.Tensor, float, float]:
    """The module's attention recomputed from its weights and inputs, scores = (q·kᵀ) · scale + bias + mask:
    (probabilities [B, heads, queries, keys], max |context by hand − the module's|, attention_component's bound)."""
    m, d = a.module, a.module.key_value_proj_dim

    def heads(x):
        return x.unflatten(-1, (-1, d)).transpose(1, 2)

    q, k, v = (heads(F.linear(x, w)) for x, w in ((a.hidden, m.q.weight), (a.sources, m.k.weight),
                                                  (a.sources, m.v.weight)))
    scores = q @ k.transpose(-1, -2) * scale + a.bias + mask_applied(a, q.shape[2], k.shape[2])
    probabilities = scores.softmax(-1)
    visible = scores[probabilities > 0]
    atol = attention_component(visible.abs().max().item(), v.abs().max().item())["atol"]
    context = (probabilities @ v).transpose(1, 2).flatten(2)
    return probabilities, (context - a.context).abs().max().item(), atol


def spans_batch(generative, rows):
    """The encoder batch of ``rows`` (right-padded) and the labels of their spans (right-padded with -100)."""
    encoder_batch = generative.encode([text for text, _ in rows], padding_side="right")
    targets = generative.encode([span for _, span in rows], padding_side="right")
    return encoder_batch, targets["input_ids"].masked_fill(targets["attention_mask"] == 0, -100)


@pytest.mark.carries(decoder=scope.not_applicable_to("a decoder has no encoder input in which spans could be hidden"))
def test_the_bundled_t5_fills_spans_hidden_behind_sentinels_where_an_untrained_twin_does_not(generative, evidence):
    """With spans of each corpus line replaced by sentinels, the bundled T5 writes each sentinel followed by the characters it hides on more than a quarter of the lines, an untrained T5 of the same config on almost none.

    T5 was trained by span corruption (2000 steps;
    bertspec/builders/beyond_encoders.py): about 15% of a line's characters,
    in spans, are each replaced in the encoder's input by the next sentinel
    <extra_id_0>, <extra_id_1>, ...; the decoder, starting from <pad>, is
    trained to write each sentinel followed by the span it hides, then </s>.
    Here the spans are hidden with another seed than the build's, and a line
    counts only if the whole target is written exactly. An untrained model
    matches a one- or two-character span from about 400 tokens by chance
    with probability below 1%. Thresholds: more than a quarter of the lines
    for the trained model, fewer than 5% for the untrained one; and
    北京是中国的首<extra_id_0>。 gives <extra_id_0>都, the answer BERT's
    claims ask of 首[MASK].

    Claim ID: P8.5
    Question: Has the bundled T5 learned to fill hidden spans of the corpus?
    问题：自带的 T5 学会填补语料中被隐藏的片段了吗？
    中文：把每行语料的片段替换为哨兵 token 后，自带的 T5 在超过四分之一的行上写出每个哨兵及其隐藏的字符，同一配置的未训练 T5 几乎一行也写不出。
    原因：T5 以片段破坏（span corruption）训练（2000 步；bertspec/builders/beyond_encoders.py）：一行中约 15% 的字符按片段
    在编码器输入中依次替换为哨兵 <extra_id_0>、<extra_id_1>……；解码器从 <pad> 开始，学习写出每个哨兵及其隐藏的片段，最后写 </s>。
    这里用与构建不同的随机种子隐藏片段，只有整个目标完全写对的行才算数。未训练模型从约 400 个 token 中碰巧写对一两个字符的片段的概率低于 1%。
    阈值：训练后的模型超过四分之一的行，未训练的模型少于 5%；并且“北京是中国的首<extra_id_0>。”得到“<extra_id_0>都”，
    正是 BERT 的结论对“首[MASK]”所问的答案。
    """
    tokenizer, model, name = generative.tokenizer, generative.model, generative.anatomy.name
    lines = read_corpus()
    sentinels = tokenizer.convert_tokens_to_ids(T5_SENTINELS[::-1])
    generator = torch.Generator().manual_seed(SPAN_SEED)
    pairs = [corrupt_spans(ids, sentinels, generator)
             for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]]
    eos = [tokenizer.eos_token_id]
    batch = tokenizer.pad({"input_ids": [inputs + eos for inputs, _ in pairs]}, return_tensors="pt")
    wanted = [targets + eos for _, targets in pairs]

    def filled(m):
        with torch.no_grad():
            out = m.generate(**batch, max_new_tokens=max(map(len, wanted)), do_sample=False)
        # Each row starts with the decoder's start token; what follows is compared with the target, up to its </s>.
        return [row[1: 1 + len(target)].tolist() == target for row, target in zip(out, wanted)]

    right, untrained = filled(model), filled(untrained_twin(generative))
    with torch.no_grad():
        showcase = model.generate(**tokenizer(HIDDEN_SPAN, return_tensors="pt"), max_new_tokens=4)
    showcase = tokenizer.decode(showcase[0], skip_special_tokens=False)
    evidence.table(f"{name}: spans hidden in corpus lines (seed {SPAN_SEED})", ["input", "target", "written exactly"],
                   [(tokenizer.decode(inputs), tokenizer.decode(target), ok)
                    for (inputs, _), target, ok in list(zip(pairs, wanted, right))[:12]])
    rate, untrained_rate = sum(right) / len(lines), sum(untrained) / len(lines)
    evidence.table(f"{name}: what it learned", ["measure", "value", "threshold"], [
        ("lines whose spans are written exactly, trained", rate, "> 0.25"),
        ("lines whose spans are written exactly, untrained twin", untrained_rate, "< 0.05"),
        (HIDDEN_SPAN, showcase, "<pad><extra_id_0>都</s>"),
    ])
    assert rate > 0.25
    assert untrained_rate < 0.05
    assert showcase == "<pad><extra_id_0>都</s>"


@pytest.mark.carries(decoder=NO_ENCODER)
@pytest.mark.counterfeits("cross_attention_unmasked")
def test_t5_decoder_queries_give_padded_encoder_positions_exactly_zero_probability_in_every_cross_attention_layer(
        generative, evidence):
    """With a right-padded encoder batch, every decoder query gives exactly zero probability to every padded encoder position in every cross-attention layer, and the shorter row's decoder output equals that row run alone.

    T5's decoder attends to the encoder's output in each layer's
    EncDecAttention; its keys are the encoder's positions, the padded ones
    included. The attention_mask passed to the model is the encoder's
    padding mask, and T5 hands it to every cross-attention module (5.x:
    create_bidirectional_mask with the encoder's states as keys, a float or
    boolean [B, 1, 1 or T_dec, T_enc]; 4.57: the inverted 0/finfo.min mask,
    added to the cross-attention's position bias). The probabilities here are
    recomputed from each module's weights and inputs and must reproduce the
    context it passed to its output projection (rounding bound of
    bertspec.proof.tolerances.attention_component); at the padded keys the
    score is finfo.min below the others and softmax gives exactly 0. So the
    shorter row's decoder logits equal the row run alone without padding,
    held to the rounding bound of forward_tolerance (one layer per attention
    module, Cauchy–Schwarz bound of the scores).

    Claim ID: P8.5
    Question: Can T5's decoder see the padding of its encoder's input?
    问题：T5 的解码器能看到编码器输入中的 padding 吗？
    中文：编码器批次右侧填充时，在每个交叉注意力层中，每个解码器查询给每个被填充的编码器位置的概率都恰好为零；较短那一行的解码器输出与该行单独运行时相同。
    原因：T5 的解码器在每层的 EncDecAttention 中关注编码器的输出；其键是编码器的各个位置，包括被填充的位置。传给模型的 attention_mask
    就是编码器的 padding mask，T5 把它交给每个交叉注意力模块（5.x：以编码器状态为键的 create_bidirectional_mask，float 或布尔的
    [B, 1, 1 或 T_dec, T_enc]；4.57：取反后的 0/finfo.min mask，加到交叉注意力的位置偏置上）。这里的概率由每个模块的权重与输入重算，
    并且必须复现它交给输出投影的上下文（舍入误差界 bertspec.proof.tolerances.attention_component）；在被填充的键上分数比其他键低
    finfo.min，softmax 恰好给出 0。因此较短一行的解码器 logits 与该行不加填充单独运行时相同，按 forward_tolerance 的舍入误差界比较
    （每个注意力模块算一层，分数取柯西-施瓦茨上界）。
    """
    model, tokenizer = generative.model, generative.tokenizer
    encoder_batch, labels = spans_batch(generative, [LONG, SHORT])
    padded = encoder_batch["attention_mask"] == 0
    decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    inputs = dict(encoder_batch, decoder_input_ids=decoder_ids)
    rows = []
    for a in (a for a in attended(generative, **inputs) if a.kind == "cross"):
        probabilities, difference, atol = by_hand(a)
        at_padding = probabilities.masked_fill(~padded[:, None, None, :], 0)
        rows.append((a.path, str(masks.form(a.mask, *padded.shape)), at_padding.max().item(),
                     at_padding.sum(-1).max().item(), difference, atol))
    alone = generative.encode([SHORT[0]], padding_side="right")
    with torch.no_grad():
        batched = model(**inputs).logits[1]
        single = model(**alone, decoder_input_ids=decoder_ids[1:]).logits[0]
    bound = generative_tolerance(generative, single, **alone, decoder_input_ids=decoder_ids[1:])
    evidence.table(f"T5 ({generative.attn_implementation}): cross-attention over a right-padded encoder batch "
                   f"({int(padded[1].sum())} of {padded.shape[1]} positions of row 1 padded)",
                   ["module", "mask it received", "largest probability at a padded key",
                    "largest mass on padded keys", "max |context by hand − module's|", "bound"], rows)
    evidence.table("the shorter row in the batch and alone",
                   ["encoder input", "decoder input", "max |Δ logit|", "bound"],
                   [(SHORT[0], tokenizer.decode(decoder_ids[1]), (batched - single).abs().max().item(), bound["atol"])])
    header, table_rows = versions.table(versions.T5_BIAS_HOLDS_MASK, ["transformers", "returned bias holds the mask"],
                                        versions.MAJOR)
    evidence.table("where T5Attention puts its mask, per transformers version", header, table_rows)
    for path, _, largest, _, difference, atol in rows:
        assert difference <= atol, f"{path}: the recomputed attention is not the module's"
        assert largest == 0.0, f"{path}: a decoder query gives a padded encoder position probability {largest}"
    torch.testing.assert_close(batched, single, **bound)


@pytest.mark.carries(decoder=scope.not_applicable_to("a decoder has one stack, causal: there is no bidirectional "
                                                     "encoder beside it to compare"))
@pytest.mark.counterfeits("causal_mask_dropped")
def test_t5_decoder_self_attention_gives_later_decoder_tokens_zero_probability_and_its_encoder_does_not(generative,
                                                                                                        evidence):
    """In every decoder self-attention layer each query gives exactly zero probability to the decoder tokens after it; in every encoder self-attention layer each query gives a positive probability to every later token.

    T5's decoder is causal: its self-attention receives a causal mask
    (5.x: create_causal_mask, or, on sdpa with nothing padded, no mask and
    the module's is_causal flag; 4.57: the triangle added to the position
    bias), and its relative position buckets are one-directional. The
    encoder's self-attention is bidirectional: with nothing padded it hides
    no key. Probabilities recomputed from each module's weights and inputs,
    held to reproduce the module's own context (attention_component's
    rounding bound), on one unpadded encoder input of ten tokens and six
    decoder tokens.

    Claim ID: P8.5
    Question: Is T5's decoder causal and its encoder not?
    问题：T5 的解码器是因果的而编码器不是吗？
    中文：在每个解码器自注意力层中，每个查询给其后的解码器 token 的概率恰好为零；在每个编码器自注意力层中，每个查询给其后每个 token 的概率都为正。
    原因：T5 的解码器是因果的：其自注意力接收因果 mask（5.x：create_causal_mask，或在 sdpa 且没有填充时不接收 mask、由模块的 is_causal
    标志处理；4.57：三角 mask 加到位置偏置上），其相对位置分桶也是单向的。编码器的自注意力是双向的：没有填充时不屏蔽任何键。
    概率由每个模块的权重与输入重算，并且必须复现模块自己的上下文（attention_component 的舍入误差界）；输入为一条十个 token 的未填充编码器输入
    与六个解码器 token。
    """
    encoder_batch, labels = spans_batch(generative, [(LONG[0], SHORT[1])])
    decoder_ids = generative.model.prepare_decoder_input_ids_from_labels(labels=labels)
    rows = []
    for a in (a for a in attended(generative, **encoder_batch, decoder_input_ids=decoder_ids) if a.kind == "self"):
        probabilities, difference, atol = by_hand(a)
        later = torch.ones(probabilities.shape[-2:], dtype=torch.bool).triu(1)
        rows.append((a.stack, a.path, probabilities[..., later].max().item(), probabilities[..., later].min().item(),
                     difference, atol))
    evidence.table(f"T5 ({generative.attn_implementation}): self-attention to later tokens",
                   ["stack", "module", "largest probability at a later key", "smallest",
                    "max |context by hand − module's|", "bound"], rows)
    for stack, path, largest, smallest, difference, atol in rows:
        assert difference <= atol, f"{path}: the recomputed attention is not the module's"
        if stack == "decoder":
            assert largest == 0.0, f"{path}: a decoder query sees a later token"
        else:
            assert smallest > 0.0, f"{path}: an encoder query gives a later token no probability"


@pytest.mark.carries(decoder=NO_ENCODER)
@pytest.mark.counterfeits("t5_labels_shifted_twice")
def test_t5_builds_decoder_inputs_by_shifting_the_labels_right_and_scores_its_loss_against_the_labels_unshifted(
        generative, evidence):
    """Given labels, T5 feeds its decoder the labels shifted right, decoder_start_token_id first and -100 replaced by pad, and its loss is the cross-entropy of each position's logits against that position's label, -100 ignored.

    T5ForConditionalGeneration, given labels and no decoder_input_ids, makes
    them with _shift_right (prepare_decoder_input_ids_from_labels): the
    decoder's input at position t is the label of position t − 1, and
    position 0 gets decoder_start_token_id (T5's pad). Since the decoder's
    input is already one step behind the labels, the logits at position t
    predict label t, and the loss compares them unshifted: the shift is on
    the inputs, not in the loss, the opposite of a causal LM, which takes
    its labels equal to its inputs and shifts inside the loss. The logits
    with labels must equal those with the hand-built decoder inputs (the same
    arithmetic: exact on eager, float32 kernel rounding on sdpa); the loss
    the cross-entropy written out, up to a reduction's rounding
    (TOL["loss_reduction"]); a loss shifted again, as a causal LM's would
    be, is another number.

    Claim ID: P8.5
    Question: Where does T5 shift its labels: in the decoder's inputs or in the loss?
    问题：T5 在哪里移位标签：在解码器的输入中还是在 loss 中？
    中文：给出标签时，T5 把标签右移一位作为解码器输入，首位为 decoder_start_token_id，-100 替换为 pad；其 loss 是每个位置的 logits 与该位置标签的交叉熵，忽略 -100。
    原因：T5ForConditionalGeneration 在给出标签而没有 decoder_input_ids 时，用 _shift_right（prepare_decoder_input_ids_from_labels）生成它们：
    解码器在位置 t 的输入是位置 t − 1 的标签，位置 0 是 decoder_start_token_id（T5 的 pad）。由于解码器的输入已经比标签晚一步，
    位置 t 的 logits 预测标签 t，loss 不再移位：移位发生在输入上而不在 loss 中，与因果语言模型相反，后者的标签等于输入、在 loss 内部移位。
    给出标签时的 logits 必须与手工构造的解码器输入得到的 logits 相同（同样的运算：eager 下完全相同，sdpa 下为 float32 内核舍入）；
    loss 等于手写的交叉熵，只差一次归约的舍入（TOL["loss_reduction"]）；像因果语言模型那样再移位一次的 loss 是另一个数。
    """
    model, tokenizer, config = generative.model, generative.tokenizer, generative.config
    encoder_batch, labels = spans_batch(generative, [LONG, SHORT])
    shifted_right = torch.cat([torch.full_like(labels[:, :1], config.decoder_start_token_id), labels[:, :-1]], 1)
    by_hand_ids = shifted_right.masked_fill(shifted_right == -100, config.pad_token_id)
    made = model.prepare_decoder_input_ids_from_labels(labels=labels)
    with torch.no_grad():
        with_labels = model(**encoder_batch, labels=labels)
        with_inputs = model(**encoder_batch, decoder_input_ids=by_hand_ids)
    logits = with_labels.logits
    unshifted = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    shifted_again = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)

    def shown(ids):
        return " ".join("-100" if i == -100 else tokenizer.convert_ids_to_tokens(i) for i in ids.tolist())

    evidence.table("T5: labels and the decoder inputs made from them",
                   ["row", "labels", "decoder inputs by hand", "prepare_decoder_input_ids_from_labels"],
                   [(i, shown(labels[i]), shown(by_hand_ids[i]), shown(made[i])) for i in range(len(labels))])
    evidence.table(f"T5 ({generative.attn_implementation}): the loss", ["loss", "value"], [
        ("the model's, given labels", with_labels.loss.item()),
        ("cross-entropy of logits[t] against labels[t] (unshifted)", unshifted.item()),
        ("cross-entropy of logits[t] against labels[t + 1] (shifted again, as a causal LM)", shifted_again.item()),
        ("max |Δ logit|, labels vs hand-built decoder inputs", (logits - with_inputs.logits).abs().max().item()),
    ])
    assert torch.equal(made, by_hand_ids)
    torch.testing.assert_close(logits, with_inputs.logits, **kernel_tolerance(generative.attn_implementation))
    torch.testing.assert_close(with_labels.loss, unshifted, **TOL["loss_reduction"])
    assert not torch.isclose(shifted_again, unshifted, **TOL["loss_reduction"])


@pytest.mark.carries(decoder=scope.not_applicable_to("the question is T5's: GPT-2 and LLaMA divide their scores by "
                                                     "sqrt(head_dim) as BERT does (scale_attn_weights, "
                                                     "scaling = head_dim**-0.5)"))
@pytest.mark.counterfeits("t5_scores_scaled")
def test_t5_does_not_divide_its_scores_by_the_square_root_of_the_head_size_its_query_initialisation_carries_the_scale(
        generative, evidence):
    """Each T5 attention's probabilities are softmax(q·kᵀ + position bias + mask) with no 1/sqrt(d_kv): recomputed that way they reproduce the module's context, recomputed with the usual scaling they do not; T5 initialises q with a standard deviation sqrt(d_kv) times smaller than k's instead.

    BERT, GPT-2 and LLaMA divide q·kᵀ by sqrt(head_dim) so that scores keep
    unit size at initialisation. T5's T5Attention does not (4.57 adds the
    bias to the raw matmul; 5.x sets scaling = 1.0): the scale lives in
    _init_weights, the same in 4.57.6 and 5.25, which draws q from
    N(0, factor · (d_model · d_kv)^-1/2) and k and v from
    N(0, factor · d_model^-1/2): q is born sqrt(d_kv) smaller. Shown on every
    attention module (encoder self, decoder self, cross) of one padded
    forward, the recomputation without the scale held to
    attention_component's rounding bound and the one with it required to
    miss it; and on a freshly initialised T5 of the same config (the
    untrained twin), whose q and k standard deviations, from 64·64 weights
    per module, must match the formula to 5% (more than ten standard errors
    of a sample standard deviation).

    Claim ID: P8.5
    Question: Does T5 divide its attention scores by sqrt(d), and if not, where is that scale?
    问题：T5 会把注意力分数除以 sqrt(d) 吗？如果不会，这个缩放在哪里？
    中文：T5 每个注意力的概率是 softmax(q·kᵀ + 位置偏置 + mask)，没有 1/sqrt(d_kv)：照此重算能复现模块的上下文，按通常的缩放重算则不能；T5 改为在初始化时让 q 的标准差比 k 小 sqrt(d_kv) 倍。
    原因：BERT、GPT-2 与 LLaMA 把 q·kᵀ 除以 sqrt(head_dim)，使分数在初始化时保持单位大小。T5 的 T5Attention 不这样做（4.57 把偏置直接加到
    矩阵乘积上；5.x 设 scaling = 1.0）：缩放放在 _init_weights 中（4.57.6 与 5.25 相同），q 取自 N(0, factor · (d_model · d_kv)^-1/2)，
    k 与 v 取自 N(0, factor · d_model^-1/2)：q 生来就小 sqrt(d_kv) 倍。在一次带填充的前向的每个注意力模块（编码器自注意力、解码器自注意力、
    交叉注意力）上展示：不缩放的重算按 attention_component 的舍入误差界比较，缩放的重算必须超出它；并在同一配置新初始化的 T5（未训练的孪生模型）上，
    每个模块 64·64 个权重的 q 与 k 标准差必须与公式相差不超过 5%（超过样本标准差的十倍标准误）。
    """
    config = generative.config
    encoder_batch, labels = spans_batch(generative, [LONG, SHORT])
    decoder_ids = generative.model.prepare_decoder_input_ids_from_labels(labels=labels)
    scale = config.d_kv ** -0.5
    rows = []
    for a in attended(generative, **encoder_batch, decoder_input_ids=decoder_ids):
        (_, unscaled, atol), (_, scaled, _) = by_hand(a), by_hand(a, scale)
        rows.append((a.path, a.kind, unscaled, scaled, atol))
    twin = untrained_twin(generative)
    modules = [m for _, _, m in generative.anatomy.attention_modules(twin)]
    stds = {name: torch.cat([getattr(m, name).weight.flatten() for m in modules]).std().item() for name in "qkv"}
    formula = {"q": (config.d_model * config.d_kv) ** -0.5, "k": config.d_model ** -0.5, "v": config.d_model ** -0.5}
    factor = config.initializer_factor
    evidence.table(f"T5 ({generative.attn_implementation}): each attention recomputed from its weights",
                   ["module", "kind", "max |Δ context|, no scale", f"max |Δ context|, scores × d_kv^-1/2 = {scale}",
                    "bound"], rows)
    evidence.table(f"an untrained T5 of the same config: _init_weights (factor {factor}, d_model {config.d_model}, "
                   f"d_kv {config.d_kv})", ["weight", "measured std", "formula", "factor × formula"],
                   [(name, stds[name], text, factor * formula[name]) for name, text in (
                       ("q", "factor · (d_model · d_kv)^-1/2"), ("k", "factor · d_model^-1/2"),
                       ("v", "factor · d_model^-1/2"))])
    for path, _, unscaled, scaled, atol in rows:
        assert unscaled <= atol, f"{path}: softmax(q·kᵀ + bias + mask) is not what the module computed"
        assert scaled > atol, f"{path}: dividing the scores by sqrt(d_kv) changes nothing"
    for name in "qkv":
        assert abs(stds[name] / (factor * formula[name]) - 1) < 0.05, f"{name}'s initialisation"
