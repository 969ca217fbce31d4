"""Chapter P8.1 — the padding mask meets the causal mask: what each attention of a decoder and of T5 receives, per
transformers version × attention implementation, and what it does to the probabilities.

The batches are two rows: unpadded (two texts of one length), and left-padded
(a long and a short text, pads before the short one, as a decoder pads to
generate). T5's decoder reads the same rows as its encoder, with the same
mask, so that its self-attention too has padded keys before real ones and its
cross-attention has the encoder's.
"""

import json
import re

import pytest
import torch
from markupsafe import escape

from bertspec.__main__ import main as cli
from bertspec.handbook import claims
from bertspec.handbook.evidence import attention_probs, attention_rows
from bertspec.handbook.trace_page import EXPLAINED_BEYOND
from bertspec.models import generative as architectures
from bertspec.models import versions
from bertspec.models.generative import CAUSAL_SELF, CROSS, ENCODER_DECODER, ENCODER_SELF
from bertspec.proof import scope
from bertspec.proof.generation import HIDDEN_SPAN, PREFIX
from bertspec.proof.pages import SPEC
from bertspec.proof.tolerances import TOL
from bertspec.tracing import masks
from bertspec.tracing.trace import CAUSAL_FLAG, trace_forward

TEXTS = {"unpadded": [PREFIX, "中国的首都是"], "padded": [PREFIX, "北京"]}


def traced(model, padding: str):
    """The trace (tensors kept) of a forward on the unpadded or the left-padded batch, and the batch."""
    batch = dict(model.encode(TEXTS[padding], padding_side="left"))
    assert bool((batch["attention_mask"] == 0).any()) == (padding == "padded"), "the batch is not padded as named"
    if model.anatomy.kind == ENCODER_DECODER:
        batch.update(decoder_input_ids=batch["input_ids"], decoder_attention_mask=batch["attention_mask"])
    trace, _ = trace_forward(model.model, keep_tensors=True, **batch)
    return trace, batch


def may_see(role: str, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, T): may query i see key j? Real keys for every role; in a causal self-attention only j <= i of them."""
    b, t = attention_mask.shape
    keys = attention_mask.bool()[:, None, :].expand(b, t, t)
    return keys & torch.ones(t, t, dtype=torch.bool).tril() if role == CAUSAL_SELF else keys


def observed_form(trace, path: str, attention_mask: torch.Tensor) -> str:
    """The mask's form as the module received it, with the causal flag where it handed one to the sdpa kernel."""
    form = str(masks.form(trace.tensor(f"{path}:attention_mask"), *attention_mask.shape))
    return architectures.flagged(form) if f"{path}:{CAUSAL_FLAG}" in trace else form


@pytest.mark.carries(encoder=scope.differs_on(
    "an encoder attends both ways: its mask hides padding only",
    "test_the_mask_reaching_the_layers_has_the_form_read_in_this_transformers_version"))
