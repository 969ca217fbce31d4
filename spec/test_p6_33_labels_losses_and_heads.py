"""Chapter P6.33–P6.43 — labels, losses and task heads, as learners asked about them in public threads: the loss that
the labels' dtype and num_labels choose, exp(MLM loss), ELECTRA's discriminator, the QA and multiple-choice heads,
padding token labels, which representation each family's classifier reads, why sentence vectors all look alike, what
ignore_mismatched_sizes and an untied decoder initialise. Task heads are random on a pre-trained checkpoint, so each
claim is about the mechanism (shapes, the loss formula, which positions and rows count), never about prediction
quality; heads load under the spec's seed. Where 4.x and 5.x differ, bertspec/models/versions.py holds what each does.
"""

import math

import pytest
import torch
import torch.nn.functional as F
import transformers

from bertspec.models import loading, versions
from bertspec.proof import scope
from bertspec.proof.compare import beyond, max_diff
from bertspec.proof.examples import answer_labels, masked_batch
from bertspec.proof.reference import IGNORE_INDEX
from bertspec.proof.tolerances import TOL
from conftest import SEED

# A task head's loss, freezing, an optimizer's groups, initialisation, dropout knobs: no attention kernel decides
# the answer, so each claim runs on one implementation (bertspec.plugin).
pytestmark = pytest.mark.one_implementation


def seeded(bert, task: str, **overrides) -> loading.Loaded:
    """The checkpoint under test in its family's class for ``task`` with config ``overrides`` (num_labels=3, ...),
    loaded under the spec's seed as ``as_class`` loads, so the head it initialises is the same every run."""
    torch.manual_seed(SEED)
    return loading.load_class(bert.folder, bert.anatomy.class_name(task), bert.attn_implementation, bert.device,
                              **overrides)


def fresh_problem_type(model) -> None:
    """Skip when the checkpoint's config already fixes problem_type: then no call decides it."""
    if model.config.problem_type is not None:
        pytest.skip(f"this checkpoint's config fixes problem_type={model.config.problem_type!r}: no call decides it")


# ---- P6.33, P6.34 which loss a sequence classifier computes ----

def test_int_labels_give_cross_entropy_float_multi_hot_labels_give_bce_and_the_first_call_writes_problem_type_for_good(bert, evidence):
    """With num_labels > 1, int labels give cross-entropy and float multi-hot labels BCEWithLogits, each recomputed by hand; the first call writes its choice into config.problem_type, where it stays.

    ``problem_type`` (added by PR #11012) is None in a checkpoint that never said otherwise. The first forward with
    labels then decides from num_labels and the labels' dtype — long or int: single-label cross-entropy over the
    classes; anything else (float): multi-label ``BCEWithLogitsLoss``, one independent sigmoid per class — and
    *writes* that into the config. So multi-label classification needs float multi-hot labels (or
    ``problem_type="multi_label_classification"``); float class indices [2., 0.] are taken as multi-hot rows and fail
    on the shape; and once a call has written "single_label_classification", later multi-hot labels are flattened as
    class ids and refused: the choice is not made again.

    Claim ID: P6.33
    Question: How do I do multi-label classification with BertForSequenceClassification, and why did float labels change the loss?
    问题：BertForSequenceClassification 怎样做多标签分类？为什么传 float 标签后 loss 变了？
    中文：num_labels > 1 时，int 标签得到交叉熵，float 多热（multi-hot）标签得到 BCEWithLogits，二者都经手工重算；第一次调用把它的选择写进 config.problem_type，此后一直保留。
    原因：从未另行设定的 checkpoint 中 problem_type（由 PR #11012 加入）为 None。第一次带标签的前向据 num_labels 与标签的 dtype 决定——
    long 或 int：对各类别的单标签交叉熵；其他（float）：多标签 BCEWithLogitsLoss，每个类别一个独立的 sigmoid——并把结果写进 config。
    所以多标签分类需要 float 多热标签（或 problem_type="multi_label_classification"）；float 的类别下标 [2., 0.] 被当作多热行，
    因形状不符而报错；而一旦某次调用写下了 "single_label_classification"，之后的多热标签会被展平成类别下标而被拒绝：选择不会再做一次。
    Asked in: huggingface/transformers#11012, huggingface/transformers#12014, huggingface/transformers#12015, huggingface/transformers#14557, huggingface/transformers#10416, stockmarkteam/bert-book#56, ThilinaRajapakse/simpletransformers#835, ThilinaRajapakse/simpletransformers#101, appvision-ai/fast-bert#188
    """
    model = seeded(bert, "ForSequenceClassification", num_labels=3).model
    fresh_problem_type(model)
    batch = bert.example()
    ids = torch.tensor([2, 0], device=bert.device)
    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], device=bert.device)

    def call(labels, reset=True):
        if reset:
            model.config.problem_type = None
        with torch.no_grad():
            out = model(**batch.as_kwargs(), labels=labels)
        return out, model.config.problem_type

    (single, single_type), (multi, multi_type) = call(ids), call(multi_hot)
    logits = single.logits
    ce, bce = F.cross_entropy(logits, ids), F.binary_cross_entropy_with_logits(logits, multi_hot)
    refused = {}
    for name, labels, reset in (("float class ids [2., 0.]", ids.float(), True), ("float multi-hot after an int call", multi_hot, False)):
        call(ids)  # writes single_label_classification; a call without reset keeps it
        with pytest.raises(ValueError) as error:
            call(labels, reset)
        refused[name] = (model.config.problem_type, str(error.value).splitlines()[0][:90])
    evidence.table("one classifier (num_labels=3, the spec's seed), the same logits",
                   ["labels", "problem_type", "model loss", "by hand", "the other loss on these logits"],
                   [("int class ids [2, 0]", single_type, single.loss, f"cross-entropy {ce:.6f}",
                     f"BCE on one-hot {F.binary_cross_entropy_with_logits(logits, F.one_hot(ids, 3).to(logits.dtype)):.6f}"),
                    ("float multi-hot", multi_type, multi.loss, f"BCE {bce:.6f}",
                     f"cross-entropy {F.cross_entropy(logits, multi_hot):.6f}"),
                    *((name, kind, f"ValueError: {message}", "—", "—") for name, (kind, message) in refused.items())])
    assert (single_type, multi_type) == ("single_label_classification", "multi_label_classification")
    assert [kind for kind, _ in refused.values()] == ["multi_label_classification", "single_label_classification"]
    torch.testing.assert_close(single.loss, ce, **TOL["loss_reduction"])
    torch.testing.assert_close(multi.loss, bce, **TOL["loss_reduction"])
    assert beyond(multi.loss, F.cross_entropy(logits, multi_hot), TOL["loss_reduction"])


