"""Chapter P6.1–P6.4 — questions BERT users ask again and again, each answered with the tempting
wrong answer failing: pooler_output or [CLS] or the mean (transformers #7540, #5453); why mean
pooling needs the mask (#17463, sentence-transformers #230); what the load warnings mean
(#5404, #5421); -100 in token classification (#323, #422).

Each claim runs on the model under test; where transformers 4.x and 5.x differ,
bertspec/models/versions.py holds what each does and the claim marks what it observed.
"""

import pytest
import torch
import torch.nn.functional as F

from bertspec.models import loading, versions
from bertspec.proof import scope
from bertspec.proof.compare import beyond, max_diff
from bertspec.proof.reference import IGNORE_INDEX
from bertspec.proof.tolerances import TOL


# ---- P6.1 pooler_output vs the [CLS] hidden state vs mean pooling ----

def without_pooler_not_applicable(model):
    """The model's anatomy; the claim skips for families whose base model has no pooler."""
    if model.anatomy.pooler is None:
        scope.not_applicable(model, f"{model.anatomy.class_name('Model')} has no pooler: there is no pooler_output")
    return model.anatomy


@pytest.mark.counterfeits("pooler_without_tanh")
def test_pooler_output_is_tanh_of_a_dense_layer_on_the_cls_hidden_state_not_that_state_itself(bert, as_class, evidence):
    """pooler_output is tanh(W · h[CLS] + b), recomputed by hand, and it is not last_hidden_state[:, 0], nor the mean of the tokens.

    BertPooler takes the first position's final hidden state, applies a dense
    layer and tanh; BertModel returns that as pooler_output. Its weights were
    trained for next-sentence prediction during pre-training (the docstring of
    pooler_output says so on both versions), which is why it is not a sentence
    embedding by itself. The [CLS] hidden state is what it reads, not what it
    returns: the two differ, and both differ from the masked mean of the
    tokens. BertForMaskedLM builds its BertModel without a pooler at all.

    Claim ID: P6.1
    Question: Should I use pooler_output or the [CLS] hidden state as the sentence vector?
    问题：句向量该用 pooler_output 还是 [CLS] 的隐藏状态？
    中文：pooler_output 是 tanh(W · h[CLS] + b)（手工重算验证），它既不是 last_hidden_state[:, 0]，也不是各 token 的平均。
    原因：BertPooler 取第一个位置的最终隐藏状态，经过一个 dense 层和 tanh；BertModel 把它作为 pooler_output 返回。它的权重是在预训练中
    为下一句预测训练的（两个版本中 pooler_output 的 docstring 都这样写），所以它本身并不是句向量。[CLS] 隐藏状态是 pooler 的输入而不是
    输出：两者不同，也都与 token 的按 mask 平均不同。BertForMaskedLM 构造的 BertModel 根本没有 pooler。
    """
    from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

    a = without_pooler_not_applicable(bert)
    loaded = as_class(a.class_name("Model"), bert.attn_implementation)
    batch = bert.example()
    with torch.no_grad():
        out = loaded.model(**batch.as_kwargs())
        pooler = loaded.model.get_submodule(a.pooler)
        by_hand = torch.tanh(F.linear(out.last_hidden_state[:, 0], pooler.weight, pooler.bias))
    cls = out.last_hidden_state[:, 0]
    m = batch.attention_mask[..., None].to(cls.dtype)
    mean = (out.last_hidden_state * m).sum(1) / m.sum(1)
    trained = f"{a.pooler}.weight" not in loaded.missing
    evidence.table("three sentence vectors of row 0", ["vector", "max |Δ vs pooler_output|", "cos with pooler_output"],
                   [(name, max_diff(v[0], out.pooler_output[0]), F.cosine_similarity(v[0], out.pooler_output[0], dim=0))
                    for name, v in (("tanh(W · h[CLS] + b) by hand", by_hand), ("last_hidden_state[:, 0]", cls),
                                    ("masked mean of last_hidden_state", mean))])
    evidence.table("the pooler's weights", ["in the checkpoint", f"{a.mlm_class} has a pooler"],
                   [(trained, getattr(bert.encoder, "pooler", None) is not None)])
    torch.testing.assert_close(out.pooler_output, by_hand, **TOL["reference_component"])
    assert beyond(out.pooler_output, cls, TOL["float32_kernels"]), "pooler_output is not the [CLS] state"
    assert beyond(out.pooler_output, mean, TOL["float32_kernels"])
    assert getattr(bert.encoder, "pooler", None) is None
    assert "next sentence prediction" in BaseModelOutputWithPoolingAndCrossAttentions.__doc__


