"""Chapter P6.28–P6.32 — questions learners asked in public threads about what BERT's forward pass returns and how
many parameters it has, each answered on the model under test with the tempting wrong answer failing beside it.

Sections: outputs and their switches (ModelOutput unpacking, head_mask, BertLMHeadModel's causal mask, sdpa and
output_attentions); counting parameters. Where transformers 4.x and 5.x differ, bertspec/models/versions.py holds
what each does and the claim marks what it observed. Positions and embeddings: spec/test_p6_21_embeddings_positions_and_outputs.py.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
import transformers

from bertspec.models import versions
from bertspec.proof import scope
from bertspec.proof.compare import beyond, max_diff
from bertspec.proof.tolerances import (
    TOL,
    attention_component,
    kernel_tolerance,
    model_tolerance,
    score_peak,
)


def berts_own(bert, what: str) -> None:
    """Skip on the other families: ``what`` is BERT's own class or formula, and the threads asked about it."""
    if bert.anatomy.family != "bert":
        scope.not_applicable(bert, f"the question is about {what}; {bert.anatomy.name}'s classes are other ones")


# ---- outputs and their switches ----

def test_unpacking_a_model_output_gives_its_key_names_while_return_dict_false_or_to_tuple_gives_the_tensors(bert, as_class, evidence):
    """`_, pooled = model(...)` binds the strings 'last_hidden_state' and 'pooler_output', because a ModelOutput is an ordered dict and iterating it yields its keys; return_dict=False, to_tuple() or indexing give the tensors.

    Since transformers v4 models return a ModelOutput by default. It is an
    OrderedDict of the fields that are not None, so tuple unpacking iterates
    over its keys, and the next layer meets a str: "dropout(): argument
    'input' must be Tensor, not str", the error in the threads. Old
    tutorials unpacked the tuple that ``return_dict=False`` still returns;
    ``out.to_tuple()``, ``out[1]`` and ``out.pooler_output`` give the same
    tensors, element for element.

    Claim ID: P6.28
    Question: Why does `_, pooled = bert(...)` give me the string 'pooler_output' instead of a tensor?
    问题：为什么 `_, pooled = bert(...)` 得到的是字符串 'pooler_output' 而不是张量？
    中文：`_, pooled = model(...)` 绑定的是字符串 'last_hidden_state' 和 'pooler_output'，因为 ModelOutput 是有序字典，迭代它得到的是键；return_dict=False、to_tuple() 或下标才给出张量。
    原因：自 transformers v4 起模型默认返回 ModelOutput。它是由非 None 字段组成的 OrderedDict，所以元组解包迭代的是它的键，下一层拿到的是 str：
    正是帖子里的错误 “dropout(): argument 'input' must be Tensor, not str”。旧教程解包的是 return_dict=False 仍会返回的元组；
    out.to_tuple()、out[1] 与 out.pooler_output 给出相同的张量，逐个对应。
    Asked in: qiangsiwei/bert_distill#11, abhishekkrthakur/bert-sentiment#19, abhishekkrthakur/bert-entity-extraction#5,
    hooshvare/parsbert#28, king-yyf/CMeKG_tools#19, fhamborg/NewsMTSC#3, hasanhuz/SpanEmo#3
    """
    if bert.anatomy.pooler is None:
        scope.not_applicable(bert, f"{bert.anatomy.class_name('Model')} has no pooler: there is no pooled output to unpack")
    model = as_class(bert.anatomy.class_name("Model"), bert.attn_implementation).model
    kwargs = bert.example().as_kwargs()
    with torch.no_grad():
        out, legacy = model(**kwargs), model(**kwargs, return_dict=False)
    first, pooled = out
    with pytest.raises(TypeError, match="must be Tensor, not str") as refused:
        F.dropout(pooled, 0.1)
    evidence.table(f"{type(model).__name__}(...) -> {type(out).__name__}", ["way", "gives"],
                   [("_, pooled = out", f"{first!r}, {pooled!r}"), ("F.dropout(pooled)", str(refused.value).splitlines()[0]),
                    ("return_dict=False", f"{type(legacy).__name__} of {', '.join(str(tuple(t.shape)) for t in legacy)}"),
                    ("out.to_tuple()", f"{type(out.to_tuple()).__name__} of {len(out.to_tuple())}")])
    assert (first, pooled) == ("last_hidden_state", "pooler_output")
    assert isinstance(legacy, tuple) and len(legacy) == len(out.to_tuple()) == len(out)
    for old, new in zip(legacy, out.to_tuple()):
        torch.testing.assert_close(old, new, **TOL["exact"])
    assert out[1] is out.pooler_output


