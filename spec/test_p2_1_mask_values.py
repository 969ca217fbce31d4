"""Chapter P2.1 — the mask's values: what reaches each layer, the additive
(1.0 - mask) * finfo.min, the same mask in train and eval mode, and why "all zeros" is right.

Every claim runs on each chosen attention implementation (``attn_implementation``
parametrizes the ``bert`` fixture). The batch is the plan's sentence beside a
shorter one, right-padded, so row 1 ends in [PAD] positions
(bertspec.proof.examples.padded_batch).
"""

import pytest
import torch

from bertspec.models import versions
from bertspec.models.loading import last_hidden_state
from bertspec.proof import scope
from bertspec.proof.compare import beyond
from bertspec.proof.examples import padded_batch, unpadded_batch
from bertspec.proof.reference import additive_mask
from bertspec.proof.tolerances import TOL, kernel_tolerance
from bertspec.tracing import masks
from bertspec.tracing.modes import dropout_disabled, dropout_probabilities, training


@pytest.mark.counterfeits("mask_dropped")
def test_every_layer_receives_the_same_mask_built_once_from_the_2d_mask(bert, evidence):
    """Every layer's attention receives one and the same mask, built once from the 2D attention_mask.

    BertModel converts the 2D ``attention_mask`` (1 = real token, 0 = [PAD]) once,
    before the encoder, and passes the result unchanged to every layer; the mask
    allows exactly the keys whose 2D entry is 1, for every query. The evidence
    lists, per layer, the form received.

    Claim ID: P2.1a
    Question: Does every layer build its own attention mask?
    问题：每一层都各自构造 attention mask 吗？
    中文：每一层的 attention 收到的是同一个 mask，由二维 attention_mask 只构造一次。
    原因：BertModel 在进入 encoder 之前把二维 mask（1=真实 token，0=[PAD]）转换一次，
    然后原样传给每一层；对每个 query，它只允许二维 mask 为 1 的 key。证据按层列出收到的形式。
    """
    batch = padded_batch(bert)
    scope.attends_globally(bert, batch.input_ids.shape[1])
    trace, _ = bert.trace(batch)
    received = trace.all("attention_mask")
    b, t = batch.input_ids.shape
    evidence.table("mask received per layer (padded batch)", ["step", "form"],
                   [(s.name, masks.form(s.tensor, b, t)) for s in received])
    assert len(received) == bert.config.num_hidden_layers
    first = received[0].tensor
    assert first is not None, "a padded batch must reach the layers with a mask"
    for step in received[1:]:
        assert step.tensor is first or torch.equal(step.tensor, first), f"{step.name} got another mask"
    expected = batch.attention_mask.cpu().bool()[:, None, :].expand(b, t, t)
    assert torch.equal(masks.allowed(first, b, t), expected)


