"""Chapter P6 — the questions BERT users ask again and again, each answered with the tempting wrong answer failing.

pooler_output or [CLS] or the mean (transformers #7540, #5453); why mean pooling
needs the mask (#17463, sentence-transformers #230); what the load warnings mean
(#5404, #5421); -100 in token classification (#323, #422); custom 3D/4D masks and
packing (#9366, PR #32105); where NaN comes from in half precision (PR #17306);
the NSP head and its labels (#836). Each claim runs on the model under test; where
transformers 4.x and 5.x differ, bertspec/models/versions.py holds what each does and the
claim marks what it observed.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import transformers

from bertspec.models import loading, versions
from bertspec.tracing import masks
from bertspec.proof import scope, teeth
from bertspec.models.loading import last_hidden_state
from bertspec.proof.tolerances import TOL, forward_tolerance, score_peak
from bertspec.tracing.trace import trace_forward

IGNORE_INDEX = -100


def beyond(actual, expected, tolerance: dict) -> bool:
    return not torch.allclose(actual, expected, **tolerance)


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


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

    Claim ID: P6.2
    Question: Why does my mean-pooled sentence embedding change when the batch has padding?
    问题：为什么 batch 里有 padding 时，平均池化得到的句向量会变？
    中文：padding 位置有有限且大小正常的输出，所以对整个序列的简单平均会随 padding 变化；按 attention_mask 加权的平均则不会。
    原因：mask 隐藏的是 [PAD] 作为 key，而不会把 [PAD] 的输出置零。它们的最终隐藏状态与其他位置一样是 LayerNorm 的输出，
    大小与真实 token 相当。h.mean(1) 把它们也平均进来，于是一个句子的向量取决于同一 batch 中另一句有多长；
    (h * m).sum(1) / m.sum(1)（sentence-transformers 的做法）等于该句单独运行时的向量。
    """
    batch = bert.example()
    h = bert.last_hidden(batch)
    m = batch.attention_mask[..., None].to(h.dtype)
    pad = batch.attention_mask == 0
    texts = [bert.texts.sentence, bert.texts.short]
    alone = [bert.last_hidden(bert.encode(text))[0].mean(0) for text in texts]
    masked, plain = (h * m).sum(1) / m.sum(1), h.mean(1)
    norms = h.norm(dim=-1)
    evidence.table("row 1, padded: its sentence vector vs the sentence alone", ["pooling", "max |Δ|"],
                   [("mean weighted by attention_mask", max_diff(masked[1], alone[1])), ("plain mean(dim=1)", max_diff(plain[1], alone[1]))])
    evidence.table("output norms", ["positions", "smallest", "largest"],
                   [("real", norms[~pad].min(), norms[~pad].max()), ("[PAD]", norms[pad].min(), norms[pad].max())])
    assert bool(pad.any()) and bool(torch.isfinite(h[pad]).all())
    assert norms[pad].min() > 0.1 * norms[~pad].mean(), "padded outputs are not small, let alone zero"
    for row, vector in enumerate(alone):
        torch.testing.assert_close(masked[row], vector, **TOL["float32_kernels"])
    assert beyond(plain[1], alone[1], TOL["float32_kernels"]), "the plain mean should change with padding"


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
    row stays uniform instead of NaN (PR #17306; chapter P4.2d), and
    torch.softmax subtracts each row's maximum before exp (next claim). The
    third it leaves alone: the probabilities come out in float16
    (``output_attentions``), the softmax was not upcast to float32. Observed
    on a float16 copy of the model with eager attention.

    Claim ID: P6.6
    Question: Does transformers compute attention in float32 when my model is float16?
    问题：模型是 float16 时，transformers 会用 float32 计算 attention 吗？
    中文：在 float16 模型中，transformers 的 eager attention 用 float16 构造 mask（finfo(float16).min，而不是 -inf），并在 float16 中做 softmax（所装版本上观察）。
    原因：半精度产生 NaN 有三种途径——一行全是 -inf、分数超过 65504、exp 溢出——transformers 的做法防住了其中两种：mask 是模型 dtype
    的 finfo(dtype).min，是有限数，所以整行被屏蔽时仍是均匀分布而不是 NaN（PR #17306；见 P4.2d 章），torch.softmax 在 exp 之前减去每行的
    最大值（见下一条断言）。第三种它不管：概率以 float16 输出（output_attentions），softmax 没有升到 float32。在模型的 float16 eager 副本上观察。
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


# ---- the claims above go red on the counterfeits declared at them ----

test_each_claim_goes_red_on_the_counterfeits_declared_at_it = teeth.meta_test(globals())
