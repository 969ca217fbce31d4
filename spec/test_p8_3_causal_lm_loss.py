"""Chapter P8.3 — the causal LM loss: labels equal to the inputs, shifted inside the model; -100 on prompt and padding.

The counterpart of BERT's MLM loss (chapter P3.3): there the label of a
position is the token hidden at that position; here it is the next token,
and the model makes the shift itself. The texts are corpus lines.
"""

import pytest
import torch
import torch.nn.functional as F

from bertspec.builders.default_model import read_corpus
from bertspec.proof import scope
from bertspec.proof.generation import one_per_length
from bertspec.proof.reference import IGNORE_INDEX
from bertspec.proof.tolerances import TOL

MLM_LABELS = ("an MLM's labels are not shifted: the logits at a position are scored against the label at that same "
              "position, the token its [MASK] hides, and -100 removes the position it stands at")
ROWS = 4


def lines_of_one_length(count: int = ROWS) -> list[str]:
    """The first ``count`` corpus lines as long as the first line: a batch with no padding."""
    lines = read_corpus()
    return [line for line in lines if len(line) == len(lines[0])][:count]


def prompt_and_answer_batch(generative, lines: list[str]):
    """Each line cut in half, prompt then answer and eos, right-padded as training pads; and its labels: the input ids
    with -100 on the prompt and on the padding, as a fine-tuning recipe sets them."""
    tokenizer = generative.tokenizer
    prompts = tokenizer([line[: len(line) // 2] for line in lines])["input_ids"]
    answers = tokenizer([line[len(line) // 2:] for line in lines], add_special_tokens=False)["input_ids"]
    tokenizer.padding_side = "right"
    batch = tokenizer.pad({"input_ids": [p + a + [tokenizer.eos_token_id] for p, a in zip(prompts, answers)]},
                          return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
    for row, prompt in enumerate(prompts):
        labels[row, : len(prompt)] = IGNORE_INDEX
    return batch, labels


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The causal LM loss written out: the logits at position t against the label at t + 1, -100 left out."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


@pytest.mark.carries(encoder=scope.differs_on(MLM_LABELS, "test_the_model_loss_is_cross_entropy_with_ignore_index_minus_100"),
                     encoder_decoder=scope.differs_on(
                         "T5 shifts its labels right into decoder_input_ids and scores each position's logits against "
                         "that position's label, unshifted", scope.T5_SHIFT))
@pytest.mark.counterfeits("labels_shifted_twice")
def test_a_decoders_loss_with_labels_equal_to_its_input_ids_scores_each_position_against_the_next_token(generative,
                                                                                                       evidence):
    """Given labels=input_ids, a decoder's loss is the cross-entropy of the logits at positions 0 … T−2 against the tokens at 1 … T−1: the model shifts the labels itself, so the user must not.

    A causal LM's logits at position t are its guess of token t + 1, having
    seen tokens 0 … t. transformers' ForCausalLMLoss (GPT-2 and LLaMA, 4.57
    and 5.x alike) pads the labels with one -100 at the end and drops their
    first column, so that the logits at t meet the label at t + 1 and the
    last position meets -100. So the labels are the input ids themselves; a
    user who shifts them too (labels = input_ids[:, 1:]) scores each position
    against the token two ahead (shown beside). The batch is corpus lines of
    one length, with no padding; the loss written out is the same terms
    reduced over another tensor shape, equal up to a reduction's rounding
    (TOL["loss_reduction"]).

    Claim ID: P8.3
    Question: Should a causal LM's labels be shifted before they are passed to the model?
    问题：因果语言模型的标签在传给模型之前需要移位吗？
    中文：给出 labels=input_ids 时，解码器的 loss 是位置 0 … T−2 的 logits 与位置 1 … T−1 的 token 的交叉熵：模型自己移位标签，所以用户不应再移位。
    原因：因果语言模型在位置 t 的 logits 是看过 token 0 … t 之后对 token t + 1 的猜测。transformers 的 ForCausalLMLoss（GPT-2 与 LLaMA，
    4.57 与 5.x 相同）在标签末尾补一个 -100 并去掉第一列，使位置 t 的 logits 对上位置 t + 1 的标签，最后一个位置对上 -100。
    所以标签就是输入 id 本身；用户若再移位一次（labels = input_ids[:, 1:]），每个位置就会与后面第二个 token 比较（旁边给出）。
    批次是等长的语料行，没有填充；手写的 loss 是同样的项在另一种张量形状上归约，只差一次归约的舍入（TOL["loss_reduction"]）。
    """
    tokenizer, model = generative.tokenizer, generative.model
    batch = tokenizer(lines_of_one_length(), return_tensors="pt")
    ids = batch["input_ids"]
    with torch.no_grad():
        output = model(**batch, labels=ids)
        user_shifted = model(**batch, labels=F.pad(ids[:, 1:], (0, 1), value=IGNORE_INDEX)).loss
    by_hand = next_token_loss(output.logits, ids)
    unshifted = F.cross_entropy(output.logits.flatten(0, 1), ids.flatten())
    evidence.table(f"{generative.anatomy.name}: the loss of {ids.shape[0]} corpus lines of {ids.shape[1]} tokens",
                   ["loss", "value", "|Δ| from the model's"], [
                       ("model(input_ids, labels=input_ids)", output.loss, 0.0),
                       ("by hand: logits[:, :-1] against input_ids[:, 1:]", by_hand, (by_hand - output.loss).abs()),
                       ("by hand, unshifted: logits against input_ids", unshifted, (unshifted - output.loss).abs()),
                       ("model(labels=input_ids shifted by the user)", user_shifted, (user_shifted - output.loss).abs()),
                   ])
    guesses = output.logits[0].argmax(-1)
    evidence.table("row 0: what each position's logits are scored against",
                   ["position", "input token", "scored against", "the model's guess"],
                   [(t, tokenizer.decode(int(ids[0, t])), tokenizer.decode(int(ids[0, t + 1])) if t + 1 < ids.shape[1] else "—",
                     tokenizer.decode(int(guesses[t]))) for t in range(min(ids.shape[1], 12))])
    torch.testing.assert_close(output.loss, by_hand, **TOL["loss_reduction"])


@pytest.mark.carries(encoder=scope.differs_on(MLM_LABELS, "test_only_labelled_positions_receive_gradient_on_the_logits"),
                     encoder_decoder=scope.differs_on(
                         "T5's loss is not shifted: -100 leaves out the logits at its own position, and the decoder's "
                         "input one position later becomes pad", scope.T5_SHIFT))
@pytest.mark.counterfeits("labels_shifted_twice", "causal_loss_counting_ignored_positions")
def test_minus_100_on_prompt_and_padding_leaves_them_out_of_a_decoders_loss_and_gives_their_preceding_logits_exactly_zero_gradient(
        generative, evidence):
    """With labels -100 on the prompt and the padding, a decoder's loss is the mean over the labelled next tokens only, and the logits at every position whose next label is -100 get exactly zero gradient.

    Corpus lines of four lengths (the first line of each of the four shortest
    lengths) are each cut in half: a prompt, then its answer and eos,
    right-padded as the decoders were trained; the labels are the input ids
    with -100 on the prompt and on the padding, found by attention_mask
    (GPT-2's pad is its eos: by id, the real eos would be hidden too). The
    loss reads position t's logits only where label t + 1 is not -100, so
    the last prompt token's logits (which predict the answer's first token)
    count, the eos position's logits (whose next label is padding) and the
    prompt's earlier ones do not: their gradient is 0.0, not small, and at
    each of the n counted positions it is
    (softmax − one_hot(next label)) / n, within one ulp of 1.0
    (TOL["softmax_gradient"]). This is the causal counterpart of BERT's
    "gradient only from labelled positions", moved one position left. The
    loss written out over the labelled next tokens equals the model's up to a
    reduction's rounding (TOL["loss_reduction"]). Shown beside: labelling the
    padding too adds one target per pad, each the pad token; GPT-2's pad is
    its eos, so such labels teach it eos after eos.

    Claim ID: P8.3
    Question: What does -100 on prompt and padding tokens do to a decoder's loss and gradient?
    问题：在提示和填充 token 上标 -100，对解码器的 loss 和梯度有什么影响？
    中文：提示与填充的标签为 -100 时，解码器的 loss 只对带标签的下一个 token 求平均，而下一个标签为 -100 的每个位置的 logits 梯度严格为 0。
    原因：取四种长度的语料行（最短的四种长度各取第一行），每行切成两半：提示，然后是答案与 eos，按解码器训练时的方式在右侧填充；
    标签是输入 id，在提示和填充上为 -100，填充按 attention_mask 找出（GPT-2 的填充就是 eos：按 id 找会把真实的 eos 也隐藏）。
    loss 只在标签 t + 1 不是 -100 时读取位置 t 的 logits，所以提示最后一个 token 的 logits（预测答案的第一个 token）计入，eos 位置的 logits（下一个标签是填充）
    和提示中更早位置的 logits 不计入：它们的梯度是 0.0，而不是很小；在计入的 n 个位置上梯度为 (softmax − one_hot(下一个标签)) / n，
    误差在 1.0 的一个 ulp 以内（TOL["softmax_gradient"]）。这是 BERT“只有带标签的位置产生梯度”在因果模型上的对应，左移了一个位置。
    在带标签的下一个 token 上手写的 loss 与模型的 loss 只差一次归约的舍入（TOL["loss_reduction"]）。旁边给出：若填充也带标签，
    每个填充位置多一个目标，都是填充 token；GPT-2 的填充就是 eos，这样的标签会教它在 eos 之后预测 eos。
    """
    tokenizer, model = generative.tokenizer, generative.model
    batch, labels = prompt_and_answer_batch(generative, one_per_length(read_corpus())[:ROWS])
    output = model(**batch, labels=labels)
    (logits_grad,) = torch.autograd.grad(output.loss, output.logits)
    logits = output.logits.detach()
    scored = torch.zeros_like(labels, dtype=torch.bool)
    scored[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    n = int(scored.sum())
    targets = torch.zeros_like(labels)
    targets[:, :-1] = labels[:, 1:].clamp(min=0)
    expected = (logits.softmax(-1) - F.one_hot(targets, logits.shape[-1])) / n
    by_hand = next_token_loss(logits, labels)
    padding_labelled = batch["input_ids"].clone()
    padding_labelled[(labels == IGNORE_INDEX) & (batch["attention_mask"] == 1)] = IGNORE_INDEX
    with torch.no_grad():
        with_padding = model(**batch, labels=padding_labelled).loss
    pads = int((batch["attention_mask"] == 0).sum())
    norms = logits_grad.norm(dim=-1)
    evidence.table(f"{generative.anatomy.name}: {labels.shape[0]} lines, prompt and padding labelled -100",
                   ["loss", "value", "labelled next tokens"], [
                       ("model(labels)", output.loss, n),
                       ("by hand: mean over the labelled next tokens", by_hand, n),
                       (f"padding labelled too (each pad a target {tokenizer.pad_token!r})", with_padding, n + pads),
                   ])
    evidence.table("row 0: |d loss / d logits| per position", ["position", "token", "label", "next label", "|gradient|"],
                   [(t, tokenizer.decode(int(batch["input_ids"][0, t])), int(labels[0, t]),
                     int(labels[0, t + 1]) if t + 1 < labels.shape[1] else "—", norms[0, t])
                    for t in range(min(labels.shape[1], 12))])
    torch.testing.assert_close(output.loss.detach(), by_hand, **TOL["loss_reduction"])
    assert torch.equal(logits_grad[~scored], torch.zeros_like(logits_grad[~scored]))
    assert bool((norms[scored] > 0).all())
    torch.testing.assert_close(logits_grad[scored], expected[scored], **TOL["softmax_gradient"])