@pytest.mark.parametrize("padding", ["unpadded", "padded"])
def test_the_mask_reaching_the_layers_has_the_form_read_in_this_transformers_version(bert, padding, evidence):
    """The mask a layer receives is None, boolean or additive float, as this transformers version's code says.

    The form depends on the version and on the attention implementation (see
    MASK_FORM in bertspec/models/versions.py): transformers 4.x eager always materialises
    ``(1.0 - mask) * finfo.min`` as [B, 1, 1, T] (all -0.0 without padding, the
    famous "all-zero" mask); 4.x sdpa and all of 5.x skip the mask (None) when
    nothing is padded; with padding 5.x gives eager an additive [B, 1, T, T]
    float and sdpa a boolean [B, 1, T, T]. The test states what it observed for
    the installed version and fails if that changes.

    Claim ID: P2.1a
    Question: What form does the mask take inside a layer: None, boolean or float?
    问题：mask 传到层里时是什么形式：None、布尔还是浮点？
    中文：各层收到的 mask 是 None、布尔张量还是加性浮点张量，取决于所装 transformers 版本的代码。
    原因：形式取决于版本与 attention 实现（见 bertspec/models/versions.py 的 MASK_FORM）：
    4.x eager 总是构造 [B,1,1,T] 的 (1.0-mask)*finfo.min（无 padding 时全为 -0.0，即"全0"mask）；
    4.x sdpa 与 5.x 在没有 padding 时直接传 None；有 padding 时 5.x 给 eager 加性浮点 [B,1,T,T]、
    给 sdpa 布尔 [B,1,T,T]。测试记录所装版本的实际形式，一旦改变即失败。
    """
    batch = padded_batch(bert) if padding == "padded" else unpadded_batch(bert)
    trace, _ = bert.trace(batch)
    b, t = batch.input_ids.shape
    observed = str(masks.form(trace.all("attention_mask")[0].tensor, b, t))
    key = (versions.MAJOR, bert.attn_implementation, padding)
    known = versions.mask_form(bert.anatomy.family)
    evidence.table(f"observed on transformers {versions.VERSION}, {bert.attn_implementation}, {padding}",
                   ["observed", "expected"], [(observed, known.get(key, "—"))])
    evidence.table(f"every version × implementation, as read in each version's code ({bert.anatomy.name})",
                   *versions.table(known, ["transformers", "attention", "input"], key))
    if key not in known:
        pytest.skip(f"no reading of transformers {versions.VERSION}'s mask code yet; observed: {observed}")
    assert observed == known[key]


@pytest.mark.across_families
@pytest.mark.counterfeits("mask_dropped", "mask_value_minus_infinity")
@pytest.mark.carries(
    decoder=scope.differs_on("a causal layer mask also hides every future key: the padding mask merged with the causal "
                             "triangle, or None and sdpa's is_causal flag", scope.CAUSAL_MASK_FORM),
    encoder_decoder=scope.differs_on("T5's encoder gets a padding mask, its decoder a causal one, its cross-attention "
                                     "the encoder's padding mask", scope.CAUSAL_MASK_FORM))
