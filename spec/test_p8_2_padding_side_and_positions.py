"""Chapter P8.2 — padding side and positions in batched generation: a decoder appends to the right end of each row.

Claims about where a decoder's batch is padded, and what that does to its
positions: learned absolute positions (GPT-2) and rotary ones (LLaMA). The
prompts are the first halves of the corpus lines, whose lengths differ.
"""

import pytest
import torch

from bertspec.builders.default_model import read_corpus
from bertspec.models import versions
from bertspec.proof import scope, tolerances
from bertspec.proof.generation import (
    CONTINUATION,
    PREFIX,
    continuations,
    ending,
    one_per_length,
    untrained_twin,
)
from bertspec.tracing import hooks

T5_PADS_ITS_ENCODER = scope.differs_on(
    "T5's prompt is its encoder's input, whose padding the cross-attention mask hides from every decoder query on "
    "either side; its decoder starts each row from the one start token, so no decoder row is padded",
    scope.T5_CROSS_MASK)


def first_halves() -> tuple[list[str], list[str], int]:
    """The corpus lines, the first half of each (the prompts), and room for the longest second half and its eos."""
    lines = read_corpus()
    prompts = [line[: len(line) // 2] for line in lines]
    return lines, prompts, max(len(line) - len(prompt) for line, prompt in zip(lines, prompts)) + 1


def unpadded_continuations(model, tokenizer, prompts, max_new_tokens: int) -> list[list[int]]:
    """Each prompt's greedy continuation in a batch of the prompts of its own length: no row is padded."""
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    written = {}
    for length in set(lengths):
        rows = [i for i, n in enumerate(lengths) if n == length]
        written.update(zip(rows, continuations(model, tokenizer, [prompts[i] for i in rows], max_new_tokens)))
    return [written[i] for i in range(len(prompts))]


def positions_generate_passes(model, batch):
    """The position_ids generate hands the model in its first forward on ``batch``; None if it hands none."""
    seen = {}

    def pre(module, args, kwargs):
        seen.setdefault("position_ids", kwargs.get("position_ids"))

    with hooks.attached(model, pre=pre), torch.no_grad():
        model.generate(**batch, max_new_tokens=1, do_sample=False)
    return seen["position_ids"]


def alone_logits(model, tokenizer, prompts, like: torch.Tensor) -> torch.Tensor:
    """Each prompt's logits computed unpadded, put where its real tokens stand in a left-padded batch like ``like``."""
    out = torch.zeros_like(like)
    for i, prompt in enumerate(prompts):
        logits = model(**tokenizer(prompt, return_tensors="pt")).logits[0]
        out[i, -len(logits):] = logits
    return out


@pytest.mark.carries(encoder_decoder=scope.not_applicable_to(
    "T5 writes the spans hidden in its encoder's input, not a continuation of a prompt"))
def test_the_bundled_decoders_finish_corpus_lines_from_their_first_half_where_an_untrained_twin_does_not(generative,
                                                                                                         evidence):
    """Given the first half of each corpus line, the bundled GPT-2 and LLaMA greedily write the rest of the line on most lines, in one left-padded batch, where an untrained model of the same config writes almost none.

    They were trained as causal language models on the corpus lines, each
    followed by its eos token (1000 steps; bertspec/builders/beyond_encoders.py).
    A continuation counts only if every character and the final eos are the
    line's own: an untrained model matches a line's second half (3 to 8
    characters from about 390 tokens) by chance with probability far below
    1%. The 204 prompts go in one batch, padded on the left as a decoder needs
    (the next claim shows why). Thresholds: more than half the lines for the
    trained model, fewer than 5% for the untrained one; and 北京是中国的
    continues as 首都。.

    Claim ID: P8.2
    Question: Have the bundled decoders learned the corpus?
    问题：自带的解码器学会语料了吗？
    中文：给出每行语料的前半，自带的 GPT-2 与 LLaMA 在一个左侧填充的批次中贪心地写出大多数行的后半，而同一配置的未训练模型几乎一行也写不出。
    原因：它们以因果语言模型在语料行上训练，每行后接 eos（1000 步；bertspec/builders/beyond_encoders.py）。
    只有每个字符和最后的 eos 都与原行相同才算写对：未训练模型碰巧写对一行的后半（约 390 个 token 中的 3 到 8 个字符）的概率远低于 1%。
    204 个提示放在一个批次中，按解码器的需要在左侧填充（下一条结论说明原因）。阈值：训练后的模型超过一半的行，未训练的模型少于 5%；
    并且“北京是中国的”续写为“首都。”。
    """
    tokenizer, model, name = generative.tokenizer, generative.model, generative.anatomy.name
    lines, prompts, max_new = first_halves()
    written = continuations(model, tokenizer, prompts, max_new)
    untrained = continuations(untrained_twin(generative), tokenizer, prompts, max_new)
    endings = [ending(tokenizer, line[len(p):]) for p, line in zip(prompts, lines)]
    (showcase,) = continuations(model, tokenizer, [PREFIX], len(CONTINUATION) + 1)
    shown = list(zip(prompts, written, endings))[:12]
    evidence.table(f"{name}: greedy second halves of corpus lines", ["prompt", "written", "the line's"],
                   [(p, tokenizer.decode(w), tokenizer.decode(e)) for p, w, e in shown])
    rate = sum(w == e for w, e in zip(written, endings)) / len(lines)
    untrained_rate = sum(w == e for w, e in zip(untrained, endings)) / len(lines)
    evidence.table(f"{name}: what it learned", ["measure", "value", "threshold"], [
        ("lines continued exactly, trained", rate, "> 0.5"),
        ("lines continued exactly, untrained twin", untrained_rate, "< 0.05"),
        (f"{PREFIX} →", tokenizer.decode(showcase), tokenizer.decode(ending(tokenizer, CONTINUATION))),
    ])
    assert rate > 0.5
    assert untrained_rate < 0.05
    assert showcase == ending(tokenizer, CONTINUATION)


@pytest.mark.carries(encoder_decoder=T5_PADS_ITS_ENCODER)
@pytest.mark.counterfeits("positions_not_shifted")
def test_right_padding_changes_most_batched_greedy_continuations_and_left_padding_changes_none(generative, evidence):
    """Generated greedily in one batch, most right-padded prompts continue otherwise than unpadded, and no left-padded one does.

    generate appends each new token at the right end of every row and reads
    the next one off the logits at the last position. Padded on the right, a
    short prompt's last position is a pad: its first new token is predicted
    at a pad token (GPT-2's pad is its eos) standing after the prompt, and
    the pads stay between the prompt and everything written after them.
    Padded on the left, the pads stand before the prompt, where the
    attention mask hides them from every query, and generate's position_ids
    (cumsum(attention_mask) − 1) start each prompt at position 0, so each row
    is computed as its prompt is unpadded. The reference is each prompt
    generated in a batch of the prompts of its own length (no padding), for
    all 204 first halves of the corpus lines. The rows that need no padding
    (the longest prompts) agree on either side, so what differs comes from
    the padding; "breaks" is taken as more than half the padded rows.

    Claim ID: P8.2
    Question: Why does batched generation with a decoder pad on the left?
    问题：为什么解码器的批量生成要在左侧填充？
    中文：在一个批次中贪心生成时，大多数右侧填充的提示续写得与不填充时不同，而左侧填充的提示没有一个不同。
    原因：generate 在每行的右端追加新 token，并从最后一个位置的 logits 读出下一个 token。右侧填充时，较短提示的最后一个位置是填充：
    它的第一个新 token 是在提示之后的一个填充 token（GPT-2 的填充就是 eos）上预测的，而且这些填充一直夹在提示与之后写出的所有内容之间。
    左侧填充时，填充位于提示之前，attention mask 对每个 query 屏蔽它们，generate 的 position_ids（cumsum(attention_mask) − 1）
    让每个提示从位置 0 开始，所以每行的计算与不填充时相同。参照是把每个提示放在与它等长的提示组成的批次中生成（没有填充），
    覆盖语料全部 204 行的前半。不需要填充的行（最长的提示）两侧都一致，所以差异来自填充；“破坏”取为超过一半的填充行。
    """
    tokenizer, model, name = generative.tokenizer, generative.model, generative.anatomy.name
    _, prompts, max_new = first_halves()
    unpadded = unpadded_continuations(model, tokenizer, prompts, max_new)
    sides = {side: continuations(model, tokenizer, prompts, max_new, padding_side=side) for side in ("right", "left")}
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    padded = {i for i, n in enumerate(lengths) if n < max(lengths)}
    differ = {side: {i for i, row in enumerate(rows) if row != unpadded[i]} for side, rows in sides.items()}
    evidence.table(f"{name} ({generative.attn_implementation}): {len(prompts)} prompts in one batch against each "
                   "unpadded", ["padding side", "padded rows", "rows that differ", "of them padded", "threshold"],
                   [("right", len(padded), len(differ["right"]), len(differ["right"] & padded),
                     f"> {len(padded) / 2:g}, all padded"),
                    ("left", len(padded), len(differ["left"]), len(differ["left"] & padded), "0")])
    shown = [prompts.index(p) for p in one_per_length(prompts)]
    evidence.table(f"{name}: one prompt of each length", ["prompt", "pads", "unpadded", "right-padded", "left-padded"],
                   [(prompts[i], max(lengths) - lengths[i], tokenizer.decode(unpadded[i]),
                     tokenizer.decode(sides["right"][i]), tokenizer.decode(sides["left"][i])) for i in shown])
    assert not differ["left"]
    assert differ["right"] <= padded
    assert len(differ["right"]) > len(padded) / 2


@pytest.mark.carries(encoder_decoder=scope.not_applicable_to(
    "T5 takes no position ids: each attention adds a bias of the distance between query and key"))
@pytest.mark.counterfeits("positions_not_shifted")
def test_a_left_padded_row_gives_its_prompts_logits_with_generates_position_ids_and_without_them_only_under_rotary_positions(
        generative, evidence):
    """A left-padded row gives its prompt's own logits at every real token with the position_ids generate passes (each row counted from its first real token); without them GPT-2's learned positions shift and its logits change, while LLaMA's rotary ones give the same logits up to float32 rounding.

    Called without position_ids, a decoder numbers the columns 0, 1, 2, …,
    pads included, so a prompt behind k pads starts at position k. GPT-2 adds
    a learned vector per absolute position (wpe) to each token's embedding:
    shifted, every real token gets another one and its logits change, shown
    as the largest |Δ logit| and the real tokens whose most likely next token
    changes. generate passes position_ids = cumsum(attention_mask) − 1, which
    is 0 at each row's first real token, and a filler at the pads: 1 in 4.57,
    whose GenerationMixin.prepare_inputs_for_generation rebuilds them at every
    step, 0 in 5.x, whose generate builds them once
    (_prepare_position_ids_for_generation) and appends one per new token;
    GPT-2 and LLaMA override neither.

    LLaMA rotates each query and key by angles proportional to its position:
    R(mθ)q · R(nθ)k = q · R((n − m)θ)k depends on the distance n − m only, so
    shifting every position of a row changes no score in exact arithmetic.
    In float32 the angles m·θ are rounded, and so the logits may move by
    rounding only. The bound (tolerances.rotary_shift_tolerance): per layer,
    16u(P + 3)·N of the largest logit (u = 2^-24, P the largest position, N
    the largest |q||k|/√d), on top of what computing the same positions in
    another batch shape may round differently (forward_tolerance: a few ulps
    per operation and sqrt(K)-grown dot products, added over the layers); the
    same shape-only bound holds the rows with generate's position_ids to the
    prompt alone. Both are worst cases, so the shifted GPT-2 must move beyond
    them.

    Claim ID: P8.2
    Question: What does left padding do to positions, with and without position_ids, under learned and rotary positions?
    问题：左侧填充对位置有什么影响？有无 position_ids、学习式位置与旋转位置各如何？
    中文：使用 generate 传入的 position_ids（每行从第一个真实 token 开始计数）时，左侧填充的行在每个真实 token 上给出与其提示单独计算相同的 logits；
    没有它们时，GPT-2 的学习式位置发生偏移、logits 改变，而 LLaMA 的旋转位置在 float32 舍入范围内给出相同的 logits。
    原因：不传 position_ids 时，解码器把各列编号为 0、1、2……，填充也计入，所以排在 k 个填充之后的提示从位置 k 开始。GPT-2 给每个 token 的嵌入
    加上一个按绝对位置学习的向量（wpe）：位置偏移后，每个真实 token 得到另一个向量，logits 随之改变，这里给出最大的 |Δ logit|
    以及最可能的下一个 token 改变了的真实 token 数。generate 传入 position_ids = cumsum(attention_mask) − 1，在每行第一个真实 token 处为 0，
    在填充处填一个占位值：4.57 为 1，其 GenerationMixin.prepare_inputs_for_generation 每一步都重建它们；5.x 为 0，其 generate 只构建一次
    （_prepare_position_ids_for_generation），之后每个新 token 追加一个；GPT-2 与 LLaMA 都没有重写它们。
    LLaMA 按与位置成正比的角度旋转每个 query 和 key：R(mθ)q · R(nθ)k = q · R((n − m)θ)k 只取决于距离 n − m，所以在精确运算中，
    把一行的所有位置平移同一个常数不会改变任何分数。在 float32 中角度 m·θ 会被舍入，因此 logits 只可能有舍入级的变化。
    误差界（tolerances.rotary_shift_tolerance）：每层为最大 logit 的 16u(P + 3)·N 倍（u = 2^-24，P 为最大位置，N 为最大的 |q||k|/√d），
    再加上以另一种批次形状计算相同位置时可能的舍入差异（forward_tolerance：每个运算几个 ulp、随 sqrt(K) 增长的点积，逐层相加）；
    使用 generate 的 position_ids 的行也以这个仅含形状差异的界与单独计算的提示比较。两者都是最坏情况，所以位置偏移的 GPT-2 必须超出它们。
    """
    a, model, tokenizer = generative.anatomy, generative.model, generative.tokenizer
    prompts = one_per_length(first_halves()[1])
    batch = generative.encode(prompts)
    mask = batch["attention_mask"]
    real = mask.bool()
    passed = positions_generate_passes(model, batch)
    with torch.no_grad():
        unshifted = model(**batch).logits
        shifted = model(**batch, position_ids=passed).logits
        alone = alone_logits(model, tokenizer, prompts, unshifted)
    expected = alone[real]
    same = tolerances.generative_tolerance(generative, expected, **batch, position_ids=passed)
    rotary = a.positions == "rotary"
    bound = tolerances.rotary_shift_tolerance(generative, expected, mask.shape[1] - 1, **batch) if rotary else None

    def moved(logits):
        return (logits[real] - expected).abs().max().item(), int((logits[real].argmax(-1) != expected.argmax(-1)).sum())

    (unshifted_delta, unshifted_changed), (shifted_delta, shifted_changed) = moved(unshifted), moved(shifted)
    evidence.table(f"{a.name} ({generative.attn_implementation}): {len(prompts)} left-padded prompts against each "
                   f"alone, at their {int(real.sum())} real tokens",
                   ["position_ids", "max |Δ logit|", "real tokens whose argmax changes", "bound"],
                   [("none: the columns 0, 1, …, pads counted", unshifted_delta, unshifted_changed,
                     f"≤ {bound['atol']:.2g}" if rotary else f"> {same['atol']:.2g}"),
                    ("generate's: cumsum(attention_mask) − 1", shifted_delta, shifted_changed, f"≤ {same['atol']:.2g}")])
    changed = (unshifted.argmax(-1) != alone.argmax(-1)) & real
    evidence.table(f"{a.name}: the position_ids generate passes, row by row",
                   ["prompt", "pads", "generate's position_ids", "argmax changes without them"],
                   [(p, int((mask[i] == 0).sum()), None if passed is None else passed[i].tolist(), int(changed[i].sum()))
                    for i, p in enumerate(prompts)])
    evidence.table("the position_id generate gives a pad", *versions.table(versions.GENERATE_PAD_POSITION,
                                                                           ["transformers"], versions.MAJOR))
    torch.testing.assert_close(shifted[real], expected, **same)
    assert passed is not None and torch.equal(passed[real], (mask.cumsum(-1) - 1)[real])
    assert set(passed[~real].tolist()) <= {versions.GENERATE_PAD_POSITION[versions.MAJOR]}
    if rotary:
        torch.testing.assert_close(unshifted[real], expected, **bound)
    else:
        assert unshifted_delta > same["atol"]
        assert unshifted_changed > 0
