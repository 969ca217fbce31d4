"""Chapter P7 — the same understanding across the BERT family: what carries over, and each difference shown.

Every claim of P1–P6 runs on each family with ``--family all`` (the bundled
RoBERTa, DistilBERT, ALBERT, ELECTRA generator and ModernBERT beside BERT,
fixtures/family/) or on any family's checkpoint with ``--bert-model``; the
default run runs this chapter's claims, and a few of P2–P4 that teach what
carries over (marked ``across_families``), on every bundled family too. Where a
family's mechanism is another one, the general claim skips saying so and names
the claim here that shows the family's own mechanism, asserted on that model
(P7.2). The handbook's comparison table (P7.3) is built from those skips.
"""

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bertspec.handbook import claims, collect, render, verdicts
from bertspec.models import anatomy, versions
from bertspec.plugin import COLLECTOR
from bertspec.proof import scope
from bertspec.proof.tolerances import TOL, kernel_tolerance
from bertspec.tracing import probe
from bertspec.tracing.trace import module_path

# Chapter P7 is the family's evidence: each of its claims runs on every bundled family in the default run too.
pytestmark = pytest.mark.across_families


def only(model, family: str) -> None:
    if model.anatomy.family != family:
        scope.not_applicable(model, f"a mechanism of {anatomy.FAMILIES[family].name}, shown on the {family} model")


def one_token_repeated(bert, length: int):
    """One row of ``length`` real tokens, all the example's first ordinary token: only the positions differ."""
    token = bert.tokenizer.convert_tokens_to_ids(bert.tokenizer.tokenize(bert.texts.short)[0])
    return bert.batch(torch.full((1, length), token, device=bert.device))


def position_ids_used(bert, batch) -> torch.Tensor:
    """The position ids the model itself made for ``batch``: what its position table was indexed with."""
    seen = []
    table = bert.module(bert.anatomy.position_embeddings)
    handle = table.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        bert.last_hidden(batch)
    finally:
        handle.remove()
    return seen[0]


# ---- P7.1 the same claims on each family ----

def test_every_role_the_anatomy_names_is_a_module_of_the_model_and_every_step_name_a_true_module_path(bert, evidence):
    """Every role bertspec.models.anatomy names for the family — embeddings, each layer's sublayers, the head — is a module of the loaded model, and every traced step is named by a true module path.

    The claims of P1–P6 never spell a module path; they ask the family's
    anatomy where a role lives (``bert.encoder.layer.0.attention.self`` in
    BERT, ``distilbert.transformer.layer.0.attention`` in DistilBERT,
    ``model.layers.0.attn`` in ModernBERT, ALBERT's one shared layer with its
    occurrence ``@k``). That is only sound if every path resolves in the model
    under test, the tracer records each of them under its own name, with
    the mask, scores, scores + mask and probabilities of every layer, and the
    anatomy leaves nothing out (every Linear and LayerNorm of the model has a
    step).

    Claim ID: P7.1
    Question: Do the claims about BERT really run on RoBERTa, DistilBERT, ALBERT, ELECTRA and ModernBERT?
    问题：关于 BERT 的结论真的能在 RoBERTa、DistilBERT、ALBERT、ELECTRA 和 ModernBERT 上运行吗？
    中文：bertspec.models.anatomy 为该家族列出的每个角色——嵌入、每层的子层、预测头——都是所加载模型中的模块，trace 的每一步都以真实的模块路径命名。
    原因：P1–P6 的结论从不写出模块路径；它们向家族的 anatomy 询问某个角色在哪里（BERT 中是 bert.encoder.layer.0.attention.self，
    DistilBERT 中是 distilbert.transformer.layer.0.attention，ModernBERT 中是 model.layers.0.attn，ALBERT 则是唯一的共享层加上出现序号 @k）。
    只有当每条路径都能在被测模型中解析、tracer 也把每一个都按其名字记录下来（包括每一层的 mask、scores、scores + mask 与概率），
    并且 anatomy 没有遗漏任何东西（模型的每个 Linear 与 LayerNorm 都有一步）时，这才成立。
    """
    a = bert.anatomy
    roles = a.traced(bert.model)
    wanted = [p for p in (a.embeddings, a.word_embeddings, a.position_embeddings, a.token_type_embeddings,
                          a.embedding_norm, a.embedding_projection, a.final_norm, a.head_dense, a.head_activation,
                          a.head_norm, a.decoder) if p is not None]
    layers = a.distinct_layers or bert.config.num_hidden_layers
    trace, _ = bert.trace(bert.example())
    n = bert.config.num_hidden_layers
    evidence.table(f"{a.name}: roles → module paths", ["role", "path", "module"],
                   [(kind, path, type(module).__name__) for path, kind, module in roles])
    evidence.table("conventions", ["", a.name],
                   [("MLM class", a.mlm_class), ("norm order", a.norm_order), ("positions", a.positions),
                    ("token types", "yes" if a.token_type_embeddings else "none"),
                    ("layers with weights of their own", layers), ("decoder bias (state-dict key)", a.decoder_bias)])
    assert {path for path, _, _ in roles} >= set(wanted)
    assert sum(kind == "attention" for _, kind, _ in roles) == layers
    bert.model.get_parameter(a.decoder_bias)
    traced = {module_path(step.name) for step in trace}
    computing = {path for path, m in bert.model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm))}
    assert computing <= traced, f"modules that compute but are not traced: {sorted(computing - traced)}"
    for quantity in ("attention_mask", "scores", "scores+mask", "probs"):
        assert [s.name for s in trace.all(quantity)] == [a.attention_step(i, quantity) for i in range(n)]