def test_a_float_layer_mask_equals_one_minus_mask_times_the_dtype_minimum(bert, evidence):
    """Where the layer gets a float mask, it is (1.0 - attention_mask) * finfo(dtype).min.

    Kept keys add 0 to their score, padded keys add float32's most negative
    finite number, -3.4028e38. 4.x eager computes exactly this formula (kept
    keys come out as -0.0, since (1 - 1) * min = -0.0); 5.x eager reaches the
    same values another way (+0.0). 5.x sdpa passes a boolean instead: the
    formula is not used on that path, which the evidence states. Adding is
    what hides padding: multiplying the scores by the 0/1 mask gives a padded
    key the score 0, still weight e^0 before normalising, and multiplying the
    probabilities by the mask after softmax leaves rows summing to less than 1;
    the evidence computes both beside the additive route on layer 0's scores.

    Claim ID: P2.1b
    Question: How is the 0/1 attention_mask turned into the numbers added to the scores?
    问题：0/1 的 attention_mask 是怎样变成加到分数上的数值的？
    中文：当层收到浮点 mask 时，它等于 (1.0 - attention_mask) * finfo(dtype).min。
    原因：保留的 key 加 0，padding 的 key 加 float32 最小有限值 -3.4028e38。4.x eager 正是用这个公式
    （保留位置为 -0.0，因为 (1-1)*min = -0.0）；5.x eager 用另一种方式得到相同数值（+0.0）；
    5.x sdpa 直接传布尔 mask，不经过该公式，证据中会注明这一点。屏蔽 padding 靠的是加法：把分数乘以 0/1 mask，padding 的 key
    分数变成 0，归一化前权重仍是 e^0；softmax 之后再把概率乘以 mask，则每行之和小于 1；证据在第 0 层的分数上把这两种做法与加法并列计算。
    Asked in: huggingface/transformers#542, huggingface/transformers#1935, huggingface/transformers#5295, huggingface/transformers#12109, huggingface/transformers#14537, huggingface/transformers#3121, https://community.deeplearning.ai/t/c5-w4-a1-transformer-subclass-v1-intuition-for-1-mask-1e9/882643
    """
    scope.needs_additive_mask(bert)
    batch = padded_batch(bert)
    trace, _ = bert.trace(batch)
    received = trace.all("attention_mask")[0].tensor
    assert received is not None, "a padded batch reached the layer without a mask"
    formula = additive_mask(batch.attention_mask, torch.float32).to(received.device)
    scores = trace.tensor(trace.all("scores")[0].name).cpu()
    keep, pad = batch.attention_mask.cpu()[:, None, None, :].to(scores.dtype), batch.attention_mask.cpu() == 0
    routes = {"add (1 - mask) · finfo.min, then softmax": torch.softmax(scores + formula.cpu(), -1),
              "multiply the scores by the mask, then softmax": torch.softmax(scores * keep, -1),
              "softmax, then multiply the probabilities by the mask": torch.softmax(scores, -1) * keep}
    evidence.table("layer 0's scores, the mask applied three ways", ["route", "largest probability at a [PAD] key",
                   "smallest row sum"], [(name, p.permute(0, 3, 1, 2)[pad].max(), p.sum(-1).min()) for name, p in routes.items()])
    added, multiplied, zeroed = routes.values()
    assert bool((added.permute(0, 3, 1, 2)[pad] == 0).all())
    torch.testing.assert_close(added.sum(-1), torch.ones_like(added.sum(-1)), **TOL["prob_sum"])
    assert bool((multiplied.permute(0, 3, 1, 2)[pad] > 0).all()), "a score of 0 still has weight e^0 before normalising"
    assert beyond(zeroed.sum(-1), torch.ones_like(zeroed.sum(-1)), TOL["prob_sum"]), "zeroing after softmax keeps rows at 1"
    if received.dtype == torch.bool:
        evidence.text("path", "this version passes a boolean mask to this implementation: no additive formula; "
                              "the boolean equals attention_mask == 1 broadcast over queries")
        assert torch.equal(received, (formula == 0).expand_as(received))
        return
    same_signs = torch.equal(torch.signbit(received), torch.signbit(formula.expand_as(received)))
    evidence.table("received vs formula (row 1)", ["key position", "attention_mask", "received", "formula"],
                   [(j, int(batch.attention_mask[1, j]), received[1, 0, -1, j].item(), formula[1, 0, 0, j].item())
                    for j in range(batch.attention_mask.shape[1])])
    evidence.text("sign of the zeros", "built by the formula itself (-0.0)" if same_signs else "same values, built another way (+0.0)")
    assert received.dtype == torch.float32
    assert torch.equal(received, formula.expand_as(received))