def test_num_labels_1_is_regression_the_loss_is_the_mean_squared_error_of_the_one_logit_with_no_sigmoid(bert, evidence):
    """With num_labels=1 the classifier regresses: its loss is mean((logit − y)²) on the raw logit, even for 0/1 int labels, and not a binary cross-entropy.

    The first call with labels sees num_labels == 1 and writes problem_type "regression" whatever the labels' dtype:
    ``MSELoss`` between the squeezed single logit and the label, no sigmoid anywhere (what STS-B needs). A binary task
    therefore wants num_labels=2 and cross-entropy; with num_labels=1 and 0/1 labels it silently trains a regression
    toward 0 and 1. Computed here by hand beside the BCEWithLogits a binary reading would expect.

    Claim ID: P6.34
    Question: With num_labels=1, is BertForSequenceClassification doing regression or binary classification?
    问题：num_labels=1 时 BertForSequenceClassification 做的是回归还是二分类？
    中文：num_labels=1 时分类器做回归：它的 loss 是原始 logit 上的 mean((logit − y)²)，即使标签是 0/1 的 int 也如此，而不是二元交叉熵。
    原因：第一次带标签的调用看到 num_labels == 1，便不论标签 dtype 写下 problem_type "regression"：对压缩后的单个 logit 与标签算 MSELoss，
    全程没有 sigmoid（这正是 STS-B 所需）。所以二分类任务应当用 num_labels=2 与交叉熵；用 num_labels=1 和 0/1 标签则会悄悄地训练一个
    朝 0 和 1 回归的模型。这里手工计算它，并与二分类解读所期望的 BCEWithLogits 并列。
    Asked in: huggingface/transformers#1706, huggingface/transformers#7496, huggingface/transformers#1541, huggingface/transformers#11178, mosaicml/composer#1018, mosaicml/composer#1495
    """
    model = seeded(bert, "ForSequenceClassification", num_labels=1).model
    fresh_problem_type(model)
    batch = bert.example()
    rows = []
    for name, labels in (("float scores [0.8, 3.5]", torch.tensor([0.8, 3.5])), ("int labels [1, 0]", torch.tensor([1, 0]))):
        model.config.problem_type = None
        with torch.no_grad():
            out = model(**batch.as_kwargs(), labels=labels.to(bert.device))
        y = labels.to(bert.device, out.logits.dtype)
        mse = ((out.logits.squeeze(-1) - y) ** 2).mean()
        rows.append((name, model.config.problem_type, out.loss, mse,
                     F.binary_cross_entropy_with_logits(out.logits.squeeze(-1), y.clamp(0, 1))))
    evidence.table("num_labels=1: logits of shape (B, 1)", ["labels", "problem_type written", "model loss",
                                                            "mean((logit − y)²) by hand", "BCEWithLogits (the binary reading)"], rows)
    for _, problem_type, loss, mse, bce in rows:
        assert problem_type == "regression"
        torch.testing.assert_close(loss, mse, **TOL["loss_reduction"])
    assert beyond(rows[1][2], rows[1][4], TOL["loss_reduction"]), "0/1 labels with num_labels=1 are not a BCE task"


# ---- P6.35 exp(MLM loss) is not a perplexity comparable with GPT-2's ----

def masked_log_likelihoods(bert, ids: list[int], left_only: bool) -> torch.Tensor:
    """log p(token i | context) for each content token i of one encoded sentence ([CLS] ... [SEP]), token i replaced by
    [MASK]: the context is every other token, or (left_only) only the tokens before it, as a left-to-right LM sees."""
    mask_id, pad_id = bert.tokenizer.mask_token_id, bert.tokenizer.pad_token_id
    rows = [ids[:i] + [mask_id] + (ids[-1:] if left_only else ids[i + 1:]) for i in range(1, len(ids) - 1)]
    width = max(map(len, rows))
    input_ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], device=bert.device)
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=bert.device)
    with torch.no_grad():
        logits = bert.model(**bert.batch(input_ids, attention).as_kwargs()).logits
    at = torch.arange(1, len(ids) - 1, device=bert.device)
    targets = torch.tensor(ids[1:-1], device=bert.device)
    return logits[at - 1, at].log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