def zero_head(bert, layer: int, head: int):
    """A hook that zeroes one head's context before layer ``layer``'s attention output projection."""
    width = bert.config.hidden_size // bert.config.num_attention_heads
    keep = torch.ones(bert.config.hidden_size, device=bert.device)
    keep[head * width:(head + 1) * width] = 0
    projection = bert.module(bert.anatomy.in_layer(layer, bert.anatomy.attention_output))
    return projection.register_forward_pre_hook(lambda m, args: (args[0] * keep, *args[1:]))


def test_head_mask_zeroes_a_head_on_transformers_4_and_is_silently_ignored_on_5(bert, evidence):
    """head_mask with one head's entry 0 switches that head off on transformers 4.x (the same output as zeroing its context) and is accepted and silently ignored on 5.x; the installed version does what the table says.

    4.57's BertSelfAttention multiplies the attention probabilities by
    ``head_mask`` (BertSdpaSelfAttention falls back to eager to do it), so the
    masked head contributes nothing; the head is still computed, so nothing
    gets faster (``prune_heads`` removes weights instead). 5.x removed head
    masking (PR #41076): BertModel takes the keyword through **kwargs and
    drops it, with no warning. A forward pre-hook that zeroes the head's slice
    of the context before the output projection switches the head off on
    both. The tempting answer on 5.x — "head_mask still masks heads" — is the
    assertion that fails there.

    Claim ID: P6.29
    Question: Does head_mask switch off attention heads?
    问题：head_mask 能关掉某些注意力头吗？
    中文：把某个头的 head_mask 设为 0，在 transformers 4.x 上会关掉这个头（与把它的 context 置零的输出相同），在 5.x 上则被接受并被悄悄忽略；所装版本的行为与表中一致。
    原因：4.57 的 BertSelfAttention 用 head_mask 乘注意力概率（BertSdpaSelfAttention 为此退回 eager），所以被屏蔽的头没有贡献；这个头仍然被计算，
    所以并不会变快（prune_heads 才会删掉权重）。5.x 移除了 head masking（PR #41076）：BertModel 通过 **kwargs 接收这个参数并丢弃，没有任何警告。
    在输出投影之前把该头那一段 context 置零的 forward pre-hook 在两个版本上都能关掉这个头。在 5.x 上，诱人的答案“head_mask 仍会屏蔽头”
    正是会失败的那个断言。
    Asked in: huggingface/transformers#1365, huggingface/transformers#1661, huggingface/transformers#19926,
    huggingface/transformers#41076, vllm-project/vllm#30764
    """
    berts_own(bert, "BertModel's head_mask")
    batch = bert.example()
    head_mask = torch.ones(bert.config.num_hidden_layers, bert.config.num_attention_heads, device=bert.device)
    head_mask[0, 0] = 0
    plain = bert.last_hidden(batch)
    masked = bert.last_hidden(batch, head_mask=head_mask)
    hook = zero_head(bert, 0, 0)
    try:
        hooked = bert.last_hidden(batch)
    finally:
        hook.remove()
    tolerance = model_tolerance(bert, batch, plain)
    observed = (versions.HEAD_MASK[4] if not beyond(masked, hooked, tolerance)
                else versions.HEAD_MASK[5] if torch.equal(masked, plain) else "something else")
    evidence.table(f"layer 0, head 0 switched off, transformers {versions.VERSION}, {bert.attn_implementation}",
                   ["route", "max |Δ| vs no mask", "max |Δ| vs the hook"],
                   [("head_mask", max_diff(masked, plain), max_diff(masked, hooked)), ("hook on the context", max_diff(hooked, plain), 0.0)])
    evidence.table("head_mask in each version", *versions.table(versions.HEAD_MASK, ["transformers"], versions.MAJOR))
    assert beyond(hooked, plain, tolerance)
    assert observed == versions.HEAD_MASK[versions.MAJOR]