def test_adding_the_all_zero_mask_leaves_every_score_bit_for_bit_unchanged(bert, evidence):
    """Where a layer receives the "all-zero" mask (-0.0) of an unpadded batch, adding it changes no score, not even in the last bit.

    (1.0 - 1) * finfo.min is -0.0 (a positive zero times a negative number), and
    x + (-0.0) == x exactly for every float x, including +0.0. So the
    "all-zero" mask people see when printing it is not a bug: it is the
    additive identity, and it leaves attention untouched. Which versions
    materialise it (bertspec/models/versions.py, MASK_FORM): transformers 4.x eager
    hands every layer this [B, 1, 1, T] tensor of -0.0, and the claim adds the
    mask the layer received to the scores it observed; 4.x sdpa and 5.x pass
    None when nothing is padded, so no all-zero mask exists there, and the claim
    shows that and checks the same identity on the formula's mask instead.

    Claim ID: P2.1d
    Question: Why is the attention mask all zeros?
    问题：为什么 attention mask 全是 0？
    中文：当层收到无 padding batch 的"全0"mask（-0.0）时，加上它不会改变任何分数，连最后一位都不变。
    原因：(1.0-1)*finfo.min 等于 -0.0（正零乘以负数），而对任何浮点数 x 有 x + (-0.0) == x（含 +0.0）。
    所以打印出的"全0" mask 不是 bug，而是加法单位元，不改变 attention。哪些版本会构造它（bertspec/models/versions.py 的 MASK_FORM）：
    transformers 4.x eager 给每层一个 [B,1,1,T]、全为 -0.0 的张量，本断言把层实际收到的 mask 加到观测到的分数上；
    4.x sdpa 与 5.x 在没有 padding 时传 None，那里不存在全0 mask，本断言如实说明，并改用公式构造的 mask 检查同一恒等式。
    """
    batch = unpadded_batch(bert)
    trace, _ = bert.trace(batch)
    scope.needs_additive_mask(bert)
    expected = versions.mask_form(bert.anatomy.family)[(versions.MAJOR, bert.attn_implementation, "unpadded")]
    received = trace.all("attention_mask")[0].tensor
    all_zero = received.cpu() if received is not None else additive_mask(batch.attention_mask.cpu(), torch.float32)
    scores = trace.tensor(trace.all("scores")[0].name).cpu()
    shifted = scores + all_zero
    origin = ("received by the layers" if received is not None else
              "built by the formula: this version and implementation pass None when nothing is padded")
    evidence.table("the all-zero mask", ["mask", "entries", "all -0.0 (sign bit set)", "scores changed bitwise"],
                   [(origin, all_zero.numel(), bool(torch.signbit(all_zero).all()),
                     int((shifted.view(torch.int32) != scores.view(torch.int32)).sum()))],
                   derived=trace.all("scores")[0].source == "derived")
    assert (received is None) == (expected == "None")
    assert bool((all_zero == 0).all())
    assert bool(torch.signbit(all_zero).all()) == ("-0.0" in expected or expected == "None"), "(1 - mask) · min is -0.0"
    assert torch.equal(shifted.view(torch.int32), scores.view(torch.int32))


def test_no_mask_an_all_zero_mask_and_an_all_ones_2d_mask_give_the_same_outputs(bert, evidence):
    """No mask, a materialised all-zero mask and an all-ones 2D mask give the same encoder output.

    The three are the same statement, "every key may be attended": the first
    adds nothing, the second adds 0, the third is turned into one of the first
    two by transformers. Eager attention computes identical bits; sdpa may route
    a masked call to another fused kernel, so it is held to the float32 kernel
    tolerance (bertspec.proof.tolerances).

    Claim ID: P2.1d
    Question: Do no mask, an all-zero mask and an all-ones mask give the same output?
    问题：不传 mask、全 0 mask 与全 1 mask 的输出一样吗？
    中文：不传 mask、显式的全0 mask、全1的二维 mask，三者得到相同的 encoder 输出。
    原因：三者表达的都是"所有 key 都可见"：第一个什么都不加，第二个加 0，第三个被 transformers
    转换成前两者之一。eager 结果逐位相同；sdpa 可能因有无 mask 选择不同的融合内核，
    按 float32 内核容差（bertspec.proof.tolerances）比较。
    """
    batch = unpadded_batch(bert)
    scope.attends_globally(bert, batch.input_ids.shape[1])
    b, t = batch.input_ids.shape
    all_ones = bert.last_hidden(batch)
    with masks.layer_mask_replaced(bert.model, lambda mask, hidden: None):
        no_mask = bert.last_hidden(batch)
    zeros = torch.zeros(b, 1, t, t, device=batch.input_ids.device)
    with masks.layer_mask_replaced(bert.model, lambda mask, hidden: zeros):
        all_zero = bert.last_hidden(batch)
    evidence.table("max |difference| of the last hidden state", ["pair", "max abs diff"],
                   [("no mask vs all-ones 2D", (no_mask - all_ones).abs().max()),
                    ("all-zero 4D vs all-ones 2D", (all_zero - all_ones).abs().max())])
    torch.testing.assert_close(no_mask, all_ones, **kernel_tolerance(bert.attn_implementation))
    torch.testing.assert_close(all_zero, all_ones, **kernel_tolerance(bert.attn_implementation))