def test_exp_of_the_mlm_loss_averages_over_the_masked_positions_alone_and_is_neither_a_pseudo_perplexity_nor_gpt2s(mlm, evidence):
    """exp(MLM loss) is exp of the mean cross-entropy over the masked positions alone, each seen with context on both sides: it differs from the pseudo-perplexity over every token and from a left-context perplexity like GPT-2's.

    BertForMaskedLM's loss averages over the positions labelled for it — the [MASK]s, about 15% of a pre-training
    batch — so its exp is a number about those positions, each predicted from every other token. A sentence score
    needs the pseudo-log-likelihood: mask each token in turn and add up log p(token | the rest). GPT-2's perplexity is
    yet another quantity: each token given only the tokens before it. The three are computed here on the same
    sentences, the last by giving BERT the left context alone; they differ, so "DistilBERT's 6.12 is lower than
    GPT-2's" compares different things.

    Claim ID: P6.35
    Question: Is exp(MLM loss) BERT's perplexity, comparable with GPT-2's?
    问题：exp(MLM loss) 是 BERT 的困惑度吗？能和 GPT-2 的比吗？
    中文：exp(MLM loss) 只是对被遮盖位置的平均交叉熵取 exp，每个位置都看到两侧的上下文：它既不同于对每个 token 的伪困惑度，也不同于 GPT-2 那样只看左侧上下文的困惑度。
    原因：BertForMaskedLM 的 loss 只对带标签的位置求平均——即 [MASK]，预训练 batch 中约 15%——所以它的 exp 只是关于这些位置的数，
    每个位置由其余所有 token 预测。句子的得分需要伪对数似然：依次遮盖每个 token，累加 log p(token | 其余)。GPT-2 的困惑度又是另一个量：
    每个 token 只以它之前的 token 为条件。这里在同样的句子上计算这三者，最后一个通过只给 BERT 左侧上下文得到；它们互不相同，
    所以"DistilBERT 的 6.12 比 GPT-2 低"比较的是不同的东西。
    Asked in: huggingface/transformers#3927, huggingface/transformers#740, explosion/spaCy#6872, nyu-dl/bert-gen#2, SocialComplexityLab/life2vec#8
    """
    batch = masked_batch(mlm)
    labels = answer_labels(mlm, batch)
    with torch.no_grad():
        out = mlm.model(**batch.as_kwargs(), labels=labels)
    counted = labels != IGNORE_INDEX
    by_hand = F.cross_entropy(out.logits[counted], labels[counted])
    sentences = [mlm.tokenizer(text)["input_ids"] for text in mlm.texts.filled]
    two_sided = torch.cat([masked_log_likelihoods(mlm, ids, left_only=False) for ids in sentences])
    left = torch.cat([masked_log_likelihoods(mlm, ids, left_only=True) for ids in sentences])
    ppl = {"exp(MLM loss)": out.loss.exp(), "pseudo-perplexity, every token, both sides": (-two_sided.mean()).exp(),
           "left-context perplexity (GPT-2's kind)": (-left.mean()).exp()}
    positions = {"exp(MLM loss)": int(counted.sum()), "pseudo-perplexity, every token, both sides": len(two_sided),
                 "left-context perplexity (GPT-2's kind)": len(left)}
    evidence.table("three numbers called perplexity, on the same sentences", ["quantity", "positions averaged", "value"],
                   [(name, positions[name], value) for name, value in ppl.items()])
    torch.testing.assert_close(out.loss, by_hand, **TOL["loss_reduction"])
    assert positions["exp(MLM loss)"] < positions["pseudo-perplexity, every token, both sides"]
    values = list(ppl.values())
    for i, a in enumerate(values):
        for b in values[i + 1:]:
            assert beyond(a, b, TOL["loss_reduction"])


# ---- P6.36 ELECTRA's discriminator: one logit per token, > 0 means "replaced" ----

@pytest.mark.across_families
def test_electras_discriminator_gives_one_logit_per_token_positive_means_replaced_and_its_loss_skips_padding(bert, as_class, evidence):
    """ElectraForPreTraining gives one logit per token, not a vocabulary's scores: logit > 0 means "replaced" (label 1), and its loss is BCEWithLogits over the non-padded tokens alone.

    ELECTRA pre-trains a discriminator that tells, at every token, whether the generator replaced it. Its head is
    dense → activation → ``Linear(hidden, 1)``: logits of shape (B, T). The labels' convention (transformers'
    docstring on both versions) is 1 = replaced, 0 = original, and the loss is ``BCEWithLogitsLoss`` over the
    positions with attention_mask 1, so sigmoid(logit) is the probability of "replaced": a token's BCE toward label 1
    is below log 2 exactly where its logit is positive. Padded positions' labels do not matter. This is the mechanism
    only: the bundled ELECTRA is a generator, so its discriminator head is initialised under the spec's seed, and
    which tokens it flags says nothing about the text.

    Claim ID: P6.36
    Question: How do I read ElectraForPreTraining's output — which tokens does it think were replaced?
    问题：ElectraForPreTraining 的输出怎么读？它认为哪些 token 被替换了？
    中文：ElectraForPreTraining 对每个 token 给出一个 logit，而不是整个词表的分数：logit > 0 表示"被替换"（标签 1），它的 loss 只是非填充 token 上的 BCEWithLogits。
    原因：ELECTRA 预训练一个判别器，在每个 token 上判断它是否被生成器替换过。它的头是 dense → 激活 → Linear(hidden, 1)：logits 形状为 (B, T)。
    标签的约定（两个版本中 transformers 的 docstring）是 1 = 被替换，0 = 原样；loss 是 attention_mask 为 1 的位置上的 BCEWithLogitsLoss，
    所以 sigmoid(logit) 是"被替换"的概率：一个 token 朝标签 1 的 BCE 恰在其 logit 为正处小于 log 2。填充位置的标签无关紧要。
    这里只验证机制：自带的 ELECTRA 是生成器，其判别器头按规范的种子初始化，它标出哪些 token 与文本无关。
    Asked in: huggingface/transformers#10442, google-research/electra#16, google-research/electra#49
    """
    if bert.anatomy.family != "electra":
        scope.not_applicable(bert, "only ELECTRA pre-trains a discriminator of replaced tokens (ElectraForPreTraining)")
    assert "1 indicates the token was replaced" in transformers.ElectraForPreTraining.forward.__doc__
    loaded = as_class("ElectraForPreTraining", bert.attn_implementation)
    batch = bert.example()
    real = batch.attention_mask == 1
    replaced = torch.zeros_like(batch.input_ids)
    replaced[:, 1:3] = 1
    input_ids = torch.where(replaced == 1, batch.input_ids.flip(1), batch.input_ids)  # tokens from elsewhere in the row
    inputs = {**batch.as_kwargs(), "input_ids": input_ids}
    runs = {}
    for pad_label in (0, 1):
        labels = torch.where(real, replaced, torch.full_like(replaced, pad_label))
        with torch.no_grad():
            runs[pad_label] = (labels, loaded.model(**inputs, labels=labels))
    (labels, out), (_, out_pad1) = runs[0], runs[1]
    logits = out.logits
    by_hand = F.binary_cross_entropy_with_logits(logits[real], labels[real].float())
    every_position = F.binary_cross_entropy_with_logits(logits, runs[1][0].float())
    toward_replaced = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    discriminator = [k for k in loaded.missing if k.startswith("discriminator_predictions.")]
    evidence.table("row 0", ["token", "label (1 = replaced)", "logit", "flagged (logit > 0)"],
                   [(bert.token(t), int(lab), lg, bool(lg > 0)) for t, lab, lg in zip(input_ids[0], labels[0], logits[0])][:12])
    evidence.table("the loss", ["logits shape", "model loss", "BCE over non-padded tokens", "BCE over every position",
                                "loss with padded labels 1", "discriminator head from the checkpoint"],
                   [(tuple(logits.shape), out.loss, by_hand, every_position, out_pad1.loss, not discriminator)])
    assert logits.shape == batch.input_ids.shape
    torch.testing.assert_close(out.loss, by_hand, **TOL["loss_reduction"])
    torch.testing.assert_close(out_pad1.loss, out.loss, **TOL["exact"])
    assert beyond(every_position, by_hand, TOL["loss_reduction"]), "padded positions must change a BCE that counts them"
    assert torch.equal(toward_replaced < math.log(2), logits > 0)