# ---- P7.2 RoBERTa ----

@pytest.mark.counterfeits("roberta_positions_from_zero")
def test_roberta_counts_positions_from_after_padding_idx_so_left_padding_leaves_them_alone(bert, evidence):
    """RoBERTa numbers the real tokens padding_idx + 1, padding_idx + 2, … and gives every [PAD] position padding_idx itself, so the same sentence gets the same position embeddings however it is padded.

    RobertaEmbeddings computes, when no position_ids are passed,
    ``cumsum(ids ≠ pad) · (ids ≠ pad) + pad`` (create_position_ids_from_input_ids),
    where BERT uses 0..T-1 for every row. So RoBERTa's table has padding_idx + 1
    rows more than its usable length (roberta-base: 514 for 512 tokens), and
    left padding, which shifts BERT's positions (P4.1b), leaves RoBERTa's real
    tokens at their positions. Checked on the traced position embeddings of a
    right- and a left-padded batch, and on the ids the model makes for the
    longest input bertspec allows (max_positions tokens): they end on the
    table's last row, so no shorter limit wastes rows and one more token would
    need a row the table lacks. The counterfeit roberta_positions_from_zero
    (BERT's 0..T-1) fails it.

    Claim ID: P7.2
    Question: How does RoBERTa number positions, and why can it be padded on the left?
    问题：RoBERTa 怎样给位置编号？为什么它可以在左侧 padding？
    中文：RoBERTa 把真实 token 编号为 padding_idx + 1、padding_idx + 2……，每个 [PAD] 位置编号为 padding_idx 本身，因此同一句话无论怎样 padding 都得到相同的位置嵌入。
    原因：不传 position_ids 时，RobertaEmbeddings 计算 cumsum(ids ≠ pad) · (ids ≠ pad) + pad（create_position_ids_from_input_ids），
    而 BERT 对每一行都用 0..T-1。所以 RoBERTa 的位置表比可用长度多 padding_idx + 1 行（roberta-base 为 514 行对应 512 个 token），
    而会让 BERT 的位置错开的左侧 padding（P4.1b）不会移动 RoBERTa 真实 token 的位置。在右侧与左侧 padding 的 batch 上用 trace 到的
    位置嵌入检查，并检查模型为 bertspec 允许的最长输入（max_positions 个 token）生成的位置 id：它们恰好止于位置表的最后一行，
    所以更短的上限会浪费表行，而多一个 token 就需要表中没有的一行。反例 roberta_positions_from_zero（BERT 的 0..T-1）使它失败。
    Asked in: huggingface/transformers#11242, huggingface/transformers#10736, huggingface/transformers#15292, huggingface/transformers#9116, huggingface/transformers#1761, huggingface/transformers#19265, facebookresearch/fairseq#1187, VinAIResearch/PhoBERT#35, vickyzayats/roberta_tf_ckpt#3
    """
    only(bert, "roberta")
    a, pad = bert.anatomy, bert.config.pad_token_id
    table = bert.module(a.position_embeddings).weight.detach()
    rows = []
    for side in ("right", "left"):
        batch = bert.encode([bert.texts.sentence, bert.texts.short], padding_side=side)
        trace, _ = bert.trace(batch)
        real = batch.attention_mask.bool()
        expected = torch.where(real, real.long().cumsum(-1) + pad, pad)
        used = trace.tensor(a.position_embeddings).expand(*batch.input_ids.shape, -1)
        rows += [(side, r, bert.tokens(batch, r)[0], expected[r].tolist()) for r in range(2)]
        assert torch.equal(used, table[expected]), f"{side}-padded: position embeddings are not table[positions]"
    evidence.table(f"position ids (padding_idx = {pad})", ["padding", "row", "first token", "position id per position"], rows)
    longest = position_ids_used(bert, one_token_repeated(bert, bert.max_positions))[0]
    evidence.table("the longest input bertspec allows", ["tokens (max_positions)", "position ids the model made",
                                                         "rows in the position table"],
                   [(bert.max_positions, f"{int(longest[0])} … {int(longest[-1])}", table.shape[0])])
    assert torch.equal(longest.cpu(), torch.arange(pad + 1, pad + 1 + bert.max_positions)), "from padding_idx + 1"
    assert int(longest[-1]) == table.shape[0] - 1, "the longest input ends on the table's last row"


# ---- P7.2 DistilBERT ----