def test_a_checkpoint_without_pooler_weights_gets_a_random_pooler_that_changes_with_the_seed(bert, tmp_path, evidence):
    """Loaded from a checkpoint without pooler weights, BertModel reports them missing and gets a random pooler: pooler_output changes with the seed, last_hidden_state does not.

    A BertForMaskedLM or sentence-embedding checkpoint often ships no
    pooler. transformers then initialises pooler.dense from the config's
    initializer_range (normal, std 0.02, bias 0) and says so in the load
    report ("newly initialized" on 4.57, MISSING in 5.x's table). Everything
    computed from it — pooler_output, a classifier on top — is then random;
    the encoder's output is not. Shown by saving the encoder under test
    without its pooler and loading it under two seeds.

    Claim ID: P6.1
    Question: What does pooler_output give if my checkpoint has no pooler weights?
    问题：如果 checkpoint 里没有 pooler 权重，pooler_output 会给出什么？
    中文：从没有 pooler 权重的 checkpoint 加载时，BertModel 报告这些权重缺失并得到随机的 pooler：pooler_output 随随机种子变化，last_hidden_state 不变。
    原因：BertForMaskedLM 或句向量模型的 checkpoint 常常不带 pooler。transformers 于是按 config 的 initializer_range 初始化 pooler.dense
    （正态分布，标准差 0.02，偏置 0），并在加载报告中说明（4.57 为 "newly initialized"，5.x 表格中为 MISSING）。由它计算的一切——
    pooler_output、其上的分类器——都是随机的；encoder 的输出则不是。这里把被测 encoder 去掉 pooler 保存，再用两个种子加载来展示。
    """
    a = without_pooler_not_applicable(bert)
    bert.encoder.save_pretrained(tmp_path)  # the MLM class's encoder has no pooler
    batch = bert.example()
    runs = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        loaded = loading.load_class(tmp_path, a.class_name("Model"), bert.attn_implementation, bert.device)
        with torch.no_grad():
            runs[seed] = (loaded, loaded.model(**batch.as_kwargs()))
    (first, out0), (_, out1) = runs[0], runs[1]
    evidence.table(f"{a.class_name('Model')} from a checkpoint without pooler weights", ["missing", "warned", "Δ pooler_output, seeds 0/1",
                                                                          "Δ last_hidden_state, seeds 0/1"],
                   [(", ".join(sorted(first.missing)), " | ".join(first.warnings)[:160],
                     max_diff(out0.pooler_output, out1.pooler_output), max_diff(out0.last_hidden_state, out1.last_hidden_state))])
    assert {f"{a.pooler}.weight", f"{a.pooler}.bias"} <= first.missing
    assert first.warnings, "transformers warns about newly initialised weights"
    assert beyond(out0.pooler_output, out1.pooler_output, TOL["float32_kernels"])
    torch.testing.assert_close(out0.last_hidden_state, out1.last_hidden_state, **TOL["exact"])


# ---- P6.2 mean pooling must be weighted by attention_mask ----

