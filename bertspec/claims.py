"""The claim catalogue and the one docstring format every claim uses.

A claim's docstring::

    Padded keys get exactly zero attention probability.

    Why it holds: the mechanism, in a few short paragraphs.

    Claim ID: P2.3b
    中文：填充位置的 key 得到的注意力概率严格为 0。
    原因：同一机制的中文说明。

The first line is the claim in English; the paragraphs before ``Claim ID:``
explain it; the line after it gives the claim in Chinese, the rest the
explanation in Chinese. IDs come from the plan (``CATALOGUE``).
"""

import re
from dataclasses import dataclass

# ID -> (the plan's words, what the spec shows). Mirrors the team's claims.md.
CATALOGUE = {
    "P1.1": ("统一的分析框架", "one analysis framework: shared fixtures, one tracer, one evidence format"),
    "P1.2": ("整合 trace 脚本", "the tracer records any BERT forward pass step by step"),
    "P1.3": ("标准化输出格式和日志", "every step's record has the same fields"),
    "P2.1a": ("追踪 mask 值从输入到各层", "the 2D attention_mask and the form each layer receives"),
    "P2.1b": ("验证 (1.0 - attention_mask) * torch.finfo(dtype).min", "the additive conversion of the mask"),
    "P2.1c": ("训练 vs 推理模式", "train vs eval: same mask, dropout is the difference"),
    "P2.1d": ("为什么\"全0\"mask是正确的", "why an all-zero mask is correct"),
    "P2.2a": ("attention padding mask vs MLM token mask", "two different things"),
    "P2.2b": ("[MASK] 在 attention 中可见", "[MASK] is visible to attention"),
    "P2.2c": ("attention mask 不影响 MLM 预测", "padding does not change the prediction at [MASK]"),
    "P2.3a": ("在 modeling_bert.py 关键位置添加调试输出", "debug output at the key places, via hooks"),
    "P2.3b": ("attention_scores + attention_mask 的数学原理", "softmax of score + dtype-min is exactly 0"),
    "P2.3c": ("可视化 mask 处理流程", "a figure of the mask's path"),
    "P3.1a": ("input_ids → sequence_output 完整路径", "the whole path, every step recorded"),
    "P3.1b": ("BertEmbeddings: word + position + token_type", "embeddings recomputed by hand"),
    "P3.1c": ("BertEncoder: 多层 attention + feedforward", "each layer recomputed by hand"),
    "P3.1d": ("记录每步的张量形状和关键数值", "shapes and key values recorded and snapshot-tested"),
    "P3.2a": ("BertLMPredictionHead 内部结构", "transform then decoder"),
    "P3.2b": ("Transform 层的作用和必要性", "removing the transform changes the logits"),
    "P3.2c": ("Linear decoder: [batch, seq, hidden] → [batch, seq, vocab]", "tied decoder plus its own bias"),
    "P3.2d": ("prediction_scores 的物理含义", "unnormalised logits; softmax, argmax"),
    "P3.3a": ("CrossEntropyLoss + ignore_index=-100", "only labelled positions count"),
    "P3.3b": ("手动实现损失计算", "a hand-written loss equals the model's"),
    "P3.3c": ("只有 [MASK] 位置参与梯度更新", "only labelled positions get gradient on the logits"),
    "P3.3d": ("不同 label 设置的影响", "all, one, none, special-token labels"),
    "P4.1a": ("单句 vs 双句输入", "single sentence vs sentence pair"),
    "P4.1b": ("不同序列长度的 padding 处理", "padding never changes real tokens' outputs"),
    "P4.1c": ("多个 [MASK] token 的并行处理", "several [MASK] predicted in one pass"),
    "P4.1d": ("特殊 token 的处理方式", "[CLS], [SEP], [PAD]: ids, embeddings, treatment"),
    "P4.2a": ("mask 操作的计算效率", "the cost of mask operations"),
    "P4.2b": ("manual implementation vs optimized version", "equal outputs, measured speed"),
    "P4.2c": ("边界条件测试", "all padded, no mask, over-long, single token"),
    "P4.2d": ("数值稳定性验证", "float32 / float16 / bfloat16 masks and softmax"),
    "P5.1a": ("完整的 BERT 技术机制文档", "the HTML report"),
    "P5.2a": ("可复用的调试工具集", "a reusable debugging toolkit"),
}


@dataclass(frozen=True)
class Claim:
    sentence: str
    why: str
    claim_id: str
    sentence_zh: str
    why_zh: str


class ClaimFormatError(ValueError):
    """A docstring that does not follow the claim format."""


_ID_LINE = re.compile(r"^\s*Claim ID:\s*(\S+)\s*$", re.MULTILINE)


def parse(docstring: str | None) -> Claim:
    import inspect

    text = inspect.cleandoc(docstring or "")
    match = _ID_LINE.search(text)
    if not text or match is None:
        raise ClaimFormatError("no 'Claim ID:' line")
    english, chinese = text[: match.start()].strip(), text[match.end():].strip()
    sentence, _, why = english.partition("\n")
    zh_sentence, _, zh_why = chinese.partition("\n")
    claim_id = match.group(1)
    if claim_id not in CATALOGUE:
        raise ClaimFormatError(f"unknown claim ID {claim_id!r}")
    if not why.strip():
        raise ClaimFormatError("no explanation between the claim and its ID")
    if not zh_sentence.startswith("中文：") or not zh_why.strip():
        raise ClaimFormatError("no '中文：' claim line followed by a Chinese explanation")
    return Claim(sentence.strip(), why.strip(), claim_id, zh_sentence.removeprefix("中文：").strip(), zh_why.strip())