@pytest.mark.counterfeits("mask_dropped")
def test_distilbert_has_no_token_types_and_receives_its_padding_mask_by_its_own_route(bert, evidence):
    """DistilBERT's embeddings are word + position alone (no token types), and its attention receives the padding mask by a route of its own on each version.

    DistilBERT dropped BERT's segments: its Embeddings module has no
    token-type table, so the LayerNorm's input is exactly word + position.
    Given token_type_ids anyway, 4.57's DistilBertForMaskedLM refuses them
    (TypeError: no such parameter) and 5.x's accepts them into **kwargs and
    never reads them (the logits do not change): a silent trap
    (bertspec/models/versions.py, DISTILBERT_TOKEN_TYPE_IDS). The mask: 4.57's eager
    attention takes the raw 2D 0/1 mask as ``mask=`` and hides padded keys
    itself with masked_fill; its sdpa class and 5.x take a 4D mask, 5.x under
    BERT's name ``attention_mask`` (its MaskRoute in bertspec.models.anatomy). The counterfeit
    mask_dropped (every attention handed no mask) fails it.

    Claim ID: P7.2
    Question: How does DistilBERT handle token types and the attention mask differently from BERT?
    问题：DistilBERT 在 token type 与 attention mask 上和 BERT 有什么不同？
    中文：DistilBERT 的嵌入只有词嵌入加位置嵌入（没有 token type），它的 attention 在每个版本上都经由自己的路径接收 padding mask。
    原因：DistilBERT 去掉了 BERT 的片段：它的 Embeddings 模块没有 token type 表，所以 LayerNorm 的输入恰好是词 + 位置。
    若仍传入 token_type_ids，4.57 的 DistilBertForMaskedLM 拒绝（TypeError：没有这个参数），5.x 把它收进 **kwargs 却从不读取
    （logits 不变）：一个无声的陷阱（bertspec/models/versions.py 的 DISTILBERT_TOKEN_TYPE_IDS）。mask：4.57 的 eager attention 以 mask= 接收
    原始的二维 0/1 mask，自己用 masked_fill 屏蔽 padding 的 key；它的 sdpa 类与 5.x 接收四维 mask，5.x 用 BERT 的参数名 attention_mask
    （bertspec.models.anatomy 中它的 MaskRoute）。反例 mask_dropped（每个 attention 都拿不到 mask）使它失败。
    Asked in: huggingface/transformers#6900, jina-ai/executors#16, huggingface/transformers#19766
    """
    from bertspec.tracing import masks

    only(bert, "distilbert")
    a = bert.anatomy
    batch = bert.example()
    trace, output = bert.trace(batch)
    embeddings = bert.module(a.embeddings)
    by_hand = trace.tensor(a.word_embeddings) + trace.tensor(a.position_embeddings)
    assert not hasattr(embeddings, "token_type_embeddings")
    assert torch.equal(trace.tensor(f"{a.embedding_norm}:input"), by_hand)
    try:
        with torch.no_grad():
            typed = bert.model(**batch.as_kwargs(), token_type_ids=torch.ones_like(batch.input_ids)).logits
        given = "accepted and ignored" if torch.equal(typed, output.logits) else "accepted and used"
    except TypeError:
        given = "TypeError"
    keys = []
    hook = bert.module(a.attention(0)).register_forward_pre_hook(
        lambda m, args, kwargs: keys.extend(k for k in kwargs if k.endswith("mask") and k != "head_mask"),
        with_kwargs=True)
    try:
        bert.trace(batch)
    finally:
        hook.remove()
    b, t = batch.input_ids.shape
    form = str(masks.form(trace.all("attention_mask")[0].tensor, b, t))
    key = (versions.MAJOR, bert.attn_implementation, "padded")
    route = a.receives_mask(bert.attn_implementation)
    evidence.table(f"transformers {versions.VERSION}, {bert.attn_implementation}", ["", "observed", "expected"], [
        ("token-type table", "none", "none"),
        ("token_type_ids passed anyway", given, versions.DISTILBERT_TOKEN_TYPE_IDS[versions.MAJOR]),
        ("the mask arrives as", keys[0], route.argument),
        ("the padded mask's form", form, versions.mask_form("distilbert").get(key, "—")),
    ])
    assert given == versions.DISTILBERT_TOKEN_TYPE_IDS[versions.MAJOR]
    assert keys == [route.argument]
    assert form == versions.mask_form("distilbert")[key]


# ---- P7.2 ALBERT ----

