"""The claim catalogue and the one docstring format every claim uses.

A claim's docstring::

    Padded keys get exactly zero attention probability.

    Why it holds: the mechanism, in a few short paragraphs.

    Claim ID: P2.3b
    Question: How much attention does a [PAD] key get?
    问题：[PAD] 位置的 key 会得到多少注意力？
    中文：填充位置的 key 得到的注意力概率严格为 0。
    原因：同一机制的中文说明。

The first line is the claim in English, the answer to the question; the
paragraphs before ``Claim ID:`` explain it. After the ID come the question a
learner would ask, in English and in Chinese, then the claim in Chinese and its
Chinese explanation. IDs come from the plan (``CATALOGUE``); the handbook orders
chapters by ``CHAPTERS`` and claims by ID.
"""

import inspect
import re
from dataclasses import dataclass

# Chapter prefix -> (Chinese title, English title), in the plan's order.
CHAPTERS = {
    "P1": ("分析框架：被测模型、tracer 与错误信息", "The framework: the model under test, the tracer, the errors"),
    "P2": ("Attention mask", "The attention mask"),
    "P3": ("MLM 前向传播、预测头与损失", "The MLM forward pass, the prediction head and the loss"),
    "P4": ("场景、边界、数值稳定性与开销", "Scenarios, boundaries, numerical stability and cost"),
    "P5": ("知识库", "The knowledge base"),
    "P6": ("实践中的常见问题", "Questions from practice"),
    "P7": ("知识迁移：BERT 家族", "Knowledge transfer: the BERT family"),
}

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
    "P5.1b": ("代码示例和图表", "code examples and figures"),
    "P5.1c": ("关键发现和最佳实践", "key findings and best practices"),
    "P5.1d": ("常见误解和正确理解", "common misconceptions and the correct understanding"),
    "P5.2a": ("可复用的调试工具集", "a reusable debugging toolkit"),
    "P5.2b": ("快速参考指南", "a quick-reference guide"),
    "P5.2c": ("Q&A 形式的知识库", "a Q&A knowledge base"),
    "P5.2d": ("适合分享和教学的材料", "material fit for sharing and teaching"),
    "P6.1": ("pooler_output、[CLS] 隐藏状态与平均池化", "pooler_output vs the [CLS] hidden state vs mean pooling"),
    "P6.2": ("平均池化必须按 attention_mask 加权", "mean pooling weighted by attention_mask"),
    "P6.3": ("加载警告的含义", "what the load warnings mean"),
    "P6.4": ("token 分类中的 -100", "-100 labels in token classification"),
    "P6.5": ("自定义 3D / 4D attention mask 与句子打包", "custom 3D / 4D attention masks; packing sentences"),
    "P6.6": ("半精度中的 NaN 从何而来", "where NaN comes from in half precision"),
    "P6.7": ("NSP 头、它的标签与预训练 loss", "the NSP head, its labels and the pre-training loss"),
    "P7.1": ("理解能迁移到其他 transformer 模型", "the same claims on RoBERTa, DistilBERT, ALBERT, ELECTRA and ModernBERT"),
    "P7.2": ("各架构与 BERT 的差异", "each architectural difference from BERT, its own claim"),
    "P7.3": ("架构对照表", "a comparison table: claim × architecture"),
}


@dataclass(frozen=True)
class Claim:
    sentence: str
    why: str
    claim_id: str
    question: str
    question_zh: str
    sentence_zh: str
    why_zh: str

    @property
    def chapter(self) -> str:
        return self.claim_id.split(".")[0]


class ClaimFormatError(ValueError):
    """A docstring that does not follow the claim format."""


_ID_LINE = re.compile(r"^\s*Claim ID:\s*(\S+)\s*$", re.MULTILINE)


def parse(docstring: str | None) -> Claim:
    text = inspect.cleandoc(docstring or "")
    match = _ID_LINE.search(text)
    if not text or match is None:
        raise ClaimFormatError("no 'Claim ID:' line")
    english, after = text[: match.start()].strip(), text[match.end():].strip()
    sentence, _, why = english.partition("\n")
    question, _, after = after.partition("\n")
    question_zh, _, chinese = after.partition("\n")
    zh_sentence, _, zh_why = chinese.partition("\n")
    claim_id = match.group(1)
    if claim_id not in CATALOGUE:
        raise ClaimFormatError(f"unknown claim ID {claim_id!r}")
    if not why.strip():
        raise ClaimFormatError("no explanation between the claim and its ID")
    if not (question.startswith("Question: ") and question.rstrip().endswith("?")):
        raise ClaimFormatError("no 'Question: …?' line after the claim ID")
    if not (question_zh.startswith("问题：") and question_zh.rstrip().endswith("？")):
        raise ClaimFormatError("no '问题：…？' line after the English question")
    if not zh_sentence.startswith("中文：") or not zh_why.strip():
        raise ClaimFormatError("no '中文：' claim line followed by a Chinese explanation")
    return Claim(
        sentence=sentence.strip(), why=why.strip(), claim_id=claim_id,
        question=question.removeprefix("Question: ").strip(), question_zh=question_zh.removeprefix("问题：").strip(),
        sentence_zh=zh_sentence.removeprefix("中文：").strip(), why_zh=zh_why.strip().removeprefix("原因：").strip(),
    )


def id_order(claim_id: str) -> tuple:
    """Sort key of an ID in the plan's order: P2.1d -> (2, 1, 'd'); P6.1 -> (6, 1, '')."""
    chapter, _, rest = claim_id[1:].partition(".")
    number = re.match(r"\d+", rest)
    return int(chapter), int(number.group()) if number else 0, rest[number.end():] if number else rest


def anchor(claim_id: str, function_name: str) -> str:
    """The stable anchor of a claim's section: its ID and its name, e.g. P2.3b-padded-keys-get-exactly-zero-…"""
    return f"{claim_id}-{function_name.removeprefix('test_').replace('_', '-')}"


@dataclass(frozen=True)
class Discovered:
    """A claim function as written in spec/, read without importing or running it."""

    function: str
    path: str
    line: int
    doc: str
    counterfeits: tuple[str, ...]


def discover(folder) -> dict[str, Discovered]:
    """Every test function in ``folder``'s test files, by name, with the counterfeits its markers declare."""
    import ast
    from pathlib import Path

    found = {}
    root = Path(folder)
    for path in sorted(root.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names = tuple(arg.value for deco in node.decorator_list if _is_counterfeits_mark(deco)
                              for arg in deco.args if isinstance(arg, ast.Constant))
                found[node.name] = Discovered(node.name, f"{root.name}/{path.name}", node.lineno,
                                              ast.get_docstring(node, clean=False) or "", names)
    return found


def _is_counterfeits_mark(node) -> bool:
    import ast

    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "counterfeits"
