"""Chapter P6.45–P6.52 — questions learners ask about training, fine-tuning and eval mode, each from public threads:
torch.no_grad() against model.eval() and the loss of one batch in both modes; freezing the encoder; which parameters
get weight decay; how a model built from its config starts; dynamic masking; where each dropout knob acts; gradient
checkpointing with dropout on.

Every claim computes the tempting wrong answer beside the right one and asserts that they differ. Training happens
only on copies (the session's models are shared) and takes one gradient or one optimizer step, never a loop.
"""

import copy
import inspect
import math
import re

import pytest
import torch
import transformers
from torch import nn

from bertspec.models import anatomy, source, versions
from bertspec.models.inputs import texts_for
from bertspec.proof import scope
from bertspec.proof.compare import beyond, max_diff, within_binomial_bound
from bertspec.proof.examples import answer_labels, masked_batch
from bertspec.proof.tolerances import TOL, kernel_tolerance
from bertspec.tracing.modes import dropout_disabled, dropout_probabilities, training

# A task head's loss, freezing, an optimizer's groups, initialisation, dropout knobs: no attention kernel decides
# the answer, so each claim runs on one implementation (bertspec.plugin).
pytestmark = pytest.mark.one_implementation

SEED = 0  # the spec's seed (conftest.SEED): a model built from a config starts the same way every run


def needs_dropout(bert) -> None:
    """Skip where the checkpoint's config sets every dropout to 0: train mode is then as deterministic as eval."""
    if max(dropout_probabilities(bert.model), default=0) == 0:
        pytest.skip(f"{bert.source} sets every dropout probability to 0: train mode draws nothing at random")


def classifier_copy(bert, as_class) -> nn.Module:
    """A private copy of the checkpoint in its family's sequence-classification class (the loaded one is shared)."""
    return copy.deepcopy(as_class(bert.anatomy.class_name("ForSequenceClassification"), bert.attn_implementation).model)


# ---- P6.45, P6.46 train mode, eval mode and no_grad ----

def test_no_grad_stops_the_graph_but_not_dropout_and_eval_stops_dropout_but_not_the_graph(bert, evidence):
    """torch.no_grad() and model.eval() are different switches: no_grad stops recording the graph and leaves dropout on; eval turns dropout off and still records the graph.

    Dropout reads the module's ``training`` flag, which only ``model.train()``
    and ``model.eval()`` set; ``torch.no_grad()`` tells autograd not to record
    the operations, whatever the modules' mode. So in train mode under no_grad
    two passes over one batch still differ (different dropout masks) and the
    output has no graph; in eval mode without no_grad two passes are equal and
    the output still carries a graph, with the memory it costs. Inference wants
    both: eval for the right output, no_grad for the memory.

    Claim ID: P6.45
    Question: Is torch.no_grad() the same as model.eval()?
    问题：torch.no_grad() 和 model.eval() 一样吗？
    中文：torch.no_grad() 与 model.eval() 是两个不同的开关：no_grad 停止记录计算图但不关 dropout；eval 关掉 dropout 但仍记录计算图。
    原因：dropout 读取模块的 ``training`` 标志，只有 ``model.train()`` 与 ``model.eval()`` 会设置它；``torch.no_grad()`` 只让 autograd
    不记录运算，与模块处于哪种模式无关。所以训练模式下即使在 no_grad 中，同一 batch 的两次前向仍不同（dropout mask 不同），输出没有
    计算图；推理模式下不用 no_grad，两次前向相同，输出仍带着计算图及其占用的内存。推理时两者都要：eval 保证输出正确，no_grad 节省内存。
    Asked in: codertimo/BERT-pytorch#92, pytorch/pytorch#128209, flagos-ai/FlagPerf#202, kamalkraj/BERT-NER#78, d2l-ai/d2l-en#1785
    """
    needs_dropout(bert)
    batch = bert.example()

    def two_passes(train: bool, no_grad: bool):
        model = bert.model.train() if train else bert.model
        try:
            with torch.random.fork_rng(), torch.set_grad_enabled(not no_grad):
                torch.manual_seed(SEED)
                first, second = (model.base_model(**batch.as_kwargs()).last_hidden_state for _ in range(2))
        finally:
            bert.model.eval()
        return torch.equal(first, second), first.requires_grad

    observed = {(mode, grad): two_passes(mode == "train", grad == "no_grad")
                for mode, grad in (("train", "no_grad"), ("eval", "grad recorded"), ("eval", "no_grad"))}
    evidence.table("two passes over one batch", ["mode", "autograd", "passes equal (no dropout)", "graph recorded"],
                   [(mode, grad, equal, graph) for (mode, grad), (equal, graph) in observed.items()])
    assert observed["train", "no_grad"] == (False, False), "no_grad alone must leave dropout on"
    assert observed["eval", "grad recorded"] == (True, True), "eval alone must still record the graph"
    assert observed["eval", "no_grad"] == (True, False)