@pytest.mark.counterfeits("albert_layers_untied")
def test_albert_runs_one_layers_weights_num_hidden_layers_times_on_embeddings_projected_up_from_embedding_size(bert, evidence):
    """ALBERT has one layer's weights and runs them num_hidden_layers times; its embeddings are embedding_size wide and one Linear projects them up to hidden_size.

    ALBERT shares parameters across depth: AlbertTransformer calls the same
    AlbertLayer at every depth (one group of one layer), so the model holds
    one layer's parameters, and each call's output is that layer applied to
    the previous call's output — checked by calling the layer's own forward
    on each recorded input. Its embeddings are factorised: vocabulary × E,
    then embedding_hidden_mapping_in (E → H), once, before the first layer
    (albert-base-v2: E = 128, H = 768). The counterfeit albert_layers_untied
    (layers with weights of their own) fails it.

    Claim ID: P7.2
    Question: What does ALBERT share, and why are its embeddings narrower than its layers?
    问题：ALBERT 共享了什么？为什么它的嵌入比层窄？
    中文：ALBERT 只有一层的权重，却运行 num_hidden_layers 次；它的嵌入宽度为 embedding_size，再由一个 Linear 投影到 hidden_size。
    原因：ALBERT 在深度方向共享参数：AlbertTransformer 在每个深度调用同一个 AlbertLayer（一组一层），所以模型只有一层的参数，
    每次调用的输出就是这一层作用于上一次调用的输出——通过在每个记录到的输入上调用该层自己的 forward 来检查。
    它的嵌入是分解的：词表 × E，再由 embedding_hidden_mapping_in（E → H）在第一层之前投影一次（albert-base-v2：E = 128，H = 768）。
    反例 albert_layers_untied（每层有自己的权重）使它失败。
    Asked in: google-research/google-research#110, google-research/albert#175, google-research/albert#210, lonePatient/albert_pytorch#48, brightmart/albert_zh#133, huggingface/transformers#1950
    """
    only(bert, "albert")
    a, config = bert.anatomy, bert.config
    layer_type = type(bert.module(a.layers))
    shared = [m for m in bert.model.modules() if type(m) is layer_type]
    calls = []

    def record(module, args, kwargs, output):
        calls.append((args, kwargs, output[0] if isinstance(output, tuple) else output))

    handle = shared[0].register_forward_hook(record, with_kwargs=True)
    try:
        trace, _ = bert.trace(bert.example())
    finally:
        handle.remove()
    projection = bert.module(a.embedding_projection)
    rows = []
    for k, (args, kwargs, output) in enumerate(calls):
        with torch.no_grad():
            again = shared[0].forward(*args, **kwargs)  # the layer's own arithmetic, without any hook
        again = again[0] if isinstance(again, tuple) else again
        follows = torch.equal(args[0], calls[k - 1][2]) if k else torch.equal(args[0], trace.tensor(a.embedding_output))
        rows.append((k, follows, (again - output).abs().max()))
        torch.testing.assert_close(again, output, **kernel_tolerance(bert.attn_implementation))
        assert follows, f"call {k} does not read call {k - 1}'s output"
    evidence.table("the shared layer, call by call", ["call", "reads the previous output", "max |its forward again - output|"],
                   rows)
    evidence.table("factorised embeddings", ["embedding_size E", "hidden_size H", "projection", "parameters in layers"],
                   [(config.embedding_size, config.hidden_size, f"{projection.in_features} → {projection.out_features}",
                     sum(p.numel() for p in shared[0].parameters()))])
    assert len(shared) == 1 and len(calls) == config.num_hidden_layers
    assert bert.word_embeddings.embedding_dim == config.embedding_size
    assert (projection.in_features, projection.out_features) == (config.embedding_size, config.hidden_size)
    assert trace[a.embeddings].shape[-1] == config.embedding_size and trace[a.embedding_output].shape[-1] == config.hidden_size


# ---- P7.2 ELECTRA ----

@pytest.mark.counterfeits("untied_decoder")
def test_electras_generator_head_maps_hidden_size_down_to_embedding_size_and_scores_against_the_tied_embeddings(mlm, evidence):
    """ELECTRA's generator is a narrow MLM: its head maps hidden_size down to embedding_size, and the decoder scores that against the tied embedding-size word embeddings.

    ELECTRA trains a small generator (this MLM) beside the discriminator; the
    generator shares the discriminator's embeddings, which are embedding_size
    wide, so its head cannot end in hidden_size as BERT's does: dense
    (H → E), activation, LayerNorm over E, then logits = t · E_wordᵀ + b with
    the decoder weight the word-embedding matrix itself. Recomputed by hand
    from sequence_output. When E ≠ H (google/electra-small-generator: E = 128,
    H = 256) embeddings_project (E → H) feeds the layers; with E = H there is
    none. The counterfeit untied_decoder (a decoder with its own copy of the
    weights) fails it.

    Claim ID: P7.2
    Question: How does ELECTRA's generator head differ from BERT's MLM head?
    问题：ELECTRA 生成器的预测头与 BERT 的 MLM 头有什么不同？
    中文：ELECTRA 的生成器是一个窄的 MLM：它的头把 hidden_size 映射回 embedding_size，decoder 再用共享权重的 embedding_size 宽的词嵌入打分。
    原因：ELECTRA 在判别器旁训练一个小生成器（就是这个 MLM）；生成器与判别器共享宽度为 embedding_size 的嵌入，所以它的头不能像 BERT
    那样停在 hidden_size：dense（H → E）、激活、在 E 上的 LayerNorm，然后 logits = t · E_wordᵀ + b，decoder 的权重就是词嵌入矩阵本身。
    由 sequence_output 手工重算。E ≠ H 时（google/electra-small-generator：E = 128，H = 256）由 embeddings_project（E → H）接入各层；
    E = H 时没有这个投影。反例 untied_decoder（decoder 持有权重的一份独立拷贝）使它失败。
    """
    only(mlm, "electra")
    a, config = mlm.anatomy, mlm.config
    dense, activation, norm = (mlm.module(p) for p in (a.head_dense, a.head_activation, a.head_norm))
    batch = mlm.example()
    trace, output = mlm.trace(batch)
    h = trace.tensor(a.sequence_output_step(config.num_hidden_layers))
    with torch.no_grad():
        by_hand = F.linear(norm(activation(dense(h))), mlm.word_embeddings.weight, mlm.decoder_bias)
    projected = a.resolve(mlm.model, a.embedding_projection) is not None
    evidence.table("the generator", ["embedding_size", "hidden_size", "head dense", "decoder weight is the word embeddings",
                                     "embeddings_project", "max |by hand - logits|"],
                   [(config.embedding_size, config.hidden_size, f"{dense.in_features} → {dense.out_features}",
                     mlm.decoder.weight is mlm.word_embeddings.weight, projected, (by_hand - output.logits).abs().max())])
    assert (dense.in_features, dense.out_features) == (config.hidden_size, config.embedding_size)
    assert norm.normalized_shape == (config.embedding_size,)
    assert mlm.decoder.weight is mlm.word_embeddings.weight
    assert projected == (config.embedding_size != config.hidden_size)
    torch.testing.assert_close(by_hand, output.logits, **TOL["reference_component"])