# ---- P6.37 question answering: start and end logits, and the loss ----

def test_the_qa_loss_is_the_mean_of_two_cross_entropies_and_answers_outside_the_input_are_clamped_and_ignored(bert, as_class, evidence):
    """The QA head gives every token a start and an end logit, (B, T) each; the loss is the mean of the start and end cross-entropies, and an answer position outside the input is clamped to T and ignored.

    ``...ForQuestionAnswering`` applies its head to every token and splits the two outputs into start_logits and
    end_logits. They are scored independently: cross-entropy of the start over the T positions, of the end over the T
    positions, and their mean — not one softmax over (start, end) spans. When truncation cut the answer off, its
    positions exceed the input: transformers clamps them to T and passes ``ignore_index=T``, so that example leaves
    the loss (not counted at the last token), and a batch whose every answer was cut off gives NaN, a mean over
    nothing.

    Claim ID: P6.37
    Question: What are BertForQuestionAnswering's start_logits and end_logits, and how is the QA loss computed?
    问题：BertForQuestionAnswering 的 start_logits/end_logits 是什么？QA 的 loss 怎么算？
    中文：QA 头给每个 token 一个起点 logit 和一个终点 logit，各为 (B, T)；loss 是起点与终点两个交叉熵的平均，落在输入之外的答案位置被截到 T 并忽略。
    原因：...ForQuestionAnswering 把它的头作用在每个 token 上，再把两个输出拆成 start_logits 与 end_logits。二者独立打分：起点在 T 个位置上的交叉熵、
    终点在 T 个位置上的交叉熵，再取平均——而不是对 (起点, 终点) 区间做一个 softmax。截断把答案切掉时，它的位置超出输入：transformers 把它们截到 T
    并传入 ignore_index=T，所以该样本退出 loss（而不是算在最后一个 token 上）；一个所有答案都被切掉的 batch 得到 NaN，即对空集求平均。
    Asked in: google-research/bert#177, huggingface/transformers#2629, huggingface/transformers#367, huggingface/transformers#459, huggingface/transformers#1209, huggingface/transformers#147, ThilinaRajapakse/simpletransformers#166
    """
    model = as_class(bert.anatomy.class_name("ForQuestionAnswering"), bert.attn_implementation).model
    question, context = bert.texts.pair
    batch = bert.encode([question, question], [context, bert.texts.short])
    T = batch.input_ids.shape[1]

    def qa(start, end):
        with torch.no_grad():
            return model(**batch.as_kwargs(), start_positions=torch.tensor(start, device=bert.device),
                         end_positions=torch.tensor(end, device=bert.device))

    out, cut_off = qa([1, T + 3], [2, T + 5]), qa([T + 3, T + 4], [T + 5, T + 6])
    s, e = out.start_logits, out.end_logits
    by_hand = (F.cross_entropy(s[:1], s.new_tensor([1]).long()) + F.cross_entropy(e[:1], e.new_tensor([2]).long())) / 2
    at_last = (F.cross_entropy(s, torch.tensor([1, T - 1], device=bert.device))
               + F.cross_entropy(e, torch.tensor([2, T - 1], device=bert.device))) / 2
    spans = (s[:, :, None] + e[:, None, :]).flatten(1).log_softmax(-1)
    one_softmax = -spans[0, 1 * T + 2]
    evidence.table(f"row 0's answer at tokens 1–2, row 1's cut off (positions beyond T = {T})",
                   ["quantity", "value"],
                   [("start_logits / end_logits shape", f"{tuple(s.shape)} / {tuple(e.shape)}"), ("model loss", out.loss),
                    ("by hand: (CE(start) + CE(end)) / 2 over row 0", by_hand),
                    ("row 1 counted at the last token instead", at_last), ("one softmax over (start, end) spans", one_softmax),
                    ("every answer cut off", cut_off.loss)])
    assert s.shape == e.shape == batch.input_ids.shape
    torch.testing.assert_close(out.loss, by_hand, **TOL["loss_reduction"])
    assert beyond(at_last, by_hand, TOL["loss_reduction"]) and beyond(one_softmax, by_hand, TOL["loss_reduction"])
    assert torch.isnan(cut_off.loss)


# ---- P6.38 multiple choice: (batch, choices, seq), one score per choice ----

def test_multiple_choice_scores_each_question_choice_pair_alone_with_one_shared_score_and_softmaxes_over_the_choices(bert, as_class, evidence):
    """BertForMultipleChoice takes (batch, choices, seq), scores each ([CLS] question [SEP] choice [SEP]) on its own with one shared Linear(hidden, 1), and its loss is cross-entropy over the choices.

    The inputs are flattened to (batch · choices, seq), so every pair runs through the encoder as its own sequence;
    the family's sequence summary (BERT's pooler) goes through a classifier with ONE output, and the scores are viewed
    back as (batch, choices) and given cross-entropy over the choices. Hence a choice's score is the score of its pair
    run alone, and reordering the choices reorders the scores: nothing is tied to a choice's index, and the choices
    never see each other (not one sequence with every option in it).

    Claim ID: P6.38
    Question: How must inputs for BertForMultipleChoice be shaped, and how are the choices scored?
    问题：BertForMultipleChoice 的输入应是什么形状？各选项如何打分？
    中文：BertForMultipleChoice 接收 (batch, choices, seq)，用同一个共享的 Linear(hidden, 1) 分别给每个 ([CLS] 问题 [SEP] 选项 [SEP]) 打分，loss 是各选项上的交叉熵。
    原因：输入被展平为 (batch · choices, seq)，所以每个句对作为独立序列经过 encoder；该家族的序列摘要（BERT 的 pooler）进入只有一个输出的分类器，
    分数再还原成 (batch, choices)，对各选项做交叉熵。因此一个选项的分数就是它的句对单独运行的分数，调换选项顺序分数也随之调换：
    没有任何东西与选项的序号绑定，各选项彼此也看不到（不是把所有选项放进一个序列）。
    Asked in: huggingface/transformers#7701, huggingface/transformers#11385, huggingface/transformers#1789, huggingface/transformers#90, huggingface/transformers#488, huggingface/transformers#1954, google-research/bert#506
    """
    model = as_class(bert.anatomy.class_name("ForMultipleChoice"), bert.attn_implementation).model
    question, first = bert.texts.pair
    choices = [first, bert.texts.short, bert.texts.filled[0]]

    def scores(options, label=None):
        batch = bert.encode([question] * len(options), options)
        kwargs = {k: v.view(1, len(options), -1) for k, v in batch.as_kwargs().items()}
        with torch.no_grad():
            return model(**kwargs, labels=None if label is None else torch.tensor([label], device=bert.device))

    out = scores(choices, label=1)
    alone = torch.cat([scores([c]).logits[0] for c in choices])
    reordered = scores(choices[::-1]).logits[0]
    by_hand = F.cross_entropy(out.logits, torch.tensor([1], device=bert.device))
    per_choice_bce = F.binary_cross_entropy_with_logits(out.logits[0], torch.tensor([0.0, 1.0, 0.0], device=bert.device))
    evidence.table("one question, three choices (label 1)", ["choice", "score in the batch", "score of the pair alone",
                                                             "score with the choices reversed"],
                   [(c, out.logits[0, k], alone[k], reordered[len(choices) - 1 - k]) for k, c in enumerate(choices)])
    evidence.table("the loss", ["logits shape", "model loss", "CE over the choices by hand", "a sigmoid per choice (BCE)"],
                   [(tuple(out.logits.shape), out.loss, by_hand, per_choice_bce)])
    assert out.logits.shape == (1, len(choices))
    torch.testing.assert_close(out.logits[0], alone, **TOL["float32_kernels"])
    torch.testing.assert_close(reordered, out.logits[0].flip(0), **TOL["float32_kernels"])
    torch.testing.assert_close(out.loss, by_hand, **TOL["loss_reduction"])
    assert beyond(per_choice_bce, by_hand, TOL["loss_reduction"])