@pytest.mark.counterfeits("mask_dropped")
def test_mean_pooling_must_be_weighted_by_attention_mask_because_padded_positions_have_outputs_too(bert, evidence):
    """Padded positions have finite, full-size outputs, so a plain mean over the sequence changes with padding; the mean weighted by attention_mask does not.

    The mask hides [PAD] keys; it does not zero [PAD] outputs. Their last
    hidden states are LayerNorm outputs like any other, about as large as a real
    token's. ``h.mean(1)`` averages them in, so a sentence's vector depends on
    how long its batch-mate was; ``(h * m).sum(1) / m.sum(1)`` (what
    sentence-transformers does) equals the vector of the sentence run alone.
    That mean includes [CLS] and [SEP], whose mask is 1; leaving them out is
    another embedding, also valid, but not the same vector (the evidence
    shows both), so pool as the model you use was trained to.

    Claim ID: P6.2
    Question: Why does my mean-pooled sentence embedding change when the batch has padding?
    问题：为什么 batch 里有 padding 时，平均池化得到的句向量会变？
    中文：padding 位置有有限且大小正常的输出，所以对整个序列的简单平均会随 padding 变化；按 attention_mask 加权的平均则不会。
    原因：mask 隐藏的是 [PAD] 作为 key，而不会把 [PAD] 的输出置零。它们的最终隐藏状态与其他位置一样是 LayerNorm 的输出，
    大小与真实 token 相当。h.mean(1) 把它们也平均进来，于是一个句子的向量取决于同一 batch 中另一句有多长；
    (h * m).sum(1) / m.sum(1)（sentence-transformers 的做法）等于该句单独运行时的向量。这个平均包含 mask 为 1 的 [CLS] 与 [SEP]；
    把它们排除在外是另一种同样成立的向量，但不是同一个向量（证据列出两者），所以要按所用模型训练时的方式池化。
    Asked in: flairNLP/flair#2179, huggingface/sentence-transformers#696, huggingface/sentence-transformers#1536
    """
    batch = bert.example()
    h = bert.last_hidden(batch)
    m = batch.attention_mask[..., None].to(h.dtype)
    pad = batch.attention_mask == 0
    texts = [bert.texts.sentence, bert.texts.short]
    alone = [bert.last_hidden(bert.encode(text))[0].mean(0) for text in texts]
    masked, plain = (h * m).sum(1) / m.sum(1), h.mean(1)
    special = torch.isin(batch.input_ids, torch.tensor([bert.tokenizer.cls_token_id, bert.tokenizer.sep_token_id], device=batch.input_ids.device))
    words = m * ~special[..., None]
    without_specials = (h * words).sum(1) / words.sum(1)
    norms = h.norm(dim=-1)
    evidence.table("row 1, padded: its sentence vector vs the sentence alone", ["pooling", "max |Δ|"],
                   [("mean weighted by attention_mask", max_diff(masked[1], alone[1])), ("plain mean(dim=1)", max_diff(plain[1], alone[1])),
                    ("mean weighted by attention_mask, [CLS]/[SEP] left out", max_diff(without_specials[1], alone[1]))])
    evidence.table("output norms", ["positions", "smallest", "largest"],
                   [("real", norms[~pad].min(), norms[~pad].max()), ("[PAD]", norms[pad].min(), norms[pad].max())])
    assert bool(pad.any()) and bool(torch.isfinite(h[pad]).all())
    assert norms[pad].min() > 0.1 * norms[~pad].mean(), "padded outputs are not small, let alone zero"
    for row, vector in enumerate(alone):
        torch.testing.assert_close(masked[row], vector, **TOL["float32_kernels"])
    assert beyond(plain[1], alone[1], TOL["float32_kernels"]), "the plain mean should change with padding"
    assert bool(special[~pad].any()), "the tokenizer should have added [CLS]/[SEP]"
    assert beyond(without_specials, masked, TOL["float32_kernels"]), "leaving out [CLS]/[SEP] is another vector"


# ---- P6.3 what the load warnings mean ----

# task class (after the family's prefix: Bert, Roberta, ...) -> {output: prefixes of the weights it is NOT computed
# from}. An output changes with the seed exactly when a weight it is computed from was missing from the checkpoint
# (and so initialised at random). The two NSP classes are BERT's alone.
OUTPUTS = {
    "Model": {"last_hidden_state": ("pooler.",), "pooler_output": ()},
    "ForMaskedLM": {"logits": ()},
    "ForSequenceClassification": {"logits": ()},
    "ForTokenClassification": {"logits": ()},
}
BERT_ONLY_OUTPUTS = {
    "ForPreTraining": {"prediction_logits": ("bert.pooler.", "cls.seq_relationship."),
                       "seq_relationship_logits": ("cls.predictions.",)},
    "ForNextSentencePrediction": {"logits": ()},
}