@pytest.mark.counterfeits("causal_mask_dropped", padding="unpadded")
@pytest.mark.parametrize("padding", ["unpadded", "padded"])
def test_each_attention_receives_the_mask_form_read_in_this_version_and_a_causal_one_hides_the_future(
        generative, padding, evidence):
    """Each attention module receives the mask form read in this transformers version's source, and a decoder's mask hides the future keys even where nothing is padded.

    The forms (bertspec/models/generative.py, per major × implementation):
    eager decoders get an additive float [B, 1, T, T] with 0 and finfo.min,
    the causal triangle in it even for an unpadded batch; sdpa decoders get
    a boolean [B, 1, T, T] where something is padded and otherwise None with
    is_causal=True handed to the kernel. So an unpadded causal batch has no
    "all-zero" mask as BERT's eager 4.x has: a triangle, or None plus the
    flag. (T5's sdpa decoder is the exception that proves the rule: its None
    carries no kernel flag, because the triangle is folded into the float
    position-bias mask the kernel gets; the probabilities claim shows it is
    causal.) T5's encoder and cross-attention masks hide padding only: 4.57
    builds [B, 1, 1, T] with (1 - mask) · finfo.min, 5.x a [B, 1, T, T], or
    None without padding. Beyond the form, every tensor mask must allow
    exactly the keys its role may see at each real query: the real ones, and
    in a causal self-attention only those up to the query.

    Claim ID: P8.1
    Question: What mask does each attention layer of a decoder or of T5 receive, and is there an "all-zero" mask without padding?
    问题：解码器和 T5 的每个 attention 层收到什么样的 mask？没有 padding 时有"全 0"mask 吗？
    中文：每个 attention 模块收到的 mask 形式与所装 transformers 版本源码中读到的一致；解码器的 mask 即使没有 padding 也屏蔽未来的 key。
    原因：各形式记在 bertspec/models/generative.py（按主版本 × 实现）：eager 解码器收到加性浮点 [B,1,T,T]（0 与 finfo.min），
    即使批次没有 padding 其中也有因果三角；sdpa 解码器在有 padding 时收到布尔 [B,1,T,T]，否则为 None 并把 is_causal=True 交给内核。
    所以没有 padding 的因果批次没有 BERT 的 4.x eager 那样的"全 0"mask：要么是三角，要么是 None 加标志。（T5 的 sdpa 解码器是例外：
    它的 None 不带内核标志，因为三角被并入内核收到的浮点位置偏置 mask；概率那条结论证明它是因果的。）T5 的编码器与交叉注意力的 mask
    只屏蔽 padding：4.57 用 (1 - mask)·finfo.min 构造 [B,1,1,T]，5.x 构造 [B,1,T,T]，没有 padding 时为 None。除形式外，
    每个张量形式的 mask 在每个真实 query 处必须恰好允许其角色可见的 key：真实的 key，因果自注意力中只允许不晚于该 query 的那些。
    """
    a = generative.anatomy
    trace, batch = traced(generative, padding)
    attention_mask = batch["attention_mask"]
    known = a.receives(versions.MAJOR, generative.attn_implementation)
    real = attention_mask.bool()
    rows, wrong = [], []
    for path, role, _ in a.roles(generative.model):
        observed = observed_form(trace, path, attention_mask)
        rows.append((path, role, observed, known.get((role, padding), "—")))
        mask = trace.tensor(f"{path}:attention_mask")
        allowed = None if mask is None else masks.allowed(mask, *real.shape)[real]
        if allowed is not None and not torch.equal(allowed, may_see(role, attention_mask)[real]):
            wrong.append(path)
    evidence.table(f"{a.name} on transformers {versions.VERSION}, {generative.attn_implementation}, {padding} batch",
                   ["attention module", "role", "observed", "expected"], rows)
    this_run = (versions.MAJOR, generative.attn_implementation)
    evidence.table(f"every version × implementation, as read in each version's source ({a.name}, {padding})",
                   ["transformers", "attention", "role", "expected", "verified"],
                   [(f"{major}.x", impl, role, form, "✓ this run" if (major, impl) == this_run else "")
                    for (major, impl), forms in a.mask_forms for role, kind, form in forms if kind == padding])
    if not known:
        pytest.skip(f"no reading of transformers {versions.VERSION}'s {a.name} mask code yet; observed: {rows}")
    assert [r[2] for r in rows] == [r[3] for r in rows]
    assert not wrong, f"these masks allow other keys than their role may see at a real query: {wrong}"


@pytest.mark.carries(encoder=scope.differs_on(
    "an encoder attends both ways: its mask hides padding only",
    "test_padded_keys_get_exactly_zero_attention_probability"))