# ---- P6.39 padding token-classification labels with -100 ----

def test_the_token_classification_collator_pads_labels_with_minus_100_so_padding_never_enters_the_loss_as_class_0_would(bert, as_class, evidence):
    """DataCollatorForTokenClassification pads labels with -100 where it pads the inputs, so the loss is the mean over real labelled tokens; padding labels with 0 counts every pad as class 0.

    Token labels are per token, so a batch of sentences of different lengths needs its labels padded with the inputs.
    ``DataCollatorWithPadding`` pads only the tokenizer's fields and fails on ragged labels ("Unable to create
    tensor"); ``DataCollatorForTokenClassification`` pads them on the tokenizer's padding side with
    ``label_pad_token_id=-100``, the ignore index of the loss. Padding with 0 instead makes every pad a token of class
    0 (often "O"): the loss counts them and training pushes padded positions toward that class.

    Claim ID: P6.39
    Question: How are token-classification labels padded in a batch, and why -100 and not 0?
    问题：token 分类的标签在 batch 中如何 padding？为什么用 -100 而不是 0？
    中文：DataCollatorForTokenClassification 在填充输入的地方用 -100 填充标签，所以 loss 是真实带标签 token 上的平均；用 0 填充标签则把每个填充位置算作类别 0。
    原因：token 标签是逐 token 的，所以长度不同的句子组成 batch 时，标签要随输入一起填充。DataCollatorWithPadding 只填充分词器的字段，
    遇到长度不齐的标签会失败（"Unable to create tensor"）；DataCollatorForTokenClassification 在分词器的填充一侧用 label_pad_token_id=-100
    填充标签，这正是 loss 的 ignore index。改用 0 填充会让每个填充位置成为类别 0（常是 "O"）的 token：loss 计入它们，训练会把填充位置推向该类别。
    Asked in: huggingface/transformers#8274, huggingface/transformers#8116, huggingface/transformers#19940, huggingface/transformers#21639, huggingface/transformers#13057, huggingface/transformers#15553
    """
    tok = bert.tokenizer
    model = as_class(bert.anatomy.class_name("ForTokenClassification"), bert.attn_implementation).model
    features = []
    for text in (bert.texts.short, bert.texts.filled[0]):
        ids = tok(text)["input_ids"]
        features.append({"input_ids": ids, "labels": [IGNORE_INDEX] + [i % 2 for i in range(len(ids) - 2)] + [IGNORE_INDEX]})
    collated = {name: transformers.DataCollatorForTokenClassification(tok, label_pad_token_id=pad)(features)
                for name, pad in (("-100 (the default)", IGNORE_INDEX), ("0", 0))}
    with pytest.raises(ValueError, match="Unable to create tensor"):
        transformers.DataCollatorWithPadding(tok)(features)
    losses = {}
    for name, batch in collated.items():
        with torch.no_grad():
            losses[name] = model(**{k: v.to(bert.device) for k, v in batch.items()})
    batch = collated["-100 (the default)"]
    labels, padded = batch["labels"].to(bert.device), batch["attention_mask"].to(bert.device) == 0
    counted = labels != IGNORE_INDEX
    by_hand = F.cross_entropy(losses["-100 (the default)"].logits[counted], labels[counted])
    evidence.table("the shorter row, collated", ["token", "label padded with -100", "label padded with 0"],
                   [(bert.token(t), a, b) for t, a, b in zip(batch["input_ids"][0], batch["labels"][0],
                                                             collated["0"]["labels"][0])])
    evidence.table("the loss", ["labels padded with", "positions counted", "loss"],
                   [(name, int((b["labels"] != IGNORE_INDEX).sum()), losses[name].loss) for name, b in collated.items()]
                   + [("by hand: mean over the real labelled tokens", int(counted.sum()), by_hand)])
    assert bool(padded.any()) and bool((labels[padded] == IGNORE_INDEX).all())
    torch.testing.assert_close(losses["-100 (the default)"].loss, by_hand, **TOL["loss_reduction"])
    assert beyond(losses["0"].loss, by_hand, TOL["loss_reduction"])


# ---- P6.40 which representation each family's sequence classifier reads ----