def test_weights_not_used_are_harmless_while_newly_initialised_ones_make_every_output_computed_from_them_random(
        bert, evidence):
    """The load report's "not used" weights are dropped harmlessly; its "newly initialized" ones are random, and exactly the outputs computed from them change with the seed.

    Loading a checkpoint into another BERT class compares two sets of names.
    Weights in the file the class has no place for (an MLM head loaded into
    BertModel, an NSP head into BertForMaskedLM) are unexpected: "not used",
    dropped, harmless. Weights the class needs but the file lacks (a
    classification head, a missing pooler) are missing: "newly initialized"
    at random, so every output computed from them is noise until trained. The
    claim loads the checkpoint under test into the family's classes (six for
    BERT, with its two NSP classes; four for the others) under seeds 0 and 1
    and checks, output by output, that it changes with the seed exactly when
    one of its weights was missing. The reports differ by version: 4.57 logs
    two messages (the "not used" one only at INFO unless the class is in the
    config's architectures), 5.x one WARNING table; output_loading_info gives
    the same names as data. Loading does not depend on the attention
    implementation, so this runs on eager.

    Claim ID: P6.3
    Question: Are the "weights not used" and "newly initialized" warnings a problem?
    问题："weights not used" 和 "newly initialized" 这两种警告有问题吗？
    中文：加载报告中"未使用"的权重被无害地丢弃；"新初始化"的权重是随机的，并且恰好是由它们计算的输出随随机种子变化。
    原因：把 checkpoint 加载到另一个 BERT 类时，会比较两组名字。文件里有而类中没有位置的权重（MLM 头加载进 BertModel、NSP 头加载进
    BertForMaskedLM）是 unexpected："未使用"，被丢弃，无害。类需要而文件里没有的权重（分类头、缺失的 pooler）是 missing："新初始化"
    为随机值，所以由它们计算的每个输出在训练之前都是噪声。本断言把被测 checkpoint 在种子 0 与 1 下加载进该家族的各个类（BERT 六个，含两个 NSP 类；其他家族四个），逐个输出检查：
    它随种子变化，当且仅当它的某个权重缺失。报告形式因版本而异：4.57 记录两条消息（"not used" 那条只有在类属于 config 的
    architectures 时才是 WARNING，否则是 INFO），5.x 记录一个 WARNING 表格；output_loading_info 以数据形式给出同样的名字。
    加载与 attention 实现无关，因此只在 eager 上运行。
    """
    if bert.attn_implementation != "eager":
        pytest.skip("loading does not depend on the attention implementation: shown once, on eager")
    folder = bert.folder
    batch = bert.encode(*bert.texts.pair)
    rows = []
    tasks = {**OUTPUTS, **(BERT_ONLY_OUTPUTS if bert.anatomy.family == "bert" else {})}
    for task, outputs in tasks.items():
        class_name = bert.anatomy.class_name(task)
        runs = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            loaded = loading.load_class(folder, class_name, "eager", bert.device)
            with torch.no_grad():
                runs.append((loaded, loaded.model(**batch.as_kwargs())))
        (loaded, out0), (_, out1) = runs
        for field, not_from in outputs.items():
            if getattr(out0, field, None) is None:  # e.g. no pooler_output: the family has no pooler
                continue
            random = max_diff(getattr(out0, field), getattr(out1, field)) > 0
            expected = any(not k.startswith(not_from) for k in loaded.missing) if not_from else bool(loaded.missing)
            rows.append((class_name, field, len(loaded.unexpected), ", ".join(sorted(loaded.missing)) or "—",
                         random, expected, "; ".join(loaded.warnings)[:120]))
            assert random == expected, f"{class_name}.{field}: changes with the seed {random}, computed from missing weights {expected}"
        if loaded.missing:
            assert any(class_name in w for w in loaded.warnings), f"{class_name}: no warning about newly initialised weights"
    evidence.table(f"the checkpoint loaded into each class, seeds 0 and 1 (transformers {versions.VERSION})",
                   ["class", "output", "weights not used", "weights newly initialised", "changes with the seed",
                    "computed from a missing weight", "what transformers warned"], rows)


# ---- P6.4 -100 in token classification ----