def decoder_model(bert):
    """The checkpoint in BertLMHeadModel built with is_decoder=True (the config switch the threads miss)."""
    config = copy.deepcopy(bert.config)
    config.is_decoder = True
    model = transformers.BertLMHeadModel._from_config(config, attn_implementation=bert.attn_implementation)
    model.load_state_dict(bert.model.state_dict())
    return model.to(bert.device).eval()


def test_bert_lm_head_model_is_causal_only_with_is_decoder_true_otherwise_every_position_sees_the_future(bert, as_class, evidence):
    """BertLMHeadModel predicts left to right only when config.is_decoder is True: then BertModel builds a causal mask and changing a later token leaves every earlier position's logits unchanged; loaded as it is (is_decoder False) it attends both ways and they change.

    The causal mask is not in the head class: BertModel builds it when
    ``config.is_decoder`` is set (5.x: create_causal_mask in
    BertModel.forward, and the attention modules get is_causal; 4.57: the
    decoder branch of get_extended_attention_mask). BertLMHeadModel loaded
    from an MLM checkpoint keeps is_decoder False and only warns "add
    is_decoder=True", so it stays bidirectional. The tempting answer — the
    class is causal by itself — fails. (A checkpoint pre-trained with MLM is
    still no good left-to-right language model: #13818.)

    Claim ID: P6.30
    Question: Where is the causal mask in BertLMHeadModel — can BERT be used as a left-to-right language model?
    问题：BertLMHeadModel 的因果 mask 在哪里？BERT 能当从左到右的语言模型用吗？
    中文：只有 config.is_decoder 为 True 时 BertLMHeadModel 才从左到右预测：此时 BertModel 构造因果 mask，改变后面的 token 不会改变前面任何位置的 logits；按原样加载（is_decoder 为 False）时它双向关注，这些 logits 会改变。
    原因：因果 mask 不在头部类里：设置了 config.is_decoder 时由 BertModel 构造（5.x：BertModel.forward 中的 create_causal_mask，attention 模块得到 is_causal；
    4.57：get_extended_attention_mask 的 decoder 分支）。从 MLM checkpoint 加载的 BertLMHeadModel 保持 is_decoder 为 False，只警告“add is_decoder=True”，
    所以仍是双向的。诱人的答案——这个类本身就是因果的——不成立。（用 MLM 预训练的 checkpoint 仍然不是好的从左到右语言模型：#13818。）
    Asked in: huggingface/transformers#12704, huggingface/transformers#7495, huggingface/transformers#13818,
    huggingface/transformers#2321, huggingface/transformers#4517
    """
    berts_own(bert, "BertLMHeadModel")
    batch = bert.example(padded=False)
    t = batch.input_ids.shape[1]
    changed = batch.input_ids.clone()
    changed[0, t - 2] = bert.tokenizer.mask_token_id if changed[0, t - 2] != bert.tokenizer.mask_token_id else bert.tokenizer.unk_token_id
    models = {"is_decoder=True": decoder_model(bert),
              "as loaded (is_decoder=False)": as_class("BertLMHeadModel", bert.attn_implementation).model}
    moved = {}
    for name, model in models.items():
        with torch.no_grad():
            a = model(**batch.as_kwargs()).logits[0, : t - 2]
            b = model(**{**batch.as_kwargs(), "input_ids": changed}).logits[0, : t - 2]
        moved[name] = (a, b)
    evidence.table(f"token {t - 2} of {' '.join(bert.tokens(batch))} replaced", ["BertLMHeadModel", "config.is_decoder", f"max |Δ logits| at positions 0..{t - 3}"],
                   [(name, model.config.is_decoder, max_diff(*moved[name])) for name, model in models.items()])
    torch.testing.assert_close(*moved["is_decoder=True"], **kernel_tolerance(bert.attn_implementation))
    assert not models["as loaded (is_decoder=False)"].config.is_decoder
    assert beyond(*moved["as loaded (is_decoder=False)"], TOL["float32_kernels"])