def test_train_and_eval_modes_hand_every_layer_the_same_mask(bert, evidence):
    """model.train() and model.eval() give every layer the identical mask.

    The mask is built from attention_mask alone; nothing in its construction
    reads ``self.training``. Dropout is the only train-time switch.

    Claim ID: P2.1c
    Question: Is the attention mask different in train mode and eval mode?
    问题：训练模式和推理模式下的 attention mask 一样吗？
    中文：训练模式与推理模式下，每一层收到的 mask 完全相同。
    原因：mask 只由 attention_mask 构造，构造过程不读取 self.training；训练时唯一的开关是 dropout。
    """
    batch = padded_batch(bert)
    eval_trace, _ = bert.trace(batch)
    torch.manual_seed(0)
    with training(bert.model):
        train_trace, _ = bert.trace(batch)
    pairs = list(zip(eval_trace.all("attention_mask"), train_trace.all("attention_mask")))
    evidence.table("mask per layer", ["layer step", "identical"], [(e.name, torch.equal(e.tensor, t.tensor)) for e, t in pairs])
    assert len(pairs) == bert.config.num_hidden_layers
    for e, t in pairs:
        assert torch.equal(e.tensor, t.tensor), e.name


def test_train_mode_differs_from_eval_only_through_dropout(bert, evidence):
    """In train mode the output changes only because of dropout: with every dropout at 0, train equals eval.

    With dropout on (hidden and attention, p read from the dropout modules) two train-mode
    passes differ from eval; with every dropout probability set to 0 the
    train-mode pass reproduces eval exactly (eager) or within the float32
    kernel tolerance (sdpa). Inside the fused sdpa kernel, dropout is whatever
    ``dropout_p`` it is handed: it cannot see the module's mode, so transformers
    passes 0.0 when not training. Code that hands it p unconditionally keeps
    dropping attention in eval; the evidence calls the kernel both ways on
    layer 0's queries, keys and values.

    Claim ID: P2.1c
    Question: Why does the output change in train mode?
    问题：为什么训练模式下输出会变？
    中文：训练模式下输出的变化只来自 dropout：把所有 dropout 设为 0 后，训练模式与推理模式输出相同。
    原因：开启 dropout（hidden 与 attention，概率读自 dropout 模块）时训练模式输出与推理模式不同；
    把所有 dropout 概率设为 0 后，训练模式精确复现推理模式（eager），sdpa 在 float32 内核容差内相同。融合的 sdpa 内核里，dropout
    就是传给它的 dropout_p：内核看不到模块处于哪种模式，所以 transformers 在非训练时传 0.0。无条件传 p 的代码在推理模式下仍会丢弃
    attention；证据在第 0 层的 query、key、value 上按两种方式调用该内核。
    Asked in: pytorch/pytorch#124464, pytorch/pytorch#99293, pytorch/pytorch#126294, huggingface/pytorch-image-models#1978, wenet-e2e/wenet#2699, meta-pytorch/torchtune#1803
    """
    batch = padded_batch(bert)
    real = batch.attention_mask.bool()
    eval_out = bert.last_hidden(batch)
    torch.manual_seed(0)
    with training(bert.model):
        train_out = bert.last_hidden(batch)
        with dropout_disabled(bert.model):
            train_no_dropout = bert.last_hidden(batch)
    p = dropout_probabilities(bert.model)
    evidence.table("max |train - eval| on real tokens", ["dropout", "max abs diff"],
                   [(f"p in {sorted(p)}", (train_out - eval_out)[real].abs().max()),
                    ("all 0", (train_no_dropout - eval_out)[real].abs().max())])
    torch.testing.assert_close(train_no_dropout[real], eval_out[real], **kernel_tolerance(bert.attn_implementation))
    if max(p, default=0) > 0:
        assert (train_out - eval_out)[real].abs().max() > 1e-3, "dropout is on but train mode changed nothing"
    a = bert.anatomy
    trace, _ = bert.trace(batch)
    qkv = ([trace.tensor(a.projection_step(0, w)) for w in ("query", "key", "value")] if a.fused_qkv is None
           else trace.tensor(a.projection_step(0, "query")).chunk(3, -1))
    q, k, v = (x.unflatten(-1, (bert.config.num_attention_heads, -1)).transpose(1, 2) for x in qkv)
    # BERT's config calls it attention_probs_dropout_prob; DistilBERT's and ModernBERT's attention_dropout.
    p_attention = next(getattr(bert.config, name) for name in ("attention_probs_dropout_prob", "attention_dropout")
                       if hasattr(bert.config, name))

    def kernel_twice(dropout_p):
        first, second = (torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p) for _ in range(2))
        return (first - second).abs().max()

    assert not bert.model.training
    with torch.random.fork_rng():
        as_transformers, unconditional = kernel_twice(0.0), kernel_twice(p_attention)
    evidence.table("eval mode, sdpa kernel called twice on layer 0's q, k, v", ["dropout_p passed", "max |call 1 - call 2|"],
                   [("0.0 when not training (transformers)", as_transformers), (f"{p_attention} always", unconditional)])
    assert as_transformers == 0
    if p_attention > 0:
        assert unconditional > 0, "the kernel drops out whatever the module's mode when handed dropout_p > 0"