def test_one_batch_has_one_loss_in_eval_mode_and_a_different_one_per_pass_in_train_mode_only_through_dropout(mlm, evidence):
    """On the very same batch the loss differs between train and eval mode only because of dropout: eval gives one value every time, train mode another per pass, and train mode with dropout at 0 gives the eval loss; the Trainer evaluates in eval mode.

    The Trainer logs the training loss from train-mode passes, with dropout
    drawing new masks each time, and computes eval_loss in its evaluation loop
    after ``model.eval()``. So a batch that is in both sets shows two different
    losses, neither wrong. With every dropout probability set to 0 the
    train-mode loss equals the eval loss (exactly in eager; within the float32
    kernel tolerance in sdpa, which may pick another kernel), which shows that
    nothing else changes with the mode. The claim also reads the installed
    Trainer's evaluation loop for its ``model.eval()``.

    Claim ID: P6.46
    Question: Why does the Trainer's eval loss differ from the training loss on the very same batch?
    问题：同一批数据，Trainer 的 eval loss 为什么和训练 loss 不同？
    中文：同一个 batch 在训练与推理模式下的 loss 不同只因为 dropout：推理模式每次都给出同一个值，训练模式每次前向都不同，而把 dropout 设为 0 的训练模式给出推理模式的 loss；Trainer 在推理模式下评估。
    原因：Trainer 记录的训练 loss 来自训练模式的前向，dropout 每次都抽新的 mask；eval_loss 则在评估循环中 ``model.eval()`` 之后计算。
    所以同时出现在两个集合里的 batch 会显示两个不同的 loss，哪个都没错。把所有 dropout 概率设为 0 后，训练模式的 loss 等于推理模式的
    loss（eager 下精确相等；sdpa 可能换用别的内核，在 float32 内核容差内相等），说明模式切换没有改变别的东西。本断言还读取所装
    Trainer 的评估循环，确认其中有 ``model.eval()``。
    Asked in: huggingface/transformers#9039, karpathy/nanoGPT#245
    """
    needs_dropout(mlm)
    batch = masked_batch(mlm)
    labels = answer_labels(mlm, batch)

    def loss() -> torch.Tensor:
        with torch.no_grad():
            return mlm.model(**batch.as_kwargs(), labels=labels).loss

    eval_losses = [loss(), loss()]
    with torch.random.fork_rng(), training(mlm.model):
        torch.manual_seed(SEED)
        train_losses = [loss(), loss()]
        with dropout_disabled(mlm.model):
            no_dropout = loss()
    evaluates_in_eval_mode = "model.eval()" in inspect.getsource(transformers.Trainer.evaluation_loop)
    evidence.table("MLM loss of one batch", ["mode", "first pass", "second pass"],
                   [("eval", *eval_losses), ("train", *train_losses), ("train, every dropout at 0", no_dropout, "—")])
    evidence.text("transformers.Trainer.evaluation_loop", f"calls model.eval(): {evaluates_in_eval_mode}")
    assert torch.equal(*eval_losses)
    assert not torch.equal(*train_losses), "dropout must draw new masks on every train-mode pass"
    assert not torch.equal(train_losses[0], eval_losses[0])
    torch.testing.assert_close(no_dropout, eval_losses[0], **kernel_tolerance(mlm.attn_implementation))
    assert evaluates_in_eval_mode


# ---- P6.47 freezing the encoder ----