def test_output_attentions_gives_eagers_probabilities_and_under_sdpa_what_the_installed_version_does(bert, evidence):
    """output_attentions=True returns one [B, heads, T, T] tensor of probabilities per layer with eager attention; with sdpa, transformers 4.x falls back to eager and returns the same probabilities, 5.x returns an empty tuple.

    The fused sdpa kernel never forms the probabilities. 4.57's
    BertSdpaSelfAttention, asked for them, runs the eager path instead (and
    warns that this fallback goes in v5); 5.x's sdpa attention only logs
    "`sdpa` attention does not support `output_attentions=True`" and the
    model's ``attentions`` is empty. Load with ``attn_implementation="eager"``
    to get them (or trace the model: bertspec derives them from q and k).
    Checked against the probabilities the tracer records (eager) or derives
    (sdpa), within the rounding bound of attention_component.

    Claim ID: P6.31
    Question: With sdpa, why do I get no attentions (or a warning) when I pass output_attentions=True?
    问题：用 sdpa 时传 output_attentions=True，为什么拿不到 attention（或只有警告）？
    中文：使用 eager attention 时，output_attentions=True 为每层返回一个 [B, heads, T, T] 的概率张量；使用 sdpa 时，transformers 4.x 退回 eager 并返回相同的概率，5.x 返回空元组。
    原因：融合的 sdpa 内核从不构造概率。4.57 的 BertSdpaSelfAttention 被要求返回概率时改走 eager 路径（并警告这种退回将在 v5 中取消）；
    5.x 的 sdpa attention 只记录 “`sdpa` attention does not support `output_attentions=True`”，模型的 attentions 为空。要得到它们，请用
    attn_implementation="eager" 加载（或 trace 模型：bertspec 从 q 与 k 推出它们）。与 tracer 记录（eager）或推出（sdpa）的概率比较，
    误差界为 attention_component 的舍入界。
    Asked in: huggingface/transformers#31990, huggingface/transformers#33660, huggingface/transformers#26572,
    sillsdev/machine.py#150, MeiGen-AI/MultiTalk#54, resemble-ai/chatterbox#398
    """
    berts_own(bert, "BertModel's attention classes")
    batch = bert.example()
    with torch.no_grad():
        out = bert.encoder(**batch.as_kwargs(), output_attentions=True)
    trace, _ = bert.trace(batch)
    probs = trace.stack("probs").to(bert.device)
    got, tolerance = out.attentions, attention_component(score_peak(bert.model, batch))
    close = bool(got) and len(got) == len(probs) and not any(beyond(g, p, tolerance) for g, p in zip(got, probs))
    observed = "eager's probabilities" if close else "an empty tuple" if got == () else "something else"
    expected = "eager's probabilities" if bert.attn_implementation == "eager" else versions.SDPA_OUTPUT_ATTENTIONS[versions.MAJOR]
    evidence.table(f"output_attentions=True, transformers {versions.VERSION}", ["attention", "attentions returned", "observed", "expected"],
                   [(bert.attn_implementation, f"{len(got)} of {tuple(got[0].shape)}" if got else repr(got), observed, expected)],
                   derived=bert.attn_implementation != "eager")
    evidence.table("sdpa in each version", *versions.table(versions.SDPA_OUTPUT_ATTENTIONS, ["transformers"], versions.MAJOR))
    assert observed == expected


# ---- counting parameters ----

def bert_parameters(vocab: int, positions: int, types: int, hidden: int, layers: int, intermediate: int) -> dict[str, int]:
    """BERT's parameters by part, from its config: each Linear is in·out + out, each LayerNorm 2·hidden."""
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden + (hidden * intermediate + intermediate) \
        + (intermediate * hidden + hidden) + 2 * hidden
    return {"embeddings": (vocab + positions + types) * hidden + 2 * hidden, "encoder": layers * layer,
            "pooler": hidden * hidden + hidden,
            "MLM head (decoder weight tied: counted once)": hidden * hidden + hidden + 2 * hidden + vocab}


def of_config(config) -> dict[str, int]:
    return bert_parameters(config.vocab_size, config.max_position_embeddings, config.type_vocab_size,
                           config.hidden_size, config.num_hidden_layers, config.intermediate_size)


def counted(model, parts: dict[str, str]) -> dict[str, int]:
    """Each distinct parameter counted once, under the part its first name starts with."""
    totals = dict.fromkeys(parts, 0)
    for name, p in model.named_parameters():
        totals[next(part for part, prefix in parts.items() if name.startswith(prefix))] += p.numel()
    return totals


# Published sizes the threads compare with (bert-base-uncased, bert-base-chinese, multilingual): L 12, H 768, I 3072.
FAMOUS = {"bert-base-uncased": 30522, "bert-base-chinese": 21128, "bert-base-multilingual-cased": 119547}