# family -> the steps from the pooled first token (or masked mean) to the logits, each a module path inside the
# family's ...ForSequenceClassification or a function; read in modeling_<family>.py of 4.57.6 and 5.25 (the same).
# BERT and ALBERT reuse the base model's pooler (pre-trained for NSP / SOP); the others build no pooler and put a
# head of their own on the first token's state.
SEQUENCE_HEADS = {
    "bert": ("bert.pooler.dense", torch.tanh, "classifier"),
    "albert": ("albert.pooler", torch.tanh, "classifier"),
    "roberta": ("classifier.dense", torch.tanh, "classifier.out_proj"),
    "electra": ("classifier.dense", "classifier.activation", "classifier.out_proj"),
    "distilbert": ("pre_classifier", torch.relu, "classifier"),
    "modernbert": ("head", "classifier"),  # head: dense -> act -> norm; pooled as config.classifier_pooling says
}
POOLER_FAMILIES = {"bert", "albert"}


def through(model, steps, x: torch.Tensor) -> torch.Tensor:
    for step in steps:
        x = model.get_submodule(step)(x) if isinstance(step, str) else step(x)
    return x


@pytest.mark.across_families
def test_bert_and_albert_classify_from_the_pooler_while_roberta_electra_distilbert_and_modernbert_put_their_own_head_on_the_first_token(bert, as_class, evidence):
    """BERT's and ALBERT's sequence classifiers read the pooler (tanh of a dense layer on h[CLS]); RoBERTa's, ELECTRA's, DistilBERT's and ModernBERT's have no pooler and put a head of their own on the first token's state.

    Recomputed by hand from the base model's last hidden state, family by family: BERT and ALBERT pool with the dense
    + tanh pre-trained for NSP / SOP, then a Linear; RoBERTa: dense → tanh → out_proj on <s>; ELECTRA: dense → GELU →
    out_proj; DistilBERT: pre_classifier → ReLU → classifier (it has no pooler_output at all); ModernBERT: dense → act
    → norm → classifier on the first token, or on the masked mean if ``classifier_pooling="mean"``. The tempting
    "every classifier uses pooler_output" fails both ways: skipping BERT's pooler changes the logits, and the other
    families' base models have no pooler to use. The same head on the other pooling (mean instead of first token)
    gives other logits too. Dropout is off in eval mode.

    Claim ID: P6.40
    Question: Which representation does each family's sequence classifier use — pooler_output or the raw first-token state?
    问题：各家族的序列分类器用的是哪种表示——pooler_output 还是第一个 token 的原始状态？
    中文：BERT 和 ALBERT 的序列分类器读取 pooler（h[CLS] 上 dense 层的 tanh）；RoBERTa、ELECTRA、DistilBERT 和 ModernBERT 没有 pooler，而是在第一个 token 的状态上放自己的头。
    原因：逐个家族从基础模型的最后隐藏状态手工重算：BERT 与 ALBERT 用为 NSP / SOP 预训练的 dense + tanh 池化，再接一个 Linear；RoBERTa：在 <s> 上
    dense → tanh → out_proj；ELECTRA：dense → GELU → out_proj；DistilBERT：pre_classifier → ReLU → classifier（它根本没有 pooler_output）；
    ModernBERT：在第一个 token 上（classifier_pooling="mean" 时在按 mask 的平均上）dense → act → norm → classifier。"每个分类器都用 pooler_output"
    这种想法两头都错：跳过 BERT 的 pooler 会改变 logits，而其他家族的基础模型没有 pooler 可用。把同一个头用在另一种池化（平均而非第一个 token）上
    也得到不同的 logits。eval 模式下 dropout 关闭。
    Asked in: huggingface/transformers#1328, huggingface/transformers#9153, huggingface/transformers#1535, huggingface/transformers#15639, huggingface/transformers#2768, huggingface/transformers#415, huggingface/transformers#4048, huggingface/transformers#13929, ThilinaRajapakse/simpletransformers#442
    """
    a = bert.anatomy
    loaded = as_class(a.class_name("ForSequenceClassification"), bert.attn_implementation)
    model, steps = loaded.model, SEQUENCE_HEADS[a.family]
    batch = bert.example()
    base = model.get_submodule(a.base)
    with torch.no_grad():
        logits = model(**batch.as_kwargs()).logits
        base_out = base(**batch.as_kwargs())
        h = base_out.last_hidden_state
        m = batch.attention_mask[..., None].to(h.dtype)
        pooled = {"first token": h[:, 0], "masked mean": (h * m).sum(1) / m.sum(1)}
        used = "masked mean" if getattr(model.config, "classifier_pooling", "cls") == "mean" else "first token"
        other = next(name for name in pooled if name != used)
        by_hand, on_other = through(model, steps, pooled[used]), through(model, steps, pooled[other])
        skipping_pooler = through(model, steps[-1:], pooled[used]) if a.family in POOLER_FAMILIES else None
    pooler = getattr(base, "pooler", None)
    evidence.table(f"{type(model).__name__}: the logits recomputed from the base model's last hidden state",
                   ["route", "max |Δ logits|"],
                   [(f"{used} → " + " → ".join(s if isinstance(s, str) else s.__name__ for s in steps) + " (by hand)",
                     max_diff(by_hand, logits)),
                    (f"the same head on the {other}", max_diff(on_other, logits)),
                    ("the classifier straight on h[CLS], pooler skipped",
                     "—" if skipping_pooler is None else max_diff(skipping_pooler, logits))])
    evidence.table("the base model inside the classifier", ["class", "has a pooler", "pooler_output"],
                   [(type(base).__name__, pooler is not None,
                     "—" if getattr(base_out, "pooler_output", None) is None else tuple(base_out.pooler_output.shape))])
    torch.testing.assert_close(by_hand, logits, **TOL["exact"])
    assert beyond(on_other, logits, TOL["float32_kernels"])
    if a.family in POOLER_FAMILIES:
        assert pooler is not None and beyond(skipping_pooler, logits, TOL["float32_kernels"])
    else:
        assert pooler is None and getattr(base_out, "pooler_output", None) is None


# ---- P6.41 why unrelated sentences get a cosine near 1 ----

def pair_cosines(v: torch.Tensor) -> torch.Tensor:
    i, j = torch.triu_indices(len(v), len(v), 1)
    return F.cosine_similarity(v[i], v[j], dim=-1)