def test_eval_is_deterministic_and_train_mode_repeats_only_under_the_same_seed(bert, evidence):
    """Two eval passes are bit-identical; two train passes are identical under the same seed and differ under different seeds.

    Eval mode has no randomness at all. In train mode the only random thing
    is dropout, which draws from torch's generator: re-seeding reproduces the
    same dropout masks bit for bit, another seed draws others (when the
    config's dropout probabilities are above 0). That dropout is the only
    difference from eval is chapter P2's claim. Which mode a model starts in
    depends on how it was made: ``from_pretrained`` calls ``eval()`` before
    returning, while a model built from its config (then given weights by
    ``load_state_dict``) is fresh from ``nn.Module.__init__``, in train mode,
    and drops out on every call until ``eval()``; the evidence builds both.

    Claim ID: P2.1c
    Question: Are BERT's outputs reproducible in eval mode and in train mode?
    问题：BERT 的输出在推理模式和训练模式下可复现吗？
    中文：两次推理模式的前向传播逐位相同；训练模式下相同随机种子的两次结果相同，不同种子则不同。
    原因：推理模式没有任何随机性。训练模式下唯一的随机来源是 dropout，它从 torch 的随机数生成器取数：重新设同一种子
    会逐位复现相同的 dropout mask，换一个种子则得到不同的 mask（config 中 dropout 概率大于 0 时）。dropout 是与推理模式唯一
    的区别，见 P2 章的断言。模型从哪种模式开始取决于它是怎样得到的：from_pretrained 在返回前调用 eval()；而由 config 构造
    （再用 load_state_dict 装入权重）的模型刚从 nn.Module.__init__ 出来，处于训练模式，在调用 eval() 之前每次调用都做 dropout；
    证据把两种都构造出来。
    Asked in: huggingface/transformers#679, huggingface/transformers#1270, huggingface/transformers#2627, huggingface/transformers#4769, huggingface/transformers#565, huggingface/transformers#10564, oliverguhr/german-sentiment#5
    """
    batch = bert.example()
    real = batch.attention_mask.bool()

    def train_pass(seed):
        torch.manual_seed(seed)
        with training(bert.model):
            return last_hidden_state(bert.model, batch)

    first, second = last_hidden_state(bert.model, batch), last_hidden_state(bert.model, batch)
    with torch.random.fork_rng():
        seeded, reseeded, other_seed = train_pass(0), train_pass(0), train_pass(1)
    p = max(dropout_probabilities(bert.model), default=0)
    evidence.table("last hidden state, real tokens", ["pair", "max |diff|"],
                   [("eval vs eval", (first - second)[real].abs().max()),
                    ("train seed 0 vs seed 0", (seeded - reseeded)[real].abs().max()),
                    ("train seed 0 vs seed 1", (seeded - other_seed)[real].abs().max())])
    assert torch.equal(first, second)
    assert torch.equal(seeded, reseeded)
    if p > 0:
        assert beyond(seeded[real], other_seed[real], TOL["float32_kernels"]), "another seed should draw other dropout masks"
    pretrained = type(bert.model).from_pretrained(bert.folder, attn_implementation=bert.attn_implementation)
    built = type(bert.model)(pretrained.config).to(bert.device)
    built.load_state_dict(pretrained.state_dict())
    with torch.random.fork_rng():
        built_twice = [bert.anatomy.encoder(built)(**batch.as_kwargs()).last_hidden_state.detach() for _ in range(2)]
    evidence.table("how the model was made", ["made by", "training", "max |call 1 - call 2|, real tokens"],
                   [("from_pretrained(folder)", pretrained.training, "—"),
                    ("Model(config) + load_state_dict", built.training, (built_twice[0] - built_twice[1])[real].abs().max())])
    assert not pretrained.training and built.training
    if p > 0:
        assert beyond(built_twice[0][real], built_twice[1][real], TOL["float32_kernels"]), "a built model drops out"