@pytest.mark.counterfeits("untied_decoder")
def test_bert_has_the_parameters_its_config_implies_counted_by_part_with_the_tied_decoder_counted_once(bert, as_class, evidence):
    """The model's parameters, counted by part — embeddings (V + P + T)·H + 2H, L layers of 4(H² + H) + 2H + 2HI + I + H + 2H, pooler H² + H, MLM head H² + 3H + V — are what its config implies, with the decoder weight, the word-embedding matrix itself, counted once; summing the state dict counts it twice.

    "110M" is this formula for bert-base-uncased (V = 30522): 109.5M with the
    pooler; bert-base-chinese's vocabulary of 21128 gives 102.3M and the
    multilingual one's 119547 gives 177.9M — the vocabulary alone explains
    the numbers learners get. ``num_parameters()`` and ``parameters()`` visit
    each Parameter once; ``state_dict()`` lists the tied decoder weight (and
    its bias) again under cls.predictions.decoder, V·H + V more, the double
    count behind "220M"-style answers; L × H × A (12 · 768 · 12) is not a
    parameter count at all.

    Claim ID: P6.32
    Question: How is "110M parameters" counted, and why does my count give 102M, 178M or 220M?
    问题：“1.1 亿参数”是怎么算的？为什么我算出来是 1.02 亿、1.78 亿或 2.2 亿？
    中文：按部分清点模型的参数——嵌入层 (V + P + T)·H + 2H，L 层每层 4(H² + H) + 2H + 2HI + I + H + 2H，pooler H² + H，MLM 头 H² + 3H + V——正是配置所蕴含的数量，decoder 的权重就是词嵌入矩阵本身，只算一次；对 state dict 求和会把它算两次。
    原因：“110M” 就是这个公式在 bert-base-uncased（V = 30522）上的值：含 pooler 为 1.095 亿；bert-base-chinese 的 21128 词表给出 1.023 亿，
    多语言版的 119547 词表给出 1.779 亿——词表大小本身就解释了学习者得到的各种数字。num_parameters() 与 parameters() 对每个 Parameter 只访问一次；
    state_dict() 在 cls.predictions.decoder 下再次列出共享的 decoder 权重（及其 bias），多出 V·H + V，这正是“2.2 亿”之类答案的重复计数；
    L × H × A（12 · 768 · 12）根本不是参数数量。
    Asked in: google-research/bert#656, google-research/bert#1094, google-research/bert#901, dhlee347/pytorchic-bert#20,
    Separius/BERT-keras#19, MaartenGr/BERTopic#169, huggingface/transformers#6043
    """
    berts_own(bert, "BERT's own parameter formula")
    c = bert.config
    expected = of_config(c)
    parts = {"embeddings": "bert.embeddings", "encoder": "bert.encoder", "MLM head (decoder weight tied: counted once)": "cls"}
    observed = counted(bert.model, parts)
    observed["pooler"] = sum(p.numel() for p in as_class("BertModel", bert.attn_implementation).model.pooler.parameters())
    listed = sum(t.numel() for t in bert.model.state_dict().values())
    total = bert.model.num_parameters()
    evidence.table(f"V {c.vocab_size}, P {c.max_position_embeddings}, T {c.type_vocab_size}, H {c.hidden_size}, "
                   f"L {c.num_hidden_layers}, I {c.intermediate_size}", ["part", "counted", "from the config"],
                   [*[(part, observed[part], expected[part]) for part in expected],
                    ("num_parameters() (BertForMaskedLM)", total, sum(expected.values()) - expected["pooler"]),
                    ("Σ state_dict() (the double count)", listed, f"+ V·H + V = {c.vocab_size * (c.hidden_size + 1)}")])
    evidence.table("the formula on published checkpoints (BertModel: embeddings, encoder, pooler)", ["checkpoint", "V", "parameters"],
                   [*[(name, v, sum(list(bert_parameters(v, 512, 2, 768, 12, 3072).values())[:3])) for name, v in FAMOUS.items()],
                    ("L × H × A, the wrong answer", "—", 12 * 768 * 12)])
    assert observed == expected
    assert total == sum(p.numel() for p in bert.model.parameters()) == sum(expected.values()) - expected["pooler"]
    if c.tie_word_embeddings:
        assert listed - total == c.vocab_size * c.hidden_size + c.vocab_size