def test_mean_pooled_sentence_vectors_share_one_dominant_component_so_unrelated_sentences_score_a_high_cosine_until_it_is_removed(bert, evidence):
    """Mean-pooled sentence vectors share one component that holds most of their length, so any two sentences, unrelated ones included, get a high cosine; subtracting the mean of the set spreads the scores.

    Cosine weighs every dimension alike, and BERT's outputs are anisotropic: every token's vector carries a large
    common part, and averaging the tokens of a sentence keeps it while the sentence-specific parts partly cancel. With
    ``v_i = μ + e_i``, the cosine of two sentences is dominated by |μ|² as soon as μ holds more than half of the
    squared length; then every pair scores high and the scores are bunched together. Centring (v_i − μ, μ the mean
    over the set) removes the shared part, and the pairs spread out. On a trained checkpoint (the bundled one: 1200
    steps of MLM and NSP) the common part is learnt (the anisotropy of Ethayarajh 2019); on an untrained one it comes
    from the position embeddings and LayerNorm parameters every sentence shares: a high cosine says little either way.

    Claim ID: P6.41
    Question: Why is the cosine similarity between BERT sentence vectors always high, even for unrelated sentences?
    问题：为什么 BERT 句向量之间的余弦相似度总是很高，即使句子毫不相关？
    中文：平均池化得到的句向量共有一个占其长度大部分的分量，所以任意两个句子（包括不相关的）都得到很高的余弦；减去这组句向量的均值后，分数才拉开。
    原因：余弦对每个维度一视同仁，而 BERT 的输出是各向异性的：每个 token 的向量都带有一大块共同部分，对一个句子的 token 求平均保留了它，而句子特有的部分
    相互部分抵消。设 v_i = μ + e_i，只要 μ 占平方长度的一半以上，两个句子的余弦就由 |μ|² 主导；于是每一对都得分很高，且分数挤在一起。
    中心化（v_i − μ，μ 为这组的均值）去掉共同部分，各对的分数就拉开了。在训练过的 checkpoint 上（自带模型：1200 步 MLM 加 NSP），共同部分是学出来的
    （Ethayarajh 2019 所说的各向异性）；在未训练的 checkpoint 上，它来自每个句子共享的位置嵌入与 LayerNorm 参数：无论哪种，高余弦都说明不了多少。
    Asked in: huggingface/transformers#2298, huggingface/sentence-transformers#80, huggingface/sentence-transformers#14, huggingface/sentence-transformers#157, google-research/bert#164, google-research/bert#904, google-research/bert#1143, google-research/bert#276, jina-ai/clip-as-service#132, terrifyzhao/bert-utils#70
    """
    lines = bert.texts.corpus()[:12]
    batch = bert.encode(lines)
    h = bert.last_hidden(batch)
    m = batch.attention_mask[..., None].to(h.dtype)
    v = (h * m).sum(1) / m.sum(1)
    mu = v.mean(0)
    share = (mu.norm() ** 2 / (v.norm(dim=-1) ** 2).mean()).item()
    raw, centred = pair_cosines(v), pair_cosines(v - mu)
    evidence.table(f"{len(lines)} corpus lines, {len(raw)} pairs", ["vectors", "mean cosine", "lowest", "highest", "spread (std)"],
                   [(name, c.mean(), c.min(), c.max(), c.std()) for name, c in (("mean-pooled", raw), ("centred", centred))])
    evidence.table("the shared component", ["|μ|² / mean |v_i|²"], [(share,)])
    evidence.table("the first pairs", ["sentence A", "sentence B", "cosine", "cosine after centring"],
                   [(lines[0], lines[k], raw[k - 1], centred[k - 1]) for k in range(1, 5)])
    assert share > 0.5, "the common component should hold most of the vectors' squared length"
    assert raw.mean() > 0.5 and centred.mean() < raw.mean() - 0.5
    assert centred.std() > raw.std(), "centring should spread the scores"


# ---- P6.42 ignore_mismatched_sizes ----

def test_a_classifier_of_another_num_labels_refuses_to_load_and_ignore_mismatched_sizes_reinitialises_it_while_the_encoder_loads(bert, tmp_path, evidence):
    """A checkpoint whose classifier has another num_labels refuses to load; with ignore_mismatched_sizes=True the classifier is re-initialised at random (not trimmed) while every encoder weight loads.

    The classifier's shape is (num_labels, hidden). Loading a 3-label fine-tuned checkpoint with num_labels=2 finds
    tensors of the wrong shape and raises; ``ignore_mismatched_sizes=True`` skips exactly those tensors and
    initialises them like a missing head — random, changing with the seed, not the checkpoint's first two rows — and
    lists them as mismatched. Everything else, the encoder included, loads as stored. The error's words differ by
    version: 4.57 raises torch's "size mismatch for …", 5.x prints a LOAD REPORT with MISMATCH rows and raises its own
    message naming the flag.

    Claim ID: P6.42
    Question: Loading a fine-tuned checkpoint with another num_labels fails with a size mismatch — what does ignore_mismatched_sizes do?
    问题：用不同的 num_labels 加载已微调的 checkpoint 时报尺寸不匹配——ignore_mismatched_sizes 做了什么？
    中文：分类器 num_labels 不同的 checkpoint 拒绝加载；设 ignore_mismatched_sizes=True 时分类器被随机重新初始化（而不是被截取），encoder 的每个权重照常加载。
    原因：分类器的形状是 (num_labels, hidden)。用 num_labels=2 加载 3 个标签的微调 checkpoint 会遇到形状不对的张量并报错；
    ignore_mismatched_sizes=True 恰好跳过这些张量，并像缺失的头一样初始化它们——随机、随种子变化，而不是 checkpoint 的前两行——并把它们列为 mismatched。
    其他一切，包括 encoder，都按存储的值加载。错误的措辞因版本而异：4.57 抛出 torch 的 "size mismatch for …"，5.x 打印带 MISMATCH 行的 LOAD REPORT，
    再抛出点名该参数的消息。
    Asked in: huggingface/transformers#14218, huggingface/transformers#20327, huggingface/transformers#2300, huggingface/transformers#135, alexandrainst/danlp#80, asahi417/tner#37, ThilinaRajapakse/simpletransformers#1310, ThilinaRajapakse/simpletransformers#255, ThilinaRajapakse/simpletransformers#1370
    """
    three = seeded(bert, "ForSequenceClassification", num_labels=3).model
    three.save_pretrained(tmp_path)
    stored = three.state_dict()
    cls = getattr(transformers, bert.anatomy.class_name("ForSequenceClassification"))
    with pytest.raises(RuntimeError) as refused:
        cls.from_pretrained(tmp_path, num_labels=2)
    runs = []
    for seed in (SEED + 1, SEED + 2):  # not the seed the stored head was drawn under, whose first rows it would repeat
        torch.manual_seed(seed)
        runs.append(loading.load_class(tmp_path, cls.__name__, bert.attn_implementation, bert.device, num_labels=2,
                                       ignore_mismatched_sizes=True))
    first, reloaded, other_seed = runs[0], runs[0].model.state_dict(), runs[1].model.state_dict()
    changed = sorted(k for k, t in reloaded.items() if k in stored and (t.shape != stored[k].shape or not torch.equal(t, stored[k])))
    head = [k for k in changed if k.endswith("weight") and reloaded[k].shape[0] == 2]
    evidence.table(f"a {cls.__name__} saved with num_labels=3, loaded with num_labels=2",
                   ["without the flag", "with it: weights not as stored", "first warning"],
                   [(f"{type(refused.value).__name__}: {str(refused.value).splitlines()[0][:90]}",
                     ", ".join(changed), (first.warnings or ["—"])[0][:90])])
    evidence.table("the re-initialised classifier", ["weight", "shape", "max |Δ| vs the checkpoint's first 2 rows",
                                                     "max |Δ| between two seeds"],
                   [(k, tuple(reloaded[k].shape), max_diff(reloaded[k], stored[k][:2]),
                     max_diff(reloaded[k], other_seed[k])) for k in head])
    assert versions.MISMATCHED_SIZES_ERROR[versions.MAJOR] in str(refused.value)
    assert changed and all(not k.startswith(f"{bert.anatomy.base}.") for k in changed), "the encoder loads as stored"
    assert {k for k in changed if reloaded[k].shape != stored[k].shape} == set(changed), "only mismatched tensors change"
    for k in head:
        assert beyond(reloaded[k], stored[k][:2], TOL["exact"]), f"{k} is not the checkpoint's rows, trimmed"
        assert beyond(reloaded[k], other_seed[k], TOL["exact"]), f"{k} changes with the seed"