def test_requires_grad_false_on_a_module_freezes_nothing_and_requires_grad_underscore_freezes_every_parameter(
        bert, as_class, evidence):
    """``model.bert.requires_grad = False`` sets a plain Python attribute and freezes nothing; ``requires_grad_(False)`` clears every parameter's flag, so an optimizer step moves only the classifier.

    An ``nn.Module`` has no ``requires_grad`` setting of its own: assigning it
    stores an ordinary attribute that nothing reads. Autograd and the optimizer
    look at each parameter's ``requires_grad``, which
    ``module.requires_grad_(False)`` (or ``p.requires_grad = False`` for each
    ``p`` in ``module.parameters()``) sets. On two copies of the checkpoint in
    its sequence-classification class, one SGD step on a labelled batch: after
    the attribute assignment the encoder's word embeddings still move, after
    ``requires_grad_(False)`` every encoder parameter is bit-identical and the
    classifier, outside the encoder, moved.

    Claim ID: P6.47
    Question: I set requires_grad=False to freeze BERT and train only the classifier: why do the embeddings still change?
    问题：我设了 requires_grad=False 想冻结 BERT、只训练分类层，为什么嵌入还在变？
    中文：``model.bert.requires_grad = False`` 只设置了一个普通 Python 属性，什么也没冻结；``requires_grad_(False)`` 清除每个参数的标志，于是优化器一步只移动分类层。
    原因：``nn.Module`` 自身没有 ``requires_grad`` 设置：赋值只存下一个没人读取的普通属性。autograd 与优化器看的是每个参数的
    ``requires_grad``，由 ``module.requires_grad_(False)``（或对 ``module.parameters()`` 中每个 ``p`` 设 ``p.requires_grad = False``）
    设置。在该 checkpoint 的序列分类类的两个副本上，用带标签的 batch 做一步 SGD：属性赋值之后编码器的词嵌入仍然改变；
    ``requires_grad_(False)`` 之后编码器的每个参数逐位不变，而编码器之外的分类层改变了。
    Asked in: huggingface/transformers#95, huggingface/transformers#228, huggingface/transformers#252, huggingface/transformers#400, google-research/bert#637, google-research/bert#738, appvision-ai/fast-bert#188
    """
    batch = bert.example()

    def one_step(freeze) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        model = classifier_copy(bert, as_class)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        freeze(model.base_model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        model(**batch.as_kwargs(), labels=torch.zeros(len(batch.input_ids), dtype=torch.long)).loss.backward()
        torch.optim.SGD(trainable, lr=0.1).step()
        return model, {name: not torch.equal(p, before[name]) for name, p in model.named_parameters()}

    def attribute(encoder):
        encoder.requires_grad = False

    attribute_model, moved_attribute = one_step(attribute)
    _, moved_frozen = one_step(lambda encoder: encoder.requires_grad_(False))
    prefix = attribute_model.base_model_prefix + "."
    encoder = [name for name in moved_frozen if name.startswith(prefix)]
    head = [name for name in moved_frozen if not name.startswith(prefix)]
    words = bert.anatomy.word_embeddings
    evidence.table("parameters moved by one SGD step", ["freezing by", "encoder parameters moved", "head parameters moved",
                                                        "word embeddings moved"],
                   [(f"{prefix}requires_grad = False", sum(moved_attribute[n] for n in encoder),
                     sum(moved_attribute[n] for n in head), moved_attribute[words + ".weight"]),
                    (f"{prefix[:-1]}.requires_grad_(False)", sum(moved_frozen[n] for n in encoder),
                     sum(moved_frozen[n] for n in head), moved_frozen[words + ".weight"])],
                   note=f"{len(encoder)} encoder and {len(head)} head parameters")
    assert attribute_model.base_model.requires_grad is False  # the attribute was set ...
    assert moved_attribute[words + ".weight"], "... and froze nothing: the word embeddings moved"
    assert not any(moved_frozen[name] for name in encoder), "requires_grad_(False) must keep every encoder parameter"
    assert any(moved_frozen[name] for name in head)


# ---- P6.48 weight decay ----

CLASSIC_NO_DECAY = ("bias", "LayerNorm.weight")  # the list of run_glue.py and google-research/bert's optimization.py


def decay_sets(model: nn.Module) -> dict[str, set[str]]:
    """The parameters each rule decays: the Trainer's, the classic name list, and 'every parameter'."""
    names = {name for name, _ in model.named_parameters()}
    # get_decay_parameter_names reads nothing of the Trainer; a Trainer itself cannot be built without accelerate
    trainer = set(transformers.Trainer.get_decay_parameter_names(None, model))
    return {"Trainer.get_decay_parameter_names": trainer,
            "classic name list ['bias', 'LayerNorm.weight']": {n for n in names if not any(k in n for k in CLASSIC_NO_DECAY)},
            "every parameter": names}


def scale_and_shift(model: nn.Module) -> set[str]:
    """Every norm's parameters and every bias, found by module type and by name, not by the Trainer's patterns."""
    found = set()
    for path, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            if isinstance(module, nn.LayerNorm) or name == "bias":
                found.add(f"{path}.{name}" if path else name)
    return found


def family_classifier_on_meta(family: str) -> nn.Module:
    """A bundled family's sequence classifier with no weights in memory: its parameter names are what is read."""
    config = transformers.AutoConfig.from_pretrained(source.bundled_model_dir(family))
    with torch.device("meta"):
        return getattr(transformers, anatomy.FAMILIES[family].class_name("ForSequenceClassification"))(config)


def test_the_trainer_decays_every_weight_but_biases_and_norms_and_the_classic_name_list_misses_norms_named_otherwise(
        bert, as_class, evidence):
    """The Trainer decays every weight matrix and embedding table but no bias and no LayerNorm parameter; the classic name list ['bias', 'LayerNorm.weight'] agrees only where every norm is called LayerNorm.

    A LayerNorm's gain and shift and a layer's bias set a scale and an offset
    rather than fit the data, and pulling the gain toward 0 fights the
    normalisation, so BERT's optimizer (google-research/bert optimization.py)
    excluded them by name. ``Trainer.get_decay_parameter_names`` excludes every
    parameter inside an ``nn.LayerNorm`` and every name containing bias,
    layernorm, rmsnorm or a ``norm`` component. The claim checks that rule
    against the model under test's module types (and decaying every parameter
    is wrong wherever a model has a norm). The classic name list, copied from
    BERT's scripts, matches exactly when every norm's parameter path contains
    ``LayerNorm``; DistilBERT's ``sa_layer_norm``, ALBERT's
    ``full_layer_layer_norm`` and ModernBERT's ``attn_norm``/``mlp_norm``/
    ``final_norm`` are silently decayed by it — the family table shows where.

    Claim ID: P6.48
    Question: Why are bias and LayerNorm weights excluded from weight decay — and which parameters does the Trainer exclude?
    问题：为什么 bias 和 LayerNorm 权重不做 weight decay？Trainer 到底排除哪些参数？
    中文：Trainer 对每个权重矩阵和嵌入表做 weight decay，但不对任何 bias 和 LayerNorm 参数做；经典名单 ['bias', 'LayerNorm.weight'] 只在每个归一化层都叫 LayerNorm 时与之一致。
    原因：LayerNorm 的增益与平移、各层的 bias 决定尺度与偏移而不是拟合数据，把增益往 0 拉还会与归一化相抵，所以 BERT 的优化器
    （google-research/bert 的 optimization.py）按名字排除它们。``Trainer.get_decay_parameter_names`` 排除 ``nn.LayerNorm`` 内的
    每个参数，以及名字含 bias、layernorm、rmsnorm 或 ``norm`` 分量的参数。本断言用被测模型的模块类型检验这条规则（对所有参数做
    decay 在有归一化层的模型上都是错的）。从 BERT 脚本抄来的经典名单只在每个归一化层参数路径都含 ``LayerNorm`` 时完全一致；
    DistilBERT 的 ``sa_layer_norm``、ALBERT 的 ``full_layer_layer_norm``、ModernBERT 的 ``attn_norm``/``mlp_norm``/``final_norm``
    会被它悄悄 decay——家族表列出差异所在。
    Asked in: huggingface/transformers#492, huggingface/transformers#4832, huggingface/transformers#10239, huggingface/transformers#4360, google-research/bert#289, google-research/bert#845, CyberZHG/keras-bert#60
    """
    model = as_class(bert.anatomy.class_name("ForSequenceClassification"), bert.attn_implementation).model
    rules = decay_sets(model)
    excluded = scale_and_shift(model)
    trainer, classic, everything = rules.values()
    named_layernorm = all("LayerNorm" in name for name in excluded if not name.endswith("bias"))
    evidence.table("the model under test: parameters each rule decays", ["rule", "decayed", "norms or biases decayed"],
                   [(rule, len(decayed), len(decayed & excluded)) for rule, decayed in rules.items()])
    families = {family: list(decay_sets(family_classifier_on_meta(family)).values()) for family in source.FAMILIES}
    evidence.table("bundled families: where the classic list decays what the Trainer does not",
                   ["family", "Trainer decays", "classic list decays", "decayed by the classic list only"],
                   [(family, len(t), len(c), ", ".join(sorted(re.sub(r"\.\d+\.", ".{i}.", n) for n in c - t)) or "—")
                    for family, (t, c, _) in families.items()])
    assert trainer == everything - excluded
    assert bert.anatomy.word_embeddings + ".weight" in trainer
    assert everything != trainer, "decaying every parameter decays the norms and biases too"
    assert (classic == trainer) == named_layernorm
    assert {f for f, (t, c, _) in families.items() if c != t} == {"distilbert", "albert", "modernbert"}


# ---- P6.49 initialisation from a config ----

def initialised(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter of a freshly built model by kind, each once (a tied matrix belongs to its embedding)."""
    kinds, seen = {"matrices": [], "norm weights": [], "biases": []}, set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            kind = "norm weights" if isinstance(module, nn.LayerNorm) and name == "weight" else (
                "biases" if name == "bias" else "matrices")
            kinds[kind].append(p.detach().flatten())
    return {kind: torch.cat(values) for kind, values in kinds.items()}


def test_a_model_built_from_its_config_draws_matrices_from_a_plain_normal_with_initializer_range_and_sets_norms_to_1_and_biases_to_0(
        bert, evidence):
    """A model built from its config (no checkpoint) draws every matrix and embedding from N(0, initializer_range) — a plain normal, not a truncated one — and starts every LayerNorm at weight 1 and every bias at 0.

    ``PreTrainedModel._init_weights`` (BERT's own in 4.57, the shared one in
    5.x) fills Linear and Embedding weights with ``normal_(0,
    initializer_range)``, zeroes biases and the padding row, and sets
    LayerNorm to the identity (weight 1, bias 0). 4.57's BERT says so in its
    comment: "Slightly different from the TF version which uses
    truncated_normal". A normal puts 4.55% of its draws beyond 2σ, a normal
    truncated at 2σ (Google's BERT) none. Built under the spec's seed from the
    checkpoint's own config, the pooled matrices' standard deviation and their
    share beyond 2σ stay within 5 binomial (or sampling) standard deviations of
    the plain normal's; norms and biases are exact. The tempting answers —
    "LayerNorm is random too" (#143, which gave bad convergence), "the init is
    truncated as in the TF code" — both fail here. ``from_pretrained`` then
    overwrites everything the checkpoint holds (P6.3).

    Claim ID: P6.49
    Question: When I build BertModel(config) from scratch, how are the weights initialised (initializer_range)?
    问题：用 BertModel(config) 从头构建时，权重如何初始化（initializer_range）？
    中文：从 config 构建（不加载 checkpoint）的模型，每个矩阵与嵌入表都从 N(0, initializer_range) 抽取——普通正态而非截断正态——每个 LayerNorm 的权重从 1、每个 bias 从 0 开始。
    原因：``PreTrainedModel._init_weights``（4.57 中是 BERT 自己的，5.x 中是共用的）用 ``normal_(0, initializer_range)`` 填充 Linear 与
    Embedding 的权重，把 bias 和 padding 行置 0，并把 LayerNorm 设为恒等（权重 1，bias 0）。4.57 的 BERT 在注释里写明："Slightly different
    from the TF version which uses truncated_normal"。正态分布有 4.55% 的样本超出 2σ，在 2σ 处截断的正态（Google 的 BERT）一个也没有。
    在规范的种子下用 checkpoint 自己的 config 构建，所有矩阵合起来的标准差与超出 2σ 的比例都在普通正态的 5 个二项（或抽样）标准差
    之内；归一化层与 bias 精确相等。诱人的答案——"LayerNorm 也是随机的"（#143，导致收敛很差）、"初始化像 TF 代码那样截断"——在此都失败。
    之后 ``from_pretrained`` 会覆盖 checkpoint 中有的一切（P6.3）。
    Asked in: huggingface/transformers#13615, huggingface/transformers#143, young-geng/EasyLM#114, stickeritis/sticker-transformers#22, lonePatient/BERT-NER-Pytorch#37
    """
    if bert.anatomy.family == "modernbert":
        scope.not_applicable(bert, "ModernBERT initialises by its own rule: a normal truncated at "
                                   "initializer_cutoff_factor·σ, with σ shrunk for the output projections by depth")
    r = bert.config.initializer_range
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        fresh = type(bert.model)(bert.config)
    kinds = initialised(fresh)
    table = fresh.get_parameter(bert.anatomy.word_embeddings + ".weight")
    pad = fresh.get_submodule(bert.anatomy.word_embeddings).padding_idx
    matrices = kinds["matrices"]
    n, beyond_2 = matrices.numel(), int((matrices.abs() > 2 * r).sum())
    p_normal = math.erfc(2 / math.sqrt(2))  # P(|z| > 2) of a standard normal: 0.0455
    share, half_width = within_binomial_bound(beyond_2, n, p_normal)
    std_half_width = 5 / math.sqrt(2 * n)  # the sample std's relative standard error is 1/sqrt(2n)
    evidence.table(f"a fresh {type(bert.model).__name__} from the checkpoint's config (initializer_range {r})",
                   ["parameters", "count", "observed", "plain normal", "truncated at 2σ"],
                   [("matrices: std / initializer_range", n, matrices.std().item() / r, f"1 ± {std_half_width:.4f}", "0.88"),
                    ("matrices: share beyond 2σ", n, share, f"{p_normal:.4f} ± {half_width:.4f}", "0"),
                    ("LayerNorm weights: all 1", kinds["norm weights"].numel(), bool((kinds["norm weights"] == 1).all()), True, True),
                    ("biases: all 0", kinds["biases"].numel(), bool((kinds["biases"] == 0).all()), True, True),
                    (f"padding row {pad}: all 0", table.shape[1], pad is None or bool((table[pad] == 0).all()), True, True)])
    assert abs(matrices.std().item() / r - 1) <= std_half_width
    assert abs(share - p_normal) <= half_width, "a truncated normal has no draw beyond its cut"
    assert torch.equal(kinds["norm weights"], torch.ones_like(kinds["norm weights"]))
    assert torch.equal(kinds["biases"], torch.zeros_like(kinds["biases"]))
    assert pad is None or torch.equal(table[pad], torch.zeros_like(table[pad]))


# ---- P6.50 dynamic masking ----

EPOCHS = 4


def test_the_mlm_collator_draws_new_masks_every_time_it_sees_an_example_unlike_bert_s_static_masks(tokenizer, evidence):
    """DataCollatorForLanguageModeling masks dynamically: the same examples collated once per epoch get different masks each time, while masks made once and then only padded repeat every epoch, as BERT's did.

    The collator draws the positions to mask when it is called (a Bernoulli
    draw per token in ``torch_mask_tokens``), so every epoch sees new masks
    of the same examples — RoBERTa's dynamic masking. Google's
    create_pretraining_data.py masked once while writing the data, and wrote
    ``dupe_factor`` (10) copies with different masks, so each sequence saw the
    same 10 masks over training: static masking. To get that with transformers,
    mask in ``dataset.map`` and collate with padding only. Over the epochs the
    dynamic masks cover 1 − 0.85^E of the ordinary tokens at least once, the
    static ones stay at 0.15.

    Claim ID: P6.50
    Question: Does DataCollatorForLanguageModeling mask statically (like BERT) or dynamically (like RoBERTa)?
    问题：DataCollatorForLanguageModeling 是静态遮盖（像 BERT）还是动态遮盖（像 RoBERTa）？
    中文：DataCollatorForLanguageModeling 动态遮盖：同样的样本每个 epoch 整理一次，每次得到不同的遮盖；而遮盖一次后只做 padding 的数据每个 epoch 都重复同样的遮盖，正如 BERT 当年那样。
    原因：整理器在被调用时才抽取要遮盖的位置（``torch_mask_tokens`` 中每个 token 一次伯努利抽样），所以每个 epoch 看到同一批样本的
    新遮盖——即 RoBERTa 的动态遮盖。Google 的 create_pretraining_data.py 在写数据时遮盖一次，并写出 ``dupe_factor``（10）份遮盖
    不同的副本，所以每个序列在整个训练中只见过这 10 种遮盖：静态遮盖。要在 transformers 中得到静态遮盖，就在 ``dataset.map`` 中
    遮盖，再只用 padding 整理。多个 epoch 下来，动态遮盖至少覆盖普通 token 的 1 − 0.85^E，静态遮盖始终是 0.15。
    Asked in: huggingface/transformers#5979, huggingface/transformers#14284, PaddlePaddle/PaddleNLP#1340, facebookresearch/XLM#151, google-research/bert#1332, keras-team/keras-hub#796
    """
    examples = tokenizer(texts_for(tokenizer).corpus()[:8])["input_ids"]
    dynamic = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        masked = [dynamic([list(e) for e in examples]) for _ in range(EPOCHS)]
    once = masked[0]
    padding_only = transformers.DataCollatorWithPadding(tokenizer)
    static = [padding_only([{"input_ids": ids, "labels": labels} for ids, labels in
                            zip(once["input_ids"].tolist(), once["labels"].tolist())]) for _ in range(EPOCHS)]
    dynamic_masks = [b["labels"] != -100 for b in masked]
    static_masks = [b["labels"] != -100 for b in static]
    ordinary = ~torch.isin(torch.nn.utils.rnn.pad_sequence([torch.tensor(e) for e in examples], batch_first=True,
                                                           padding_value=tokenizer.pad_token_id),
                           torch.tensor(tokenizer.all_special_ids))
    n = int(ordinary.sum())
    covered = int(torch.stack(dynamic_masks).any(0).sum())
    expected = 1 - 0.85 ** EPOCHS
    share, half_width = within_binomial_bound(covered, n, expected)
    distinct = {tuple(m.flatten().tolist()) for m in dynamic_masks}
    evidence.table(f"{len(examples)} examples, {n} ordinary tokens, {EPOCHS} epochs",
                   ["masking", "distinct masks", "tokens masked at least once", "expected"],
                   [("dynamic: DataCollatorForLanguageModeling each epoch", len(distinct), share,
                     f"1 − 0.85^{EPOCHS} = {expected:.3f} ± {half_width:.3f}"),
                    ("static: masked once, DataCollatorWithPadding each epoch",
                     len({tuple(m.flatten().tolist()) for m in static_masks}),
                     int(static_masks[0].sum()) / n, "0.15, the same tokens every epoch")])
    assert len(distinct) == EPOCHS, "the collator must draw new masks every time it is called"
    assert all(torch.equal(m, static_masks[0]) and torch.equal(m, dynamic_masks[0]) for m in static_masks)
    assert abs(share - expected) <= half_width


# ---- P6.51 the three dropout knobs ----

KNOBS = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.2, "classifier_dropout": 0.3}


def dropout_sites(bert, **overrides) -> dict[str, float]:
    """Every dropout of the family's sequence classifier built from the checkpoint's config with ``overrides``, by module
    path with the layer index written {i}, and its probability (4.57's sdpa keeps attention's as a float)."""
    config = bert.config.__class__.from_dict({**bert.config.to_dict(), **overrides})
    config._attn_implementation = bert.attn_implementation
    with torch.device("meta"):
        model = getattr(transformers, bert.anatomy.class_name("ForSequenceClassification"))(config)
    sites = {}
    for path, module in model.named_modules():
        path = re.sub(r"\.\d+\.", ".{i}.", path)
        if isinstance(module, nn.Dropout):
            sites[path] = module.p
        if isinstance(getattr(module, "dropout_prob", None), float):
            sites[path + ".dropout_prob"] = module.dropout_prob
    return sites


def test_hidden_dropout_acts_after_embeddings_and_sublayers_attention_dropout_on_the_probabilities_and_classifier_dropout_only_in_the_head(
        bert, evidence):
    """hidden_dropout_prob sets the dropout after the embeddings and after every sublayer, attention_probs_dropout_prob the one on the attention probabilities, and classifier_dropout only the classification head's, which falls back to hidden_dropout_prob when None.

    Built from the checkpoint's config with three distinct probabilities
    (0.1, 0.2, 0.3), every dropout of the family's sequence classifier shows
    which knob set it: the embeddings' and each sublayer's output dropout
    (before its residual add) carry hidden_dropout_prob, the self-attention's
    carries attention_probs_dropout_prob (applied to the softmax's
    probabilities; in 5.x attention reads its p into the attention function,
    and 4.57's sdpa keeps it as a float), and the head's carries
    classifier_dropout — added by PR #12794 so that a head's dropout could be
    tuned without the encoder's. With classifier_dropout None the head takes
    hidden_dropout_prob. The tempting answers fail: raising
    hidden_dropout_prob does not raise attention dropout, and
    classifier_dropout changes nothing in the encoder. All of them act only in
    train mode.

    Claim ID: P6.51
    Question: hidden_dropout_prob, attention_probs_dropout_prob, classifier_dropout — which dropout is where?
    问题：hidden_dropout_prob、attention_probs_dropout_prob、classifier_dropout 分别作用在哪里？
    中文：hidden_dropout_prob 设定嵌入之后与每个子层之后的 dropout，attention_probs_dropout_prob 设定作用于注意力概率的 dropout，classifier_dropout 只设定分类头的 dropout，为 None 时退回 hidden_dropout_prob。
    原因：用 checkpoint 的 config 加上三个互不相同的概率（0.1、0.2、0.3）构建该家族的序列分类模型，每个 dropout 都显示是哪个参数设定的：
    嵌入与每个子层输出处（残差相加之前）的 dropout 取 hidden_dropout_prob，自注意力的取 attention_probs_dropout_prob（作用于 softmax 的
    概率；5.x 中注意力把这个 p 传给注意力函数，4.57 的 sdpa 把它存为浮点数），分类头的取 classifier_dropout——PR #12794 加入它，让分类头
    的 dropout 可以单独调整而不动编码器。classifier_dropout 为 None 时分类头取 hidden_dropout_prob。诱人的答案都会失败：调高
    hidden_dropout_prob 不会调高注意力 dropout，classifier_dropout 不改变编码器里的任何东西。它们都只在训练模式下起作用。
    Asked in: huggingface/transformers#12781, huggingface/transformers#12794, huggingface/transformers#13087, huggingface/transformers#3928, bojone/r-drop#7, charles9n/bert-sklearn#18, google-research/albert#23
    """
    missing = [knob for knob in KNOBS if not hasattr(bert.config, knob)]
    if missing:
        scope.not_applicable(bert, f"its config has no {', '.join(missing)}: it names its dropouts otherwise")
    sites = dropout_sites(bert, **KNOBS)
    fallback = dropout_sites(bert, **{**KNOBS, "classifier_dropout": None})
    a = bert.anatomy
    role = {a.embeddings + ".dropout": "hidden_dropout_prob",
            **{path: "attention_probs_dropout_prob" for path in sites if path.startswith(f"{a.layers}.{{i}}.{a.self_attention}.")},
            **{path: "hidden_dropout_prob" for path in sites if path.startswith(a.layers) and path.endswith("output.dropout")},
            **{path: "classifier_dropout" for path in sites if not path.startswith((a.embeddings, a.layers))}}
    evidence.table("each dropout, built with hidden 0.1, attention 0.2, classifier 0.3",
                   ["module", "p", "set by", "p with classifier_dropout None"],
                   [(path, p, role.get(path, "?"), fallback[path]) for path, p in sites.items()])
    assert set(role) == set(sites), f"dropouts in no expected place: {set(sites) - set(role)}"
    assert all(sites[path] == KNOBS[knob] for path, knob in role.items())
    assert "classifier_dropout" in role.values() and "attention_probs_dropout_prob" in role.values()
    assert all(fallback[path] == (KNOBS["hidden_dropout_prob"] if knob == "classifier_dropout" else sites[path])
               for path, knob in role.items())


# ---- P6.52 gradient checkpointing ----

def checkpointing_on(model: nn.Module, kwargs: dict | None) -> None:
    """Checkpoint every layer; 5.x renamed gradient_checkpointing_enable to activation_checkpointing_enable."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(kwargs)


def reentrant_in_use(model: nn.Module) -> bool:
    """The use_reentrant a checkpointed layer hands torch.utils.checkpoint (its checkpoint function is a partial)."""
    layer = next(m for m in model.modules() if getattr(m, "gradient_checkpointing", False))
    return layer._gradient_checkpointing_func.keywords["use_reentrant"]


def test_gradient_checkpointing_recomputes_the_same_dropout_masks_so_loss_and_gradients_are_unchanged(mlm, evidence):
    """Gradient checkpointing leaves the loss and the gradients unchanged even with dropout on, because the recompute restores the RNG state; with preserve_rng_state=False the gradients change.

    A checkpointed layer (``GradientCheckpointingLayer``, only in train mode)
    keeps its inputs, not its activations, and runs its forward again during
    backward. Dropout inside it would then draw new masks, and the gradient
    would belong to another network than the loss; torch.utils.checkpoint
    saves the RNG state before the forward and restores it for the recompute
    (``preserve_rng_state=True``, the default), so the same masks come back.
    Three copies in train mode under one seed: without checkpointing, with it
    as transformers enables it (use_reentrant True in 4.57, False from 5.x),
    and with the RNG not preserved. The loss is the same in all three; the
    gradients equal the plain ones only where the RNG state is restored.

    Claim ID: P6.52
    Question: Does gradient checkpointing change the loss or gradients when dropout is on?
    问题：开启 dropout 时，梯度检查点（gradient checkpointing）会改变 loss 或梯度吗？
    中文：即使开启 dropout，梯度检查点也不改变 loss 与梯度，因为重算时恢复了随机数状态；设 preserve_rng_state=False 时梯度会改变。
    原因：被检查点的层（``GradientCheckpointingLayer``，只在训练模式下）只保存输入而不保存激活，反向传播时重新运行前向。其中的 dropout
    这时会抽取新的 mask，梯度就属于另一个网络而不是算出 loss 的那个；torch.utils.checkpoint 在前向之前保存随机数状态、重算时恢复
    （``preserve_rng_state=True``，默认值），于是得到相同的 mask。在同一种子下训练模式的三个副本：不用检查点、按 transformers 的方式
    开启（4.57 中 use_reentrant 为 True，5.x 起为 False）、以及不保存随机数状态。三者 loss 相同；只有恢复了随机数状态时梯度才等于不用
    检查点的梯度。
    Asked in: huggingface/transformers#26221, huggingface/transformers#6258, openai/guided-diffusion#167, lucidrains/enformer-pytorch#33, allenai/OLMo-core#828, huggingface/diffusers#652, cybertronai/gradient-checkpointing#35, ankanbhunia/PIDM#66
    """
    needs_dropout(mlm)
    if not mlm.model.supports_gradient_checkpointing:
        scope.not_applicable(mlm, f"{type(mlm.model).__name__} of transformers {versions.VERSION} has no gradient checkpointing")
    batch = masked_batch(mlm)
    labels = answer_labels(mlm, batch)
    words = mlm.anatomy.word_embeddings + ".weight"

    def loss_and_gradient(kwargs=None, checkpointed=True):
        model = copy.deepcopy(mlm.model).train()
        if checkpointed:
            checkpointing_on(model, kwargs)
        with torch.random.fork_rng():
            torch.manual_seed(SEED)
            loss = model(**batch.as_kwargs(), labels=labels).loss
            loss.backward()  # not autograd.grad: reentrant checkpointing (4.57's default) refuses it
        reentrant = reentrant_in_use(model) if checkpointed else None
        return loss.detach(), model.get_parameter(words).grad, reentrant

    plain_loss, plain_grad, _ = loss_and_gradient(checkpointed=False)
    default_loss, default_grad, reentrant = loss_and_gradient()
    lost_loss, lost_grad, _ = loss_and_gradient({"use_reentrant": False, "preserve_rng_state": False})
    evidence.table("train mode, one seed: the word embeddings' gradient", ["run", "loss", "max |grad − plain grad|"],
                   [("no checkpointing", plain_loss, 0.0),
                    (f"checkpointing as enabled (use_reentrant={reentrant})", default_loss, max_diff(default_grad, plain_grad)),
                    ("checkpointing, preserve_rng_state=False", lost_loss, max_diff(lost_grad, plain_grad))])
    evidence.table("use_reentrant when enabled without arguments",
                   *versions.table(versions.CHECKPOINT_REENTRANT, ["transformers"], versions.MAJOR))
    assert reentrant == versions.CHECKPOINT_REENTRANT[versions.MAJOR]
    tolerance = kernel_tolerance(mlm.attn_implementation)
    torch.testing.assert_close(default_loss, plain_loss, **tolerance)
    torch.testing.assert_close(lost_loss, plain_loss, **tolerance)
    torch.testing.assert_close(default_grad, plain_grad, **tolerance)
    assert beyond(lost_grad, plain_grad, TOL["float32_kernels"]), "recomputed dropout masks must change the gradient"