@pytest.mark.counterfeits("causal_mask_dropped")
def test_padded_and_future_keys_get_exactly_zero_probability_at_every_real_query_of_a_causal_self_attention(
        generative, evidence):
    """In every causal self-attention layer, padded keys and future keys get exactly zero probability at every real query; T5's encoder hides padded keys only.

    The tracer records each layer's probabilities: eager's softmax output
    observed, sdpa's derived from the kernel's arguments by torch's documented
    semantics (is_causal=True: the lower triangle, the rest -inf). A hidden
    key's score is finfo.min (or -inf) below the row's largest, so its
    exponential is exactly 0.0 in float32: no tolerance. In a left-padded
    batch a real query's future keys are all real, its padded keys all
    before it, so both rules are tested apart. T5's encoder is bidirectional:
    its future keys keep a probability above zero. Each real query's row
    sums to 1 within 1e-6 (a float32 sum of at most a few dozen terms).
    On eager the evidence draws every causal self-attention layer and head
    of the padded batch: the empty triangle and the empty padded columns.

    Claim ID: P8.1
    Question: Do padded keys and future keys get exactly zero attention probability in a decoder?
    问题：在解码器中，padding 的 key 和未来的 key 的注意力概率恰好为 0 吗？
    中文：在每个因果自注意力层中，padding 的 key 与未来的 key 在每个真实 query 处的概率恰好为 0；T5 的编码器只屏蔽 padding 的 key。
    原因：tracer 记录每层的概率：eager 观测 softmax 的输出，sdpa 按 torch 文档的语义由内核参数推导（is_causal=True：下三角，其余为 -inf）。
    被屏蔽的 key 的分数比该行最大值低 finfo.min（或 -inf），其指数在 float32 中恰为 0.0：不需要容差。在左侧填充的批次中，
    真实 query 的未来 key 全是真实 token，padding 的 key 都在它之前，因此两条规则分开检验。T5 的编码器是双向的：未来的 key
    概率保持大于 0。每个真实 query 的行之和在 1e-6 内等于 1（float32 对至多几十项求和）。在 eager 上，证据画出填充批次中每个因果自注意力
    层与头：空着的上三角与空着的 padding 列。
    """
    a = generative.anatomy
    trace, batch = traced(generative, "padded")
    attention_mask = batch["attention_mask"]
    real = attention_mask.bool()
    future = torch.ones(real.shape[1], real.shape[1], dtype=torch.bool).triu(1) & real[:, None, :]
    rows = []
    for path, role, _ in a.roles(generative.model):
        if role == CROSS:  # P8.5 asks what decoder queries see of the encoder
            continue
        step = trace[f"{path}:probs"]
        probs = trace.tensor(step.name).cpu().transpose(1, 2)[real]  # (real queries, H, keys)
        padded = ~real[:, None, :].expand_as(future)[real][:, None, :].expand_as(probs)
        ahead = future[real][:, None, :].expand_as(probs)
        rows.append((path, role, step.source, probs[padded].max().item(), probs[ahead].max().item(),
                     probs[ahead].min().item(), (probs.sum(-1) - 1).abs().max().item()))
        assert bool((probs[padded] == 0).all()), f"{path}: a padded key has probability above zero"
        if role == CAUSAL_SELF:
            assert bool((probs[ahead] == 0).all()), f"{path}: a future key has probability above zero"
        else:
            assert bool((probs[ahead] > 0).all()), f"{path}: a bidirectional encoder hid a future key"
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), **TOL["prob_sum"])
    evidence.table(f"{a.name}, {generative.attn_implementation}, left-padded batch {TEXTS['padded']}: probabilities "
                   "at real queries", ["attention module", "role", "probs", "max at padded keys", "max at future keys",
                                       "min at future keys", "max |row sum − 1|"], rows)
    assert any(role == CAUSAL_SELF for _, role, *_ in rows) and (a.kind != ENCODER_DECODER or
                                                                 any(role == ENCODER_SELF for _, role, *_ in rows))
    if generative.attn_implementation == "eager":  # sdpa's are derived from the same inputs: one view is enough
        causal = torch.stack([trace.tensor(f"{path}:probs") for path, role, _ in a.roles(generative.model)
                              if role == CAUSAL_SELF])
        ids = batch.get("decoder_input_ids", batch["input_ids"])
        tokens = [generative.tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]
        evidence.attention_view(f"{a.name}, eager: every causal self-attention layer and head, left-padded batch",
                                [attention_rows("left-padded", tokens, attention_mask, torch.zeros_like(ids), causal)],
                                note="a row is a query, a column a key: at every real query the future (right of "
                                     "the diagonal) and the padding (the short row's first columns) are empty; a "
                                     "padding query hides every key, its row is what softmax makes of hidden scores "
                                     "(P4.2d), and no real token reads its output")


