"""Chapter P8.4 — the cache: decoding one token at a time with past keys and values reproduces the full forward.
"""

import pytest
import torch

from bertspec.models import versions
from bertspec.models.generative import ENCODER_DECODER
from bertspec.proof import scope
from bertspec.proof.tolerances import generative_tolerance

PROMPTS = ("北京是中国的首都。", "上海", "中国的首")  # three lengths: two rows padded
# T5: the encoder reads each line with a span hidden (one row padded more than another); the decoder writes the span.
SPANS = (("北京是中国的首<extra_id_0>。", "<extra_id_0>都"), ("上<extra_id_0>", "<extra_id_0>海是中国"),
         ("中国的<extra_id_0>都", "<extra_id_0>首"))


def decoder_inputs(generative):
    """A left-padded batch of PROMPTS: the full forward's arguments, one step's, the length, the real positions."""
    batch = generative.encode(list(PROMPTS), padding_side="left")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts from its first real token, as generate does

    def step(t):
        return dict(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1], position_ids=positions[:, t:t + 1])

    return dict(input_ids=ids, attention_mask=mask, position_ids=positions), step, ids.shape[1], mask.bool()


def t5_inputs(generative):
    """T5 on a right-padded encoder batch: the encoder's output computed once, the decoder fed the spans' labels
    shifted right; the full forward's arguments, one step's, the decoder's length, its real positions."""
    model = generative.model
    encoder_batch = generative.encode([text for text, _ in SPANS], padding_side="right")
    targets = generative.encode([span for _, span in SPANS], padding_side="right")
    labels = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, -100)
    decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    with torch.no_grad():
        encoded = model.get_encoder()(**encoder_batch)
    fixed = dict(encoder_outputs=encoded, attention_mask=encoder_batch["attention_mask"])
    real = torch.cat([torch.ones_like(labels[:, :1]), targets["attention_mask"][:, :-1]], 1).bool()

    def step(t):
        return dict(fixed, decoder_input_ids=decoder_ids[:, t:t + 1])

    return dict(fixed, decoder_input_ids=decoder_ids), step, decoder_ids.shape[1], real


def token_by_token(model, step, length: int):
    """Logits of feeding one token at a time, each call handed the cache the previous one returned; and that cache."""
    keyword = versions.CACHE_KEYWORD[versions.MAJOR]
    cache, logits = None, []
    with torch.no_grad():
        for t in range(length):
            out = model(**step(t), use_cache=True, **{keyword: cache})
            cache = out[keyword]
            logits.append(out.logits)
    return torch.cat(logits, 1), cache


def cached(cache) -> list[tuple[str, torch.Tensor]]:
    """(which attention, layer 0's cached keys) of a DynamicCache, or of both halves of T5's EncoderDecoderCache."""
    halves = [("self-attention", cache)]
    if hasattr(cache, "cross_attention_cache"):
        halves = [("self-attention", cache.self_attention_cache), ("cross-attention", cache.cross_attention_cache)]
    return [(name, half.layers[0].keys) for name, half in halves]