def word_labels(word_ids, labels_of_words, every_piece=False, special_label=IGNORE_INDEX) -> list[int]:
    """Token labels from word labels: the first piece of each word carries it; the rest -100 (or the word's label too)."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(special_label)
        elif word != previous or every_piece:
            labels.append(labels_of_words[word])
        else:
            labels.append(IGNORE_INDEX)
        previous = word
    return labels


def test_token_classification_labels_the_first_piece_of_each_word_and_its_loss_is_the_mean_over_those_alone(bert, as_class, evidence):
    """For token classification, the first piece of each word carries the word's label, every other piece and [CLS]/[SEP]/[PAD] -100, and the loss is the mean over the labelled pieces alone.

    Words split into pieces (北京 → 北 京; unbelievably → un ##bel …). The fast
    tokenizer's ``word_ids()`` maps each token to its word (None for special
    tokens), which is how transformers' token-classification recipe labels the
    first piece and gives the rest -100. BertForTokenClassification's loss is
    CrossEntropyLoss(ignore_index=-100) over the flattened tokens, so it equals
    the mean cross entropy of the word-initial pieces, computed here by hand.
    Labelling every piece, or labelling special tokens 0 instead of -100,
    counts other positions and changes the loss.

    Claim ID: P6.4
    Question: How do I label sub-word pieces and special tokens for token classification?
    问题：做 token 分类时，子词片段和特殊 token 该怎样打标签？
    中文：做 token 分类时，每个词的第一个片段带该词的标签，其余片段与 [CLS]/[SEP]/[PAD] 都是 -100，loss 只是带标签片段的平均。
    原因：词会被切成片段（北京 → 北 京；unbelievably → un ##bel …）。fast 分词器的 word_ids() 把每个 token 映射到它所属的词（特殊 token 为 None），
    transformers 的 token 分类做法正是据此给第一个片段打标签、其余为 -100。BertForTokenClassification 的 loss 是在展平的 token 上
    ignore_index=-100 的 CrossEntropyLoss，所以等于词首片段交叉熵的平均（这里手工计算）。给每个片段都打标签，或把特殊 token
    标成 0 而不是 -100，会计入其他位置并改变 loss。
    Asked in: liuyukid/transformers-ner#5, hertz-pj/BERT-BiLSTM-CRF-NER-pytorch#12, lonePatient/BERT-NER-Pytorch#91, yuanxiaosc/BERT-for-Sequence-Labeling-and-Text-Classification#17, yuanxiaosc/BERT-for-Sequence-Labeling-and-Text-Classification#18
    """
    tok = bert.tokenizer
    if not tok.is_fast:
        pytest.skip("word_ids() needs a fast tokenizer; this checkpoint's loads a slow one")
    words = list(bert.texts.words)
    enc = tok([words], is_split_into_words=True, return_tensors="pt", return_token_type_ids=bert.typed).to(bert.device)
    word_ids = enc.word_ids(0)
    if max(word_ids.count(w) for w in set(word_ids) - {None}) < 2:
        pytest.skip("this vocabulary splits none of the example words into pieces")
    of_words = [i % 2 for i in range(len(words))]
    model = as_class(bert.anatomy.class_name("ForTokenClassification"), bert.attn_implementation).model
    settings = {"first piece": word_labels(word_ids, of_words), "every piece": word_labels(word_ids, of_words, every_piece=True),
                "specials labelled 0": word_labels(word_ids, of_words, special_label=0)}
    losses = {}
    with torch.no_grad():
        for name, labels in settings.items():
            losses[name] = model(**enc, labels=torch.tensor([labels], device=bert.device))
    first = torch.tensor(settings["first piece"], device=bert.device)
    logits = losses["first piece"].logits[0]
    by_hand = F.cross_entropy(logits[first != IGNORE_INDEX], first[first != IGNORE_INDEX])
    evidence.table("pieces", ["token", "word", "label (first piece)"],
                   [(t, w, lab) for t, w, lab in zip(tok.convert_ids_to_tokens(enc["input_ids"][0]), word_ids, settings["first piece"])])
    evidence.table("the loss", ["labels", "labelled tokens", "loss"],
                   [(name, sum(lab != IGNORE_INDEX for lab in settings[name]), out.loss) for name, out in losses.items()]
                   + [("by hand: mean over the word-initial pieces", int((first != IGNORE_INDEX).sum()), by_hand)])
    assert sum(lab != IGNORE_INDEX for lab in settings["first piece"]) == len(words)
    torch.testing.assert_close(losses["first piece"].loss, by_hand, **TOL["loss_reduction"])
    for wrong in ("every piece", "specials labelled 0"):
        assert abs(losses[wrong].loss.item() - by_hand.item()) > 1e-5, wrong