GUESSES = re.compile(r"^(?:next token after \S+|\S+ begins with): (.+)$", re.MULTILINE)
SHOWN = re.compile(rf"^(?:model|tokens|decoder tokens|note): |^\S+:(?:attention_mask|{CAUSAL_FLAG}) ")


def printed_guesses(out: str) -> list[list[str]]:
    """[token, probability] of each guess the trace command printed."""
    return [guess.rsplit(" ", 1) for guess in GUESSES.search(out).group(1).split(", ")]


@pytest.mark.carries(encoder=scope.differs_on(
    "an encoder's trace ends in guesses at each [MASK], not at the next position",
    "test_the_trace_command_prints_every_step_and_the_prediction"))
def test_the_trace_command_prints_each_attentions_mask_and_the_models_own_top_next_token_guesses(
        generative, capsys, tmp_path, evidence):
    """``python -m bertspec trace TEXT --model fixtures/family/<gpt2|llama|t5>`` prints every attention's mask step and the model's own top five guesses for the next token (T5: for the span after <extra_id_0>), and ``--html`` writes them on one offline page with exactly the traced probabilities.

    The command traces a bundled decoder or T5 with the same tracer as these
    claims: each attention module's mask as it arrived (and on sdpa, where
    the module hands the kernel is_causal=True, that flag), scores and
    probabilities. A decoder guesses the token after the text's last one;
    T5's decoder starts with its start token, then <extra_id_0>, and guesses
    the first token of the span the text hides there. The guesses must be the
    model's own: the five tokens of an untraced forward's largest
    probabilities, in order, their probabilities within the 0.0005 of the
    printed rounding. With --html PAGE the command writes the page it writes
    for a BERT-family model: the tokens (T5's decoder tokens beside), a row
    per attention module with the mask it received, the attention view of
    each stack's self-attention holding the traced probabilities bit for bit
    (float32 bytes; T5's cross-attention is not square: its values are in
    the steps table), the guesses, every step, links to chapter P8's claims
    that explain each part, and nothing fetched.

    Claim ID: P8.1
    Question: What does `python -m bertspec trace` print for a decoder or for T5?
    问题：对解码器或 T5，`python -m bertspec trace` 会打印什么？
    中文：python -m bertspec trace 文本 --model fixtures/family/<gpt2|llama|t5> 打印每个 attention 的 mask 步骤，以及模型自己对下一个 token 的前五个猜测（T5：<extra_id_0> 之后的片段）；加上 --html 则把它们写进一个离线页面，其中的概率与 trace 的完全相同。
    原因：命令用与这些结论相同的 tracer 追踪自带的解码器或 T5：每个 attention 模块收到的 mask（sdpa 上模块把 is_causal=True
    交给内核时还有这个标志）、分数和概率。解码器猜文本最后一个 token 之后的 token；T5 的解码器以起始 token 开头，接着 <extra_id_0>，
    猜文本在那里隐藏的片段的第一个 token。猜测必须是模型自己的：一次不追踪的前向中概率最大的五个 token，顺序相同，概率与打印值之差
    在四舍五入的 0.0005 之内。加上 --html 页面，命令写出与 BERT 家族模型相同的页面：token（T5 的解码器 token 在旁边）、每个
    attention 模块一行及其收到的 mask、每个栈的自注意力的 attention 视图（按 float32 字节保存，与 trace 的概率逐位相同；T5 的交叉
    注意力不是方阵，其数值在步骤表中）、猜测、每一步、链接到讲解各部分的 P8 章结论，并且不加载任何外部内容。
    """
    a, tokenizer = generative.anatomy, generative.tokenizer
    text = HIDDEN_SPAN if a.kind == ENCODER_DECODER else PREFIX
    args = ["trace", text, "--model", str(generative.origin.folder), "--attn-implementation",
            generative.attn_implementation]
    status = cli(args)
    out = capsys.readouterr().out
    page_path = tmp_path / "trace.html"
    written = cli([*args, "--html", str(page_path)])
    capsys.readouterr()
    page = page_path.read_text(encoding="utf-8")
    inputs = dict(tokenizer(text, return_tensors="pt"))
    if a.kind == ENCODER_DECODER:
        start = [generative.config.decoder_start_token_id, tokenizer.convert_tokens_to_ids("<extra_id_0>")]
        inputs["decoder_input_ids"] = torch.tensor([start])
    with torch.no_grad():
        top = generative.model(**inputs).logits[0, -1].softmax(-1).topk(5)
    trace, _ = trace_forward(generative.model, keep_tensors=True, **inputs)
    roles = a.roles(generative.model)
    # the page's views in its order: each stack's self-attention, T5's encoder first
    traced_probs = [torch.stack([trace.tensor(f"{path}:probs") for path, r, _ in roles if r == role])
                    for role in (ENCODER_SELF, CAUSAL_SELF) if any(r == role for _, r, _ in roles)]
    views = re.findall(r'<script type="application/json">(.*?)</script>', page, re.DOTALL)
    shown = [attention_probs(json.loads(view)["batches"][0]) for view in views]
    same = len(shown) == len(traced_probs) and all(map(torch.equal, shown, traced_probs))
    rows = re.findall(r'<tr data-attention="([^"]+)"><td>([^<]+)</td>', page)
    parts = EXPLAINED_BEYOND[a.kind].values()
    discovered = claims.discover(SPEC)
    explaining = {claims.anchor(claims.parse(discovered[f].doc).claim_id, f) for part in parts for _, f in part}
    linked = set(re.findall(r'href="report\.html#([^"]+)"', page))
    fetched = re.findall(r'(?:src|href)="(?:https?:)?//|<link\b', page)
    printed = printed_guesses(out)
    shown_args = " ".join(args).replace(str(generative.origin.folder), f"fixtures/family/{a.family}")
    evidence.text(f"$ python -m bertspec {shown_args}   (exit status {status}): its masks and guesses",
                  "\n".join(line for line in out.splitlines() if SHOWN.match(line) or GUESSES.match(line)))
    evidence.table(f"the same with --html trace.html (exit status {written})",
                   ["bytes", "attention rows", "views", "equal to the traced probabilities", "claim links", "fetched"],
                   [(len(page.encode()), len(rows), len(shown), same, len(linked), len(fetched))])
    assert status == 0 and written == 0
    assert [token for token, _ in printed] == tokenizer.convert_ids_to_tokens(top.indices.tolist())
    assert all(abs(float(p) - q) <= 5e-4 for (_, p), q in zip(printed, top.values.tolist()))
    assert rows == [(f"{path}:attention_mask", role) for path, role, _ in roles]
    assert same, "the page's attention views do not hold the traced probabilities"
    assert linked == explaining and all(f in discovered for part in parts for _, f in part)
    assert fetched == [] and all(f"<td>{escape(token)} " in page for token, _ in printed)
    for path, _, _ in a.roles(generative.model):
        assert re.search(rf"^{re.escape(path)}:attention_mask ", out, re.MULTILINE), f"no mask step of {path}"
        assert re.search(rf"^{re.escape(path)}:probs ", out, re.MULTILINE), f"no probabilities of {path}"