# ---- P7.2 ModernBERT ----

def test_modernbert_normalises_before_each_sublayer_and_once_more_after_the_last_layer(bert, evidence):
    """ModernBERT is pre-LN: each layer computes h = x + Attn(LN(x)), then h + MLP(LN(h)), a final LayerNorm follows the last layer, and its MLP is a gated GeGLU.

    BERT normalises after each residual sum (post-LN); ModernBERT normalises
    each sublayer's input and adds to an unnormalised residual stream, which
    is why it needs model.final_norm after the last layer. Its first layer's
    attn_norm is the identity (the embeddings' own norm plays that role). The
    MLP's Wi makes 2 × intermediate features: act(first half) × second half
    goes into Wo (GeGLU). Each sum is checked bit for bit on the traced
    tensors; the GeGLU by hand.

    Claim ID: P7.2
    Question: Where does ModernBERT put its LayerNorms, and what is its feed-forward?
    问题：ModernBERT 把 LayerNorm 放在哪里？它的前馈网络是什么？
    中文：ModernBERT 是 pre-LN：每层先算 h = x + Attn(LN(x))，再算 h + MLP(LN(h))，最后一层之后还有一个 LayerNorm，它的 MLP 是带门控的 GeGLU。
    原因：BERT 在每次残差相加之后做归一化（post-LN）；ModernBERT 对每个子层的输入做归一化，加到未归一化的残差流上，因此最后一层之后
    需要 model.final_norm。第一层的 attn_norm 是恒等映射（嵌入自己的 norm 起这个作用）。MLP 的 Wi 产生 2 × intermediate 个特征：
    act(前一半) × 后一半 送进 Wo（GeGLU）。每个加法都在 trace 到的张量上逐位检查；GeGLU 手工验证。
    """
    only(bert, "modernbert")
    a, n = bert.anatomy, bert.config.num_hidden_layers
    trace, _ = bert.trace(bert.example())
    x = trace.tensor(a.embeddings)
    rows = []
    for i in range(n):
        attn_norm = bert.module(a.in_layer(i, a.attention_norm))
        h = trace.tensor(a.step(i, a.output_norm, "input"))  # what mlm_norm reads: the residual after attention
        ffn_in = trace.tensor(a.step(i, a.ffn_in))
        gate_in, gate = ffn_in.chunk(2, dim=-1)
        wo = bert.module(a.in_layer(i, a.ffn_out))
        with torch.no_grad():
            geglu = F.linear(trace.tensor(a.step(i, a.ffn_activation)) * gate, wo.weight, wo.bias)
        rows.append((i, type(attn_norm).__name__, torch.equal(trace.tensor(a.step(i, a.attention_norm, "input")), x),
                     torch.equal(h, x + trace.tensor(a.attention_step(i))), (geglu - trace.tensor(a.step(i, a.ffn_out))).abs().max()))
        assert torch.equal(trace.tensor(a.step(i, a.attention_norm, "input")), x), f"layer {i}: LN reads the residual"
        assert torch.equal(h, x + trace.tensor(a.attention_step(i))), f"layer {i}: h = x + Attn(LN(x))"
        assert isinstance(attn_norm, torch.nn.Identity) == (i == 0)
        torch.testing.assert_close(trace.tensor(a.step(i, a.ffn_activation)), activation_of(bert)(gate_in), **TOL["exact"])
        torch.testing.assert_close(geglu, trace.tensor(a.step(i, a.ffn_out)), **TOL["reference_component"])
        x = h + trace.tensor(a.step(i, a.ffn_out))
        assert torch.equal(trace.tensor(a.layer_output_step(i, n)), x), f"layer {i}: output = h + MLP(LN(h))"
    evidence.table("each layer, pre-LN", ["layer", "attn_norm", "attn_norm reads x", "mlp_norm reads x + Attn",
                                          "max |act(first half) · second half through Wo - traced|"], rows)
    assert torch.equal(trace.tensor(f"{a.final_norm}:input"), x)


def activation_of(bert):
    from transformers.activations import ACT2FN

    return ACT2FN[bert.config.hidden_activation]


def rope_theta(config, i: int) -> float:
    """Layer i's rotary base: 5.x keeps one per layer type in rope_parameters, 4.57 a global and a local one."""
    if getattr(config, "rope_parameters", None):
        return config.rope_parameters[config.layer_types[i]]["rope_theta"]
    return config.global_rope_theta if i % config.global_attn_every_n_layers == 0 else config.local_rope_theta