@pytest.mark.carries(encoder=scope.not_applicable_to("an encoder reads the whole input at once: it keeps no cache"))
@pytest.mark.counterfeits("cache_positions_restart", "cache_padding_unmasked")
def test_decoding_token_by_token_with_the_cache_gives_the_logits_of_the_full_forward_with_padding_in_the_cache(
        generative, evidence):
    """Fed one token at a time, each step handed the cache of the steps before it, a decoder gives at every real position the logits of one forward over the whole padded batch, and T5's decoder those of its full forward.

    The cache (a DynamicCache; for T5 an EncoderDecoderCache holding one for
    self-attention and one for cross-attention) keeps each layer's keys and
    values; a step computes the new token's query, key and value and attends
    over the cached keys plus its own, which is what the full forward's
    causal mask lets that position see. Two things must travel with each
    step, because the cache does not keep them: the attention mask, grown by
    one column per step, since the cache holds the left padding's keys like
    any other (three prompts of different lengths: the shorter rows start
    with pads); and, in a decoder, the position id of the new token, counted
    from its row's first real token as generate does (T5 has none: its
    relative bias counts the cache's length). T5's encoder output is computed
    once and fixed; its decoder is fed the shifted labels of spans of
    different lengths, and its cross-attention cache holds the padded
    encoder positions' keys, which the encoder's mask keeps hiding. The two
    ways differ only in the shapes of the matrices multiplied, so in
    rounding: each real position's logits are held to the bound of
    bertspec.proof.tolerances.forward_tolerance, one layer per attention
    module: (2 (sqrt(head_dim) u32 + 2u) s + (2 sqrt(hidden) +
    sqrt(intermediate)) u32 + 3u) x max|logit|, float32 (u = u32 = 2^-24),
    with s the largest score allowed by Cauchy–Schwarz on the queries and
    keys of the full forward (plus T5's largest position bias).

    Claim ID: P8.4
    Question: Does decoding token by token with the cache give the logits of one full forward, padding included?
    问题：借助缓存逐个 token 解码，得到的 logits 与一次完整前向相同吗？有 padding 时也相同吗？
    中文：每次只输入一个 token、并把之前各步的缓存交给它，解码器在每个真实位置得到的 logits 与对整个带 padding 的批次做一次前向相同；T5 的解码器也与其完整前向相同。
    原因：缓存（DynamicCache；T5 为 EncoderDecoderCache，自注意力与交叉注意力各一份）保存每层的键和值；每一步计算新 token 的查询、键和值，
    并在缓存的键加上自己的键上做注意力，这正是完整前向的因果 mask 允许该位置看到的。缓存不保存两样东西，必须随每一步传入：
    注意力 mask，每步增长一列，因为缓存像保存其他键一样保存左侧 padding 的键（三个长度不同的提示：较短的行以 pad 开头）；
    以及解码器中新 token 的位置 id，按 generate 的做法从该行第一个真实 token 开始计数（T5 没有位置 id：其相对位置偏置按缓存长度计算）。
    T5 的编码器输出只算一次并固定；解码器输入长度不同的片段右移后的标签，交叉注意力缓存保存编码器 padding 位置的键，编码器的 mask 一直屏蔽它们。
    两种算法只在相乘矩阵的形状上不同，因此只差舍入：每个真实位置的 logits 按 bertspec.proof.tolerances.forward_tolerance 的误差界比较，
    每个注意力模块算一层：(2 (sqrt(head_dim) u32 + 2u) s + (2 sqrt(hidden) + sqrt(intermediate)) u32 + 3u) × max|logit|，float32（u = u32 = 2^-24），
    s 为按柯西-施瓦茨不等式由完整前向的查询与键得到的最大分数上界（加上 T5 的最大位置偏置）。
    """
    model, name = generative.model, generative.anatomy.name
    t5 = generative.anatomy.kind == ENCODER_DECODER
    full_inputs, step, length, real = (t5_inputs if t5 else decoder_inputs)(generative)
    with torch.no_grad():
        full = model(**full_inputs).logits
    stepped, cache = token_by_token(model, step, length)
    bound = generative_tolerance(generative, full[real], **full_inputs)
    differences = (stepped - full).abs().masked_fill(~real[..., None], 0).amax(-1)
    texts = [f"{text} → {span}" for text, span in SPANS] if t5 else PROMPTS
    evidence.table(f"{name} ({generative.attn_implementation}): token by token with the cache vs one full forward",
                   ["row", "input", "real positions", "padded positions", "max |Δ logit| at real positions",
                    "same greedy token everywhere"],
                   [(i, text, int(r.sum()), int((~r).sum()), differences[i].max().item(),
                     bool((stepped[i][r].argmax(-1) == full[i][r].argmax(-1)).all()))
                    for i, (text, r) in enumerate(zip(texts, real))])
    evidence.table(f"{name}: what the cache holds after {length} steps ({type(cache).__name__})",
                   ["attention", "layer 0 keys [batch, heads, positions, head dim]", "bound (atol)"],
                   [(which, tuple(keys.shape), bound["atol"]) for which, keys in cached(cache)])
    header, rows = versions.table(versions.CACHE_KEYWORD, ["transformers", "cache keyword and output field"],
                                  versions.MAJOR)
    evidence.table("the cache's keyword, per transformers version", header, rows)
    # The padding is in the cache: every step's keys are kept, the pads' included, and the mask hides them.
    assert cached(cache)[0][1].shape[2] == length
    torch.testing.assert_close(stepped[real], full[real], **bound)