def test_the_bundled_models_layer_0_attention_on_the_padded_batch_matches_its_snapshot(bert, snapshot, evidence):
    """The bundled model's layer-0 attention on the padded batch is the reviewed one.

    What makes these values right is asserted by the claims above (zero at
    [PAD] keys, rows summing to 1, the mask allowing exactly the real keys); the
    snapshot pins the rest — the bundled model's learned scores — so that a
    change in transformers, torch or the model file shows up as a reviewable
    diff. The allowed-matrix is the same for every mask form, which is why one
    snapshot serves eager and sdpa on transformers 4 and 5.

    Claim ID: P2.1a
    Question: Has the bundled model's layer-0 attention changed since it was reviewed?
    问题：自带模型第 0 层的 attention 与审核时相比有变化吗？
    中文：自带模型在 padding batch 上第 0 层的 attention 与已审核的快照一致。
    原因：这些数值为何正确由上面的断言保证（[PAD] 处为 0、每行和为 1、mask 恰好允许真实 key）；
    快照固定其余部分（模型学到的分数），使 transformers、torch 或模型文件的变化表现为可审阅的差异。
    allowed 矩阵对每种 mask 形式都相同，所以同一个快照适用于 transformers 4 与 5 上的 eager 与 sdpa。
    """
    batch = padded_batch(bert)
    trace, _ = bert.trace(batch)
    b, t = batch.input_ids.shape
    reviewed = {
        "allowed": masks.allowed(trace.all("attention_mask")[0].tensor, b, t).to(torch.int64),
        "probs_layer0_head0_row1": trace.tensor(trace.all("probs")[0].name)[1, 0],
    }
    tokens = bert.tokens(batch, 1)
    evidence.table("the snapshot's values, sequence 1 (layer 0, head 0): may each key be attended, and its probability "
                   "from each query", ["query", *tokens],
                   [("allowed (every query)", *reviewed["allowed"][1, 0].tolist()),
                    *((q, *row.tolist()) for q, row in zip(tokens, reviewed["probs_layer0_head0_row1"]))])
    assert snapshot == reviewed
