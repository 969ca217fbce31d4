"""Chapter P1.2 — the tracer: every step of any BERT forward pass recorded in post-LN order,
only what its options ask for, nothing left behind when the forward raises, and attention
probabilities that reproduce the attention output; and the trace command, which prints every
step and the prediction, and answers bad input (the table in bertspec.proof.bad_input,
conftest's ``broken`` folders) with one line.
"""

import json
import re

import pytest
import torch
from markupsafe import escape

from bertspec.__main__ import main as cli
from bertspec.handbook import claims
from bertspec.handbook.evidence import attention_probs
from bertspec.handbook.trace_page import EXPLAINED_BY
from bertspec.models.inputs import CHINESE
from bertspec.models.source import FAMILY_MODEL_DIRS
from bertspec.proof import scope
from bertspec.proof.bad_input import BAD_OPTIONS, BROKEN, one_line
from bertspec.proof.pages import SPEC
from bertspec.proof.tolerances import kernel_tolerance
from bertspec.tracing.trace import INTERNALS, quantity


def expected_order(a, n_layers: int) -> list[str]:
    """Steps whose order post-LN fixes: embeddings, then per layer mask → probabilities → attention projection →
    its LayerNorm → feed-forward → its LayerNorm, then the head.

    The values inside attention are recorded when the self-attention module returns, so where that module
    applies the projection (and, in ALBERT, the LayerNorm) itself, those steps come before them."""
    embeddings = [a.word_embeddings, f"{a.embedding_norm}:input", a.embedding_norm, a.embeddings]
    per_layer = []
    for i in range(n_layers):
        after = [a.step(i, a.attention_output), a.step(i, a.attention_norm, "input"), a.step(i, a.attention_norm)]
        inside = [a.attention_output.startswith(f"{a.self_attention}."),
                  *[a.attention_norm.startswith(f"{a.self_attention}.")] * 2]
        internals = [a.attention_step(i, q) for q in ("scores", "scores+mask", "probs")]
        per_layer += [a.attention_step(i, "attention_mask"), a.projection_step(i, "query"),
                      *[s for s, within in zip(after, inside) if within], *internals,
                      *[s for s, within in zip(after, inside) if not within],
                      a.step(i, a.ffn_in), a.step(i, a.ffn_activation), a.step(i, a.ffn_out),
                      a.step(i, a.output_norm, "input"), a.step(i, a.output_norm)]
    return ["input_ids", "attention_mask", *embeddings, *per_layer, *a.head_steps()]


def heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, H*d) -> (B, H, T, d)"""
    b, t, _ = x.shape
    return x.view(b, t, n_heads, -1).transpose(1, 2)


def test_the_tracer_records_every_step_of_every_layer_in_post_ln_order(bert, evidence):
    """The tracer records embeddings, every layer's attention and feed-forward, and the head, in execution order.

    Step names are true module paths of the model (BertForMaskedLM's for BERT;
    bertspec/models/anatomy.py holds each family's). BERT is post-LN: each sub-layer's
    output is added to its input and *then* normalised, so ``LayerNorm:input``
    is exactly ``dense output + residual`` (dropout is the identity in eval
    mode). The test checks the order and that arithmetic for every layer,
    which is what makes the names true.

    Claim ID: P1.2
    Question: What does the tracer record, and in what order?
    问题：tracer 记录了哪些步骤，按什么顺序？
    中文：tracer 按执行顺序记录嵌入层、每层的 attention 与前馈网络、以及预测头。
    原因：步骤名就是模型中真实的模块路径（BERT 是 BertForMaskedLM 的；bertspec/models/anatomy.py 记录每个家族的）。BERT 是 post-LN：
    子层输出先与输入相加，再做 LayerNorm，所以 LayerNorm:input 恰好等于 dense 输出 + 残差（推理模式下 dropout 为恒等）。
    测试对每一层检查顺序与这一算术关系，正是这一点保证了步骤名的真实性。
    """
    scope.post_ln(bert)
    a = bert.anatomy
    batch = bert.example()
    trace, _ = bert.trace(batch)
    names = trace.names()
    wanted = expected_order(a, bert.config.num_hidden_layers)
    evidence.text("recorded steps", trace.table())
    positions = [names.index(n) for n in wanted]  # KeyError-free: index raises ValueError if missing
    assert positions == sorted(positions), "steps out of post-LN order"
    residual = trace.tensor(a.embedding_output)
    for i in range(bert.config.num_hidden_layers):
        attn_sum = trace.tensor(a.step(i, a.attention_output)) + residual
        assert torch.equal(trace.tensor(a.step(i, a.attention_norm, "input")), attn_sum)
        ffn_sum = trace.tensor(a.step(i, a.ffn_out)) + trace.tensor(a.step(i, a.attention_norm))
        assert torch.equal(trace.tensor(a.step(i, a.output_norm, "input")), ffn_sum)
        residual = trace.tensor(a.layer_output_step(i, bert.config.num_hidden_layers))


def test_a_trace_records_only_what_its_options_ask_for(bert, evidence):
    """A shapes-only trace, a filtered trace and one without derivation record what they say, under the same step names.

    The options choose the cost: ``summaries=False`` records every step's
    name, shape, dtype and source but no statistics (derived steps get their
    shapes from the kernel's arguments, with no arithmetic); ``only`` keeps the
    steps a name pattern or a quantity names, with the same values as a full
    trace; ``derive=False`` leaves out what only derivation gives (scores and
    probabilities on sdpa) and changes nothing on eager, where they are
    observed for free. The logits are the plain forward's in every case.

    Claim ID: P1.2
    Question: How do I trace only what I need, and pay only for that?
    问题：怎样只 trace 需要的步骤、只为它付出开销？
    中文：只记形状的 trace、过滤后的 trace 与不做推导的 trace 都恰好记录它们所说的内容，步骤名不变。
    原因：选项决定开销：summaries=False 记录每一步的名称、形状、dtype 与来源，但没有统计量（推导步骤的形状由内核参数得出，
    不做任何运算）；only 保留名称模式或量名所指的步骤，数值与完整 trace 相同；derive=False 省去只有推导才能得到的内容
    （sdpa 上的分数与概率），在 eager 上什么也不改变，因为那里可以直接观测。每种情况下 logits 都与普通前向相同。
    """
    batch = bert.example()
    full, plain = bert.trace(batch, keep_tensors=False)
    shapes, out_shapes = bert.trace(batch, keep_tensors=False, summaries=False)
    first_layer = f"{bert.anatomy.layer(0)}."  # bert.encoder.layer.0. in BERT
    only, out_only = bert.trace(batch, keep_tensors=False, only=("probs", f"{first_layer}*"))
    underived, out_underived = bert.trace(batch, keep_tensors=False, derive=False)
    internals = [n for n in full.names() if quantity(n) in INTERNALS]
    wanted = [n for n in full.names() if n.endswith(":probs") or n.startswith(first_layer)]
    evidence.table("steps recorded", ["trace", "steps", "with statistics", "derived"],
                   [(label, len(t), sum(s.mean is not None for s in t), sum(s.source == "derived" for s in t))
                    for label, t in (("summaries", full), ("shapes only", shapes), ("only probs and layer 0", only),
                                     ("derive=False", underived))])
    for out in (out_shapes, out_only, out_underived):
        assert torch.equal(out.logits, plain.logits)
    assert [(s.name, s.shape, s.dtype, s.source) for s in shapes] == [(s.name, s.shape, s.dtype, s.source) for s in full]
    assert all(s.mean is None and s.tensor is None for s in shapes)
    assert only.names() == wanted and all(str(only[n]) == str(full[n]) for n in wanted)
    derived = bert.attn_implementation == "sdpa"
    assert underived.names() == [n for n in full.names() if not (derived and n in internals)]


def test_a_trace_is_looked_up_like_an_activation_cache_by_name_by_layer_and_stacked_over_layers(bert, evidence):
    """A trace is an activation cache: a step by its name, by quantity and layer, every step of a layer, and a quantity stacked over layers.

    TransformerLens made this shape familiar (``cache["pattern", 0]``,
    ``cache.stack_activation``); the trace keeps the model's own module paths
    as names. ``trace[name]`` finds a step in a table by name;
    ``trace["probs", i]`` is layer i's step for a quantity; ``trace.layer(i)``
    holds layer i's steps by their path inside the layer (ALBERT's one shared
    layer by its occurrence); ``trace.stack("probs")`` is
    every layer's tensor stacked, (L, B, H, T, T). Each is checked here against
    the step names the family's anatomy gives, independently of the lookups.

    Claim ID: P1.2
    Question: How do I get one layer's activations, or one quantity across all layers, out of a trace?
    问题：怎样从 trace 中取出某一层的激活，或某个量在所有层上的值？
    中文：trace 就是激活缓存：按名称取一步，按量与层取一步，取一层的所有步骤，把一个量在各层上堆叠起来。
    原因：TransformerLens 让这种用法为人熟知（cache["pattern", 0]、cache.stack_activation）；trace 以模型自己的模块路径为名。
    trace[name] 按名称查表；trace["probs", i] 是第 i 层该量的步骤；trace.layer(i) 以层内路径为键给出第 i 层的步骤（ALBERT 的共享层按其第几次运行）；trace.stack("probs") 把每层的张量堆叠为 (L, B, H, T, T)。每一项都与解剖结构给出的步骤名独立核对。
    """
    a, n = bert.anatomy, bert.config.num_hidden_layers
    trace, _ = bert.trace(bert.example())
    by_anatomy = [a.attention_step(i, "probs") for i in range(n)]
    layers = [trace.layer(i) for i in range(n)]
    inner = f"{a.self_attention}:probs"
    stacked = trace.stack("probs")
    evidence.table("the same step, four ways", ["layer", "by name", "trace['probs', i]", "trace.layer(i)", "steps in layer"],
                   [(i, name, trace["probs", i].name, layers[i][inner].name, len(layers[i]))
                    for i, name in enumerate(by_anatomy)])
    assert [trace[name].name for name in by_anatomy] == by_anatomy
    assert [trace["probs", i] for i in range(n)] == [trace[name] for name in by_anatomy]
    assert [layer[inner] for layer in layers] == [trace[name] for name in by_anatomy]
    assert stacked.shape == (n, *trace.tensor(by_anatomy[0]).shape)
    for i, name in enumerate(by_anatomy):  # the same values; NaN where sdpa derives a row with every key hidden
        torch.testing.assert_close(stacked[i], trace.tensor(name).cpu(), rtol=0, atol=0, equal_nan=True)
    with pytest.raises(KeyError):
        trace["no.such.module:probs"]


def test_a_forward_that_raises_inside_attention_leaves_nothing_of_the_tracer_behind(bert, evidence):
    """A forward that raises inside self-attention, with the tracer's function mode on, leaves no mode and no hook behind.

    The tracer turns its function mode on inside the first self-attention
    module once q, k and v are made, and off when that module returns. A
    forward that raises in between never returns there: closing the tracer
    turns the mode off and removes every hook, so the next forward is the
    plain one, bit for bit. Left on, the mode would route every later torch
    call of the process through the closed tracer.

    Claim ID: P1.2
    Question: Can a forward that fails under the tracer leave the model or torch changed?
    问题：在 tracer 下失败的前向会不会让模型或 torch 留下改动？
    中文：在 tracer 的 function mode 开着时于 self-attention 内抛出异常的前向，不会留下 mode，也不会留下 hook。
    原因：tracer 在第一个 self-attention 模块算出 q、k、v 后打开 function mode，在该模块返回时关闭。中途抛出异常的前向不会回到那里：
    关闭 tracer 时会关掉 mode 并移除所有 hook，因此下一次前向就是普通前向，逐位相同。若 mode 仍开着，进程之后的每个 torch 调用都会经过已关闭的 tracer。
    """
    from bertspec.tracing.trace import Tracer

    a, batch = bert.anatomy, bert.example()
    values = bert.module(f"{a.attention(0)}.{a.fused_qkv or a.value}")
    _, plain = bert.trace(batch, keep_tensors=False, summaries=False)

    def hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in bert.model.modules())

    def fail(module, args, output):
        raise RuntimeError("raised inside attention")

    before, modes_before = hooks(), torch._C._len_torch_function_stack()
    with pytest.raises(RuntimeError, match="raised inside attention"), \
            Tracer(bert.model, summaries=False) as tracer, torch.no_grad():
        handle = values.register_forward_hook(fail)  # after the tracer's own hook, which turned the mode on
        try:
            bert.model(**batch.as_kwargs())
        finally:
            handle.remove()
            modes_inside, hooks_inside = torch._C._len_torch_function_stack(), hooks()
    with torch.no_grad():
        after = bert.model(**batch.as_kwargs())
    evidence.table("before, while raising, after", ["", "before", "when the forward raised", "after closing"],
                   [("function modes on", modes_before, modes_inside, torch._C._len_torch_function_stack()),
                    ("hooks on the model", before, hooks_inside, hooks())])
    assert modes_inside == modes_before + 1 and hooks_inside > before, "the forward did not raise where the mode is on"
    assert torch._C._len_torch_function_stack() == modes_before and hooks() == before
    assert len(tracer.trace.all("attention_mask")) == 1 and torch.equal(after.logits, plain.logits)


def test_traced_attention_probabilities_reproduce_the_attention_output(bert, evidence):
    """The traced probabilities times the traced values give the attention's actual output.

    Eager attention's probabilities are observed (the softmax's own output), so
    probs @ V, through the layer's own output projection, reproduces what the
    model computed bit for bit. The sdpa kernel hides them: the tracer derives
    them from the kernel's inputs (q, k, mask, scale), and this claim is what
    licenses showing derived values — they reproduce the kernel's output within
    the float32 kernel tolerance. (The projection's output is compared because
    every family records it; in DistilBERT, ALBERT and ModernBERT the
    attention module applies it itself.)

    Claim ID: P1.2
    Question: Do the traced attention probabilities times V give the attention output?
    问题：trace 记录的注意力概率乘以 V，能得到 attention 的输出吗？
    中文：trace 记录的注意力概率乘以 V，恰好得到 attention 模块的实际输出。
    原因：eager 的概率是直接观测到的（softmax 的输出），probs @ V 经过该层自己的输出投影后逐位复现模型的计算。sdpa 内核隐藏了概率，
    tracer 由内核输入（q、k、mask、scale）推导；本断言保证推导值在 float32 内核容差内复现内核输出，这正是可以展示推导值的依据。
    （比较的是输出投影的结果，因为每个家族都记录它；DistilBERT、ALBERT 与 ModernBERT 的 attention 模块自己施加这个投影。）
    """
    a = bert.anatomy
    batch = bert.example()
    trace, _ = bert.trace(batch)
    n_heads = bert.config.num_attention_heads
    real = batch.attention_mask.bool()
    tolerance = kernel_tolerance(bert.attn_implementation)
    rows = []
    for i in range(bert.config.num_hidden_layers):
        probs = trace.tensor(a.attention_step(i, "probs"))
        context = (probs @ heads(bert.traced_values(trace, i), n_heads)).transpose(1, 2).flatten(2)
        projected = bert.projected(i, context)
        observed = trace.tensor(a.step(i, a.attention_output))
        rows.append((a.attention_step(i), trace[a.attention_step(i, "probs")].source, (projected - observed)[real].abs().max()))
        torch.testing.assert_close(projected[real], observed[real], **tolerance)
    evidence.table("output projection of probs @ V vs the traced projection (real tokens)", ["module", "probs are", "max |diff|"],
                   rows)


def test_the_trace_command_prints_every_step_and_the_prediction(model_cache, family, capsys, evidence):
    """``python -m bertspec trace TEXT`` prints the step table and the top guesses at each [MASK].

    The command line uses the same loader and tracer as the spec, so what a
    user sees in the terminal is what the claims check. An encoder-only
    checkpoint has no head to predict with: the trace stops at the encoder, and
    the command says so instead of showing a randomly initialised head.

    Claim ID: P1.2
    Question: What does `python -m bertspec trace` print?
    问题：`python -m bertspec trace` 会打印什么？
    中文：`python -m bertspec trace 文本` 打印每一步的表格以及每个 [MASK] 处的候选预测。
    原因：命令行与 spec 使用同一个加载器和 tracer，用户在终端看到的就是断言所检查的内容。
    只有 encoder 的 checkpoint 没有预测头：trace 在 encoder 处结束，命令如实说明，而不是显示一个随机初始化的预测头。
    """
    bert = model_cache("eager", family)
    args = ["trace", bert.texts.sentence] + ([] if bert.is_default else ["--model", str(bert.folder)])
    status = cli(args)
    out = capsys.readouterr().out
    evidence.text(f"$ python -m bertspec {' '.join(args)}   (exit status {status})", out)
    assert status == 0
    a = bert.anatomy
    first = re.escape(a.attention_step(0, "probs").removeprefix("" if bert.has_mlm_head else f"{a.base}."))
    assert re.search(rf"^{first} ", out, re.MULTILINE)
    if bert.has_mlm_head:
        assert a.decoder in out
        assert re.search(rf"{re.escape(bert.tokenizer.mask_token)} at position \d+: .+? \d\.\d{{3}}", out)
    else:
        assert a.decoder not in out and "the trace stops at the encoder" in out


def test_the_trace_command_writes_one_offline_page_holding_exactly_the_probabilities_the_model_computed(
        model_under_test, family, tmp_path, evidence):
    """``python -m bertspec trace TEXT --html PAGE`` writes one offline page with the tokens, each layer's mask and exactly the probabilities the model computed, linked to the claims.

    The page is what the handbook shows for the claims' examples, for the
    user's own text on their own checkpoint: the tokens with their ids, mask
    and token types; the mask as each layer's self-attention received it (None
    where transformers built none); the handbook's attention view, every layer
    and head; the top guesses at each [MASK]; every traced step. The
    probabilities are embedded as their float32 bytes, so the page holds
    exactly what the tracer recorded, observed on eager and derived from the
    kernel's inputs on sdpa. Its styles and script are inlined and it fetches
    nothing; each part links to the handbook claims that explain it, and each
    link names a claim of this spec with that ID.

    Claim ID: P1.2
    Question: Can I see the handbook's attention view and mask path for my own sentence on my own model?
    问题：能在我自己的模型上、用我自己的句子看到手册里的 attention 视图和 mask 路径吗？
    中文：python -m bertspec trace 文本 --html 页面 写出一个离线页面，包含 token、每层收到的 mask，以及与模型算出的完全相同的概率，并链接到相应结论。
    原因：页面为用户自己的文本、在用户自己的 checkpoint 上展示手册为结论示例展示的内容：token 及其 id、mask 与 token type；每层
    self-attention 收到的 mask（transformers 没有构造时为 None）；手册的 attention 视图，每层每个头；每个 [MASK] 处的最佳候选；
    trace 的每一步。概率按 float32 的字节嵌入，因此页面中的值与 tracer 记录的完全一致：eager 上是观测值，sdpa 上由内核输入推导。
    样式与脚本内联，不加载任何外部内容；每一部分都链接到讲解它的手册结论，每个链接都指向本 spec 中具有该 ID 的结论。
    """
    bert = model_under_test
    page_path = tmp_path / "trace.html"
    args = ["trace", bert.texts.sentence, "--attn-implementation", bert.attn_implementation, "--html", str(page_path)]
    assert cli(args + ([] if bert.is_default else ["--model", str(bert.folder)])) == 0
    page = page_path.read_text(encoding="utf-8")
    view = json.loads(re.search(r'<script type="application/json">(.*?)</script>', page, re.DOTALL).group(1))
    shown = view["batches"][0]
    batch = bert.encode(bert.texts.sentence)
    trace, _ = bert.trace(batch)
    masks = re.findall(r'<tr data-layer="(\d+)"><td>\d+</td><td>([^<]+)</td><td>([^<]+)</td>', page)
    encoder_only = "" if bert.has_mlm_head else f"{bert.anatomy.base}."  # the command traces the encoder alone
    expected_masks = [(str(i), step.name.removeprefix(encoder_only), str(step.shape))
                      for i, step in enumerate(trace.all("attention_mask"))]
    linked = set(re.findall(r'href="report\.html#([^"]+)"', page))
    discovered = claims.discover(SPEC)
    explaining = {claims.anchor(claims.parse(discovered[f].doc).claim_id, f) for parts in EXPLAINED_BY.values()
                  for _, f in parts}
    fetched = re.findall(r'(?:src|href)="(?:https?:)?//|<link\b', page)
    evidence.table(f"$ python -m bertspec {' '.join(args[:2])} --html trace.html ({bert.attn_implementation})",
                   ["bytes", "tokens", "layers' masks", "probabilities (L, B, H, T, T)", "equal to the traced tensor",
                    "claim links", "fetched"],
                   [(len(page.encode()), " ".join(shown["tokens"][0]), len(masks), tuple(shown["shape"]),
                     torch.equal(attention_probs(shown), trace.stack("probs").float()), len(linked), len(fetched))])
    evidence.table("the mask as each layer receives it, on the page", ["layer", "step", "shape"], masks)
    assert torch.equal(attention_probs(shown), trace.stack("probs").float())
    assert shown["tokens"] == [bert.tokens(batch)] and shown["types"] == batch.token_type_ids.tolist()
    assert all(f"<td>{escape(token)}</td>" in page for token in bert.tokens(batch))  # as the template writes it
    assert masks == expected_masks and len(masks) == bert.config.num_hidden_layers
    assert linked == explaining and all(f in discovered for parts in EXPLAINED_BY.values() for _, f in parts)
    assert fetched == []
    assert ("guess 1" in page) == bert.has_mlm_head


# row -> (the command's arguments after "trace", exit status, what its output must say)
TEXTS = {
    "over-long text": (["字" * 80], 2, "error: input is too long", "pass --truncate to trace the first 64"),
    "over-long text, --truncate": (["字" * 80, "--truncate"], 0, "note: --truncate: the text needs 82 tokens"),
    "empty text": ([""], 0, "note: the text is empty (no token of its own): the model sees only [CLS] [SEP]"),
    "only unknown characters": ([chr(0x20000) * 3], 0, "note: no character of the text is in this vocabulary"),
    "typed special tokens": (["北京[PAD][SEP]是"], 0, "note: the text contains [PAD], [SEP]"),
    "[MASK] for a tokenizer that writes <mask>": ([CHINESE.sentence, "--model", str(FAMILY_MODEL_DIRS["roberta"])], 0,
                                                  "note: [MASK] is written <mask> in this tokenizer"),
    "a family the reference does not spell out": ([CHINESE.sentence, "--model", str(FAMILY_MODEL_DIRS["albert"])], 0,
                                                   "note: every step of ALBERT is traced; bertspec's from-scratch reference"),
    "--html in a folder that does not exist": ([CHINESE.sentence, "--html", "no-such-folder/trace.html"], 2,
                                               "error: --html no-such-folder/trace.html: no such folder no-such-folder"),
    "--html naming a folder": ([CHINESE.sentence, "--html", "."], 2, "error: --html . is a folder"),
}


def run_cli(args) -> int:
    try:
        return cli(args)
    except SystemExit as exit:  # argparse ends the process itself on a usage error
        return exit.code


@pytest.mark.parametrize("row", [*BROKEN, *BAD_OPTIONS, *TEXTS])
def test_the_trace_command_answers_bad_input_with_one_line(row, broken, capfd, evidence):
    """``python -m bertspec trace`` answers every row of the bad-input table with one true line: an error naming --model and exit status 2, or a one-line note.

    The command checks the folder before it imports torch, silences the
    libraries' own warnings (a tokenizer's length warning, a load report), and
    names the option the user typed (``--model``, not pytest's
    ``--bert-model``). Inputs that are valid but surprising run normally and say
    so in one note: a typed [PAD] is an ordinary token with attention_mask 1,
    not padding; a text of nothing but unknown characters is all [UNK]; an
    empty text is [CLS] [SEP] alone; on another family a typed [MASK] is read as the
    tokenizer's own mask token (RoBERTa's <mask>), and the note says that the
    from-scratch reference spells out BERT only. An over-long text is refused
    with advice the command can follow: ``--truncate``, which traces the
    positions the model has and says how many tokens the text needed. A page
    that cannot be written (``--html`` in a missing folder, or naming a folder)
    is refused with one line naming --html, before the model is loaded.

    Claim ID: P1.2
    Question: What does the trace command say when the folder, an option or the text is wrong?
    问题：目录、选项或文本有问题时，trace 命令会说什么？
    中文：python -m bertspec trace 对坏输入表的每一行都只给一行真实的话：指明 --model 的错误信息与退出码 2，或一行提示。
    原因：命令在导入 torch 之前检查目录，屏蔽各个库自己的警告（分词器的长度警告、加载报告），并写出用户实际输入的选项
    （--model，而不是 pytest 的 --bert-model）。合法但出人意料的输入照常运行，并用一行提示说明：手动输入的 [PAD] 是
    attention_mask 为 1 的普通 token，不是 padding；全是未知字符的文本全是 [UNK]；空文本只有 [CLS] [SEP]；在其他家族上，输入的 [MASK]
    按分词器自己的 mask token 读取（RoBERTa 的 <mask>），提示还说明从零实现的参考只写出了 BERT。过长的文本被拒绝，建议的是命令本身能做到的 --truncate：它 trace 模型拥有的那些位置，
    并说明文本原本需要多少 token。无法写出的页面（--html 指向不存在的目录，或本身是一个目录）在加载模型之前就被拒绝，只给一行指明 --html 的话。
    """
    if row in BROKEN:
        args, status, expected = [CHINESE.sentence, "--model", str(broken[row])], 2, f"error: --model {broken[row]}"
        expected_too = BROKEN[row][1]
    elif row in BAD_OPTIONS:
        if "cuda" in row and torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        args, status, expected, expected_too = [CHINESE.sentence, *BAD_OPTIONS[row][0]], 2, "error: ", BAD_OPTIONS[row][1]
    else:
        (*args,), status, expected, *also = TEXTS[row]
        expected_too = also[0] if also else expected
    capfd.readouterr()
    code = run_cli(["trace", *args])
    out = capfd.readouterr()
    lines = one_line(out.err) if status else [line for line in one_line(out.out) if line.startswith(("note:", "tokens:"))]
    evidence.table(f"python -m bertspec trace {row}", ["exit status", "stderr", "lines that answer"],
                   [(code, out.err.strip(), "\n".join(lines))])
    assert code == status
    if status:
        assert len(lines) == 1 and lines[0].startswith(expected) and expected_too in lines[0], lines
        assert out.out == ""
    else:
        assert out.err == "", "no library warning may reach the terminal"
        assert any(line.startswith(expected) for line in lines), lines