# ---- P6.43 tie_word_embeddings=False ----

def test_untying_on_load_leaves_the_decoder_a_random_matrix_the_checkpoint_never_stored_while_untying_by_copy_keeps_the_logits(mlm, evidence):
    """from_pretrained(..., tie_word_embeddings=False) gives the decoder a new random matrix, since BERT checkpoints store none, and the predictions change; untying after loading, by copying the embeddings, keeps the logits exactly.

    A tied checkpoint stores the word embeddings once: the decoder's matrix IS that table, so the file has no decoder
    weight. Asked to untie on load, transformers makes the decoder its own Linear, finds nothing for it in the file
    and initialises it N(0, initializer_range) — an untrained decoder, so the logits are noise. Which other tensors go
    with it depends on the version: on 4.57 the decoder keeps the checkpoint's bias (the same Parameter by
    assignment); on 5.x its bias is tied too and starts at zero. To untie and keep what was learnt, load tied and give
    the decoder a copy: ``decoder.weight = nn.Parameter(embeddings.weight.clone())``.

    Claim ID: P6.43
    Question: I set tie_word_embeddings=False to untie the MLM decoder — why are the predictions now garbage?
    问题：我把 tie_word_embeddings 设为 False 来解绑 MLM decoder——为什么预测变成了乱码？
    中文：from_pretrained(..., tie_word_embeddings=False) 给 decoder 一个新的随机矩阵，因为 BERT 的 checkpoint 里没有存它，预测随之改变；加载后再通过复制嵌入来解绑，logits 完全不变。
    原因：共享权重的 checkpoint 只存一次词嵌入：decoder 的矩阵就是这张表，所以文件里没有 decoder 的权重。要求在加载时解绑，transformers 会让 decoder
    成为独立的 Linear，在文件里找不到它的值，便按 N(0, initializer_range) 初始化——一个未训练的 decoder，logits 于是是噪声。哪些张量随之一起变化取决于版本：
    4.57 上 decoder 保留 checkpoint 的 bias（通过赋值是同一个 Parameter）；5.x 上它的 bias 也是共享的，从 0 开始。想解绑又保留学到的东西，应先按共享加载，
    再给 decoder 一份拷贝：decoder.weight = nn.Parameter(embeddings.weight.clone())。
    Asked in: huggingface/transformers#11903, huggingface/transformers#14035, huggingface/transformers#3998, google-research/bert#47
    """
    a = mlm.anatomy
    if not mlm.config.tie_word_embeddings:
        scope.not_applicable(mlm, "the checkpoint is untied already: its decoder matrix is in the file")
    untied = seeded(mlm, "ForMaskedLM", tie_word_embeddings=False)
    copied = seeded(mlm, "ForMaskedLM").model
    decoder = copied.get_submodule(a.decoder)
    decoder.weight = torch.nn.Parameter(copied.get_submodule(a.word_embeddings).weight.clone())
    copied.config.tie_word_embeddings = False
    batch = mlm.example()
    with torch.no_grad():
        tied_logits, untied_logits, copied_logits = (m(**batch.as_kwargs()).logits for m in (mlm.model, untied.model, copied))
    table = untied.model.get_submodule(a.word_embeddings).weight
    new = untied.model.get_submodule(a.decoder).weight
    evidence.table("the decoder", ["loaded", "weights newly initialised", "decoder std", "embedding std", "max |Δ logits| vs tied"],
                   [("tied (the model under test)", "—", mlm.decoder.weight.std(), mlm.word_embeddings.weight.std(), 0.0),
                    ("tie_word_embeddings=False", ", ".join(sorted(untied.missing)), new.std(), table.std(),
                     max_diff(untied_logits, tied_logits)),
                    ("tied, then decoder.weight = a copy", "—", decoder.weight.std(), table.std(),
                     max_diff(copied_logits, tied_logits))])
    if a.family == "bert":
        evidence.table("newly initialised when untied on load, by version",
                       *versions.table(versions.UNTIED_DECODER_MISSING, ["transformers"], versions.MAJOR))
        assert untied.missing == set(versions.UNTIED_DECODER_MISSING[versions.MAJOR])
    assert f"{a.decoder}.weight" in untied.missing and new.data_ptr() != table.data_ptr()
    assert beyond(untied_logits, tied_logits, TOL["float32_kernels"])
    assert decoder.weight.data_ptr() != copied.get_submodule(a.word_embeddings).weight.data_ptr()
    torch.testing.assert_close(copied_logits, tied_logits, **TOL["exact"])