def rotated(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x (B, H, T, d) rotated by position: pairs (j, j + d/2) turned by the angle position · theta^(-2j/d)."""
    d, t = x.shape[-1], x.shape[-2]
    inverse_frequencies = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = torch.arange(t, dtype=torch.float32)[:, None] * inverse_frequencies[None]
    cos, sin = torch.cat([angles, angles], -1).cos().to(x), torch.cat([angles, angles], -1).sin().to(x)
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], -1) * sin


def test_modernbert_has_no_position_table_and_rotates_queries_and_keys_by_position_instead(bert, evidence):
    """ModernBERT has no position embeddings: the same token gets the same embedding at every position, and attention scores are those of queries and keys rotated by their positions (RoPE).

    Positions enter attention only: after Wqkv, each head's query and key
    vectors are rotated pair by pair by an angle proportional to the position
    (θ = 160 000 in global layers, 10 000 in local ones, from the config), so
    q_i · k_j depends on i − j alone. Recomputed here from the traced Wqkv
    output, the rotated scores equal the traced ones; unrotated ones do not.
    So nothing limits the length but the model's training (no table to run out
    of), and a constant shift of every position changes nothing.

    Claim ID: P7.2
    Question: How does ModernBERT know where a token is, without position embeddings?
    问题：ModernBERT 没有位置嵌入，它怎样知道 token 在哪里？
    中文：ModernBERT 没有位置嵌入：同一个 token 在任何位置都得到相同的嵌入，注意力分数来自按位置旋转过的 query 与 key（RoPE）。
    原因：位置只进入 attention：Wqkv 之后，每个头的 query 与 key 向量按对旋转，角度与位置成正比（全局层 θ = 160 000，局部层 10 000，
    取自 config），所以 q_i · k_j 只取决于 i − j。这里由 trace 到的 Wqkv 输出重算，旋转后的分数等于 trace 到的分数，不旋转的则不等。
    因此限制长度的只是模型的训练（没有会用完的位置表），所有位置整体平移也不改变任何结果。
    """
    only(bert, "modernbert")
    a, config = bert.anatomy, bert.config
    heads = config.num_attention_heads
    trace, _ = bert.trace(one_token_repeated(bert, 6))
    same = trace.tensor(a.embeddings)[0]
    trace, _ = bert.trace(bert.example(padded=False))
    rows = []
    for i in range(config.num_hidden_layers):
        qkv = trace.tensor(a.projection_step(i, "query"))
        b, t, _ = qkv.shape
        q, k, _ = (x.view(b, t, heads, -1).transpose(1, 2) for x in qkv.chunk(3, dim=-1))
        d = q.shape[-1]
        theta = rope_theta(config, i)
        scores = rotated(q, theta) @ rotated(k, theta).transpose(-2, -1) / math.sqrt(d)
        plain = q @ k.transpose(-2, -1) / math.sqrt(d)
        traced = trace.tensor(a.attention_step(i, "scores"))
        rows.append((i, theta, (scores - traced).abs().max(), (plain - traced).abs().max()))
        torch.testing.assert_close(scores, traced, **TOL["float32_kernels"])
        assert (plain - traced).abs().max() > 1e-3, f"layer {i}: scores without rotation should differ"
    evidence.table("scores recomputed from the traced Wqkv output", ["layer", "rope θ", "max |rotated - traced|",
                                                                      "max |unrotated - traced|"], rows)
    assert not any(isinstance(m, torch.nn.Embedding) and m.num_embeddings == config.max_position_embeddings
                   for m in bert.model.modules() if m is not bert.word_embeddings)
    assert torch.equal(same, same[:1].expand_as(same)), "one token, six positions, one embedding"


def long_enough(bert, length: int):
    """A real, unpadded input of at least ``length`` tokens from the corpus (within the model's positions)."""
    text = ""
    for line in bert.texts.corpus():
        text += f" {line}"  # a space, so that no two lines glue their words together
        if len(bert.tokenizer.tokenize(text)) + 2 >= length:
            break
    ids = bert.tokenizer(text, return_tensors="pt")["input_ids"][:, :bert.max_positions].to(bert.device)
    if ids.shape[1] < length:
        pytest.skip(f"the corpus gives {ids.shape[1]} tokens; the window needs {length}")
    return bert.batch(ids)


@pytest.mark.counterfeits("modernbert_all_global")
def test_modernbert_local_layers_see_only_a_window_of_keys_and_global_layers_every_key(bert, evidence):
    """In ModernBERT's local layers a query sees only the keys within local_attention / 2 positions — every other key gets probability exactly 0 — while every global_attn_every_n_layers-th layer (0, 3, …) sees every key.

    ModernBERT alternates attention: layer i is global when i is a multiple
    of global_attn_every_n_layers (default 3) and local otherwise, where the
    mask it receives also hides every key farther than local_attention / 2
    (|i − j| > w/2; 5.x folds the window into the layer's mask, 4.57 passes a
    separate sliding_window_mask). Shown through what attention outputs
    (bertspec.tracing.probe), so it holds on the sdpa kernel too: shifting the first
    token's value moves exactly the queries within the window in a local
    layer, and every query in a global one. (On transformers 4.57 ModernBERT
    also runs unpadded — real tokens only, concatenated — on the
    flash-attention path; 5.x has no model-level unpadding. On eager and sdpa
    every layer works on the padded [B, H, T, T] in both, as the probs' shapes
    show.) Counterfeit: modernbert_all_global.

    Claim ID: P7.2
    Question: Does every ModernBERT layer attend to the whole sequence?
    问题：ModernBERT 的每一层都关注整个序列吗？
    中文：ModernBERT 的局部层中，query 只能看到 local_attention / 2 个位置以内的 key——其余 key 的概率严格为 0；每隔 global_attn_every_n_layers 层（第 0、3……层）是全局层，能看到所有 key。
    原因：ModernBERT 交替使用两种 attention：i 是 global_attn_every_n_layers（默认 3）的倍数时第 i 层为全局层，否则为局部层，它收到的 mask
    还会隐藏距离超过 local_attention / 2 的所有 key（|i − j| > w/2；5.x 把窗口并入该层的 mask，4.57 另传一个 sliding_window_mask）。
    通过 attention 的输出展示（bertspec.tracing.probe），因此对 sdpa 内核同样成立：平移第一个 token 的 value，在局部层中恰好改变窗口内的 query，
    在全局层中改变每个 query。（在 transformers 4.57 上，ModernBERT 在 flash-attention 路径上还会去掉
    padding 运行——只把真实 token 拼接起来；5.x 没有模型级的去 padding。两个版本的 eager 与 sdpa 上每一层都在带 padding 的
    [B, H, T, T] 上计算，概率的形状说明了这一点。）反例：modernbert_all_global。
    Asked in: vllm-project/semantic-router#3406, huggingface/transformers#35158
    """
    only(bert, "modernbert")
    config = bert.config
    half = config.local_attention // 2
    batch = long_enough(bert, half + 3)
    t = batch.input_ids.shape[1]
    first = torch.zeros_like(batch.input_ids, dtype=torch.bool)
    first[:, 0] = True
    moved = probe.value_influence(bert.model, batch.as_kwargs(), first)[:, 0]  # (L, H, T): queries moved by key 0
    trace, _ = bert.trace(batch)
    local = [anatomy.is_local(m) for _, m in bert.anatomy.self_attention_modules(bert.model)]
    within = torch.arange(t) <= half
    rows = []
    for i, m in enumerate(moved):
        reached = (m > 0).all(0)  # (T,) every head
        untouched = (m == 0).all(0)
        rows.append((i, "local" if local[i] else "global", int(reached.sum()), int(untouched.sum()),
                     trace.all("probs")[i].shape))
        assert local[i] == (i % config.global_attn_every_n_layers != 0), f"layer {i}"
        if local[i]:
            assert bool(reached[within].all()) and bool(untouched[~within].all()), f"layer {i}: the window is |i - j| <= {half}"
        else:
            assert bool(reached.all()), f"layer {i}: a global layer's queries all see key 0"
        assert trace.all("probs")[i].shape == (1, config.num_attention_heads, t, t)
    evidence.table(f"key 0's value shifted, {t} tokens, local_attention {config.local_attention} (window ±{half})",
                   ["layer", "kind", "queries moved", "queries untouched", "probs shape"], rows)


# ---- P7.3 the comparison table ----

STAND_IN_FAMILIES = ("bert", "roberta", "modernbert")
STAND_IN = {  # claim -> per family above: how its made-up run ended (passed unless a verdict or failure), its cell
    "test_padded_keys_get_exactly_zero_attention_probability": [({}, "holds")] * 3,
    "test_omitted_position_ids_count_from_0_to_t_minus_1": [
        ({}, "holds"),
        ({"verdict": scope.Verdict(scope.DIFFERS, "RoBERTa", "from padding_idx + 1", scope.ROBERTA_POSITIONS)}, "differs"),
        ({"verdict": scope.Verdict(scope.DIFFERS, "ModernBERT", "rotary", scope.MODERNBERT_ROTARY)}, "differs")],
    "test_pooler_output_is_tanh_of_a_dense_layer_on_the_cls_hidden_state_not_that_state_itself": [
        ({}, "holds"), ({"failure": "AssertionError: stand-in failure, not a result"}, "fails"),
        ({"verdict": scope.Verdict(scope.NOT_APPLICABLE, "ModernBERT", "ModernBertModel has no pooler")}, "n/a")],
}


def check_this_runs_table(table, evidence) -> None:
    """The rows of BERT's claims reported on every family so far, in the BERT family's columns (chapter P8's rows
    and the decoders' and T5's columns are P8.6's):
    a P7.2 claim holds on its own family alone (every family run: on one), n/a naming it on the others; a differing
    cell links to a P7.2 claim."""
    columns = [i for i, family in enumerate(table.families) if family in anatomy.FAMILIES]
    rows = [(result, [cells[i] for i in columns]) for result, cells in table.rows
            if {run.family for run in result.runs} >= set(table.families) and not result.claim.claim_id.startswith("P8.")]
    names = [table.names[i] for i in columns]
    evidence.table("this run's table: the claims reported on every family before this one", ["claim", *names],
                   [(r.function, *(c.kind for c in cells)) for r, cells in rows],
                   note=None if rows else "none yet in this process (random order, or another -n worker ran them)")
    for result, cells in rows:
        shown_by = [cell.shown_by for cell in cells if cell.kind == scope.DIFFERS]
        assert all("Claim ID: P7.2" in globals()[function].__doc__ for function in shown_by), result.function
        if result.claim.claim_id == "P7.2":
            holds = [name for name, cell in zip(names, cells) if cell.kind == "holds"]
            assert all(cell.kind in ("holds", scope.NOT_APPLICABLE) for cell in cells), result.function
            assert len(holds) == 1 if set(table.families) >= set(anatomy.FAMILIES) else len(holds) <= 1
            assert all(holds[0] in cell.why for cell in cells if cell.kind == scope.NOT_APPLICABLE), result.function


def check_the_stand_in_verdicts(settings, evidence) -> None:
    """The page rendered from made-up reports of three real claims on three families, one with each outcome."""
    discovered = claims.discover(Path(__file__).resolve().parent)
    families = STAND_IN_FAMILIES
    collector = collect.Collector()
    for function, runs in STAND_IN.items():
        for family, (ending, _) in zip(families, runs):
            collector.add(collect.synthetic_report(discovered[function], f"eager-{family}", family, **ending))
    for shown_by, family in ((scope.ROBERTA_POSITIONS, "roberta"), (scope.MODERNBERT_ROTARY, "modernbert")):
        collector.add(collect.synthetic_report(discovered[shown_by], f"eager-{family}", family))
    page = render.Page(collector, dataclasses.replace(settings, model_path=None, families=families))
    table = page.part("families")
    found = {}  # claim -> its rendered cells, in family order
    for result in (page.by_function[function] for function in STAND_IN):
        row = re.search(rf'<tr data-filter><th><a href="#{re.escape(result.anchor)}">.*?</th>(.*?)</tr>', table,
                        re.DOTALL)
        found[result.function] = re.findall(r'<td class="verdict ([^"]+)"', row.group(1))
    evidence.table("stand-in reports, not this run's results: the cells they render", ["claim", *families],
                   [(f, *kinds) for f, kinds in found.items()],
                   note="made-up reports, so that every kind of cell is checked whatever this session ran")
    assert found == {function: [kind for _, kind in runs] for function, runs in STAND_IN.items()}
    differs = page.by_function[scope.ROBERTA_POSITIONS]
    assert f'href="#{differs.anchor}"' in table, "a differing cell links to the claim that shows how"
    assert "ModernBertModel has no pooler" in table and "stand-in failure, not a result" in table
    for zh, en, mark in verdicts.VERDICTS.values():
        assert f"{mark} {zh}" in table and en in table, "each mark is in the legend in both languages"
    assert all(anatomy.FAMILIES[f].name in table for f in families)


def test_the_comparison_table_shows_each_claim_on_each_family_as_holds_differs_linked_not_applicable_or_fails(
        request, settings, evidence):
    """The handbook's comparison table gives every claim that ran per family one cell per architecture: holds, differs (linked to the claim that shows how), not applicable (with why) or fails, in both languages.

    The table is read off the runs: passed is holds; a ``scope.differs`` skip
    differs, linked to the claim that shows that family's own mechanism; a
    ``scope.not_applicable`` skip is n/a with its reason; a failure fails. The
    default run runs chapter P7 and the claims marked ``across_families`` on
    every bundled family (``--family all``: every claim). Checked on this run's
    table as far as this process has run it: each P7.2 claim holds on its own
    family alone, n/a naming it on the others; each differing cell links to a
    P7.2 claim; its census adds up to the front page's count. A green run has
    no failing cell, so every kind is also rendered from made-up reports,
    shown as such, never as a result.

    Claim ID: P7.3
    Question: Which BERT claims hold for RoBERTa, DistilBERT, ALBERT, ELECTRA and ModernBERT, and which differ?
    问题：哪些关于 BERT 的结论对 RoBERTa、DistilBERT、ALBERT、ELECTRA 和 ModernBERT 同样成立，哪些不同？
    中文：手册的对照表为每条按家族运行的结论在每个架构上给一个格子：成立、机制不同（链接到说明差异的结论）、不适用（附原因）或失败，中英文并列。
    原因：表格由运行结果得出：通过即成立；以 scope.differs 跳过为“机制不同”，链接到展示该家族自己机制的结论；以 scope.not_applicable
    跳过为“不适用”并附原因；失败即失败。默认运行在每个自带家族模型上运行第 P7 章及标记为 across_families 的结论（--family all：每条结论）。
    这里检查本次运行的表格（以本进程已运行的部分为限）：每条 P7.2 结论只在它自己的家族上成立，在其他家族上为“不适用”并指名该家族；
    每个“机制不同”的格子链接到一条 P7.2 结论；表格的分类加起来等于首页的计数。全部通过的运行没有“失败”的格子，所以每种格子还用构造的报告
    渲染检查，这些报告标明是构造的，从不当作结果展示。
    """
    page = render.Page(request.config.stash[COLLECTOR], settings)  # this session's reports so far (this worker's)
    table = page.family_table
    evidence.table("this run's claims so far, as the comparison table places them", ["", "claims"],
                   [("the front page's count", page.counts.claims),
                    *((verdicts.PARTS[part], n) for part, n in table.census.items())])
    assert table.accounted == page.counts.claims, "each claim on the front page is a row, run once, or a benchmark"
    if table.per_family:
        check_this_runs_table(table, evidence)
    check_the_stand_in_verdicts(settings, evidence)
