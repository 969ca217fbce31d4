"""Chapter P4.2c — boundaries: a row with every position padded, no mask given, a single token,
an empty string, an input longer than the position table (transformers' own error, and the
toolkit's), and characters outside the vocabulary.

Every claim on a model runs on each chosen attention implementation (the
``bert`` fixture).
"""

import pytest
import torch
import transformers

from bertspec.__main__ import main as cli
from bertspec.models import versions
from bertspec.models.inputs import InputTooLongError
from bertspec.models.loading import last_hidden_state
from bertspec.proof import counterfeits, scope
from bertspec.proof.compare import beyond
from bertspec.proof.counterfeits import mask_value_minus_infinity
from bertspec.proof.tolerances import TOL
from bertspec.tracing import masks, probe

# CJK Extension B: split into single characters like any Chinese text, and rare enough to be
# in no Chinese BERT vocabulary we know (the claim checks the one under test).
UNKNOWN_CHARACTERS = (chr(0x20000), chr(0x20001))


def test_a_row_with_every_position_padded_gives_finite_outputs_not_nan(bert, evidence):
    """With every position padded the model still gives finite outputs: uniform attention under an additive mask, a zero context under a boolean one.

    An additive mask puts finfo.min on every key of the row; in the model's
    float32, score + finfo.min rounds to finfo.min itself for any score a model
    makes (P4.2d: not so in float16), so all entries are equal and softmax gives each
    key exactly 1/T: the context is the mean of the values (compared after the
    layer's output projection, which every family records). This is why the mask
    is finfo.min and not -inf: with -inf in its place eager attention computes
    softmax of a row of -inf, 0/0, and every logit is NaN (checked). Where
    transformers passes sdpa a boolean mask (5.x), torch's fused kernel returns
    a zero context for a row with no allowed key (its documented reference
    maths, filling -inf, would give NaN); the evidence shows that it does the
    same with a -inf float mask. Either way no NaN reaches the logits.

    Claim ID: P4.2c
    Question: Does a row that is all padding produce NaN?
    问题：一整行都是 padding 时会出现 NaN 吗？
    中文：所有位置都是 padding 时模型仍给出有限输出：加性 mask 下注意力是均匀的，布尔 mask 下上下文为零。
    原因：加性 mask 在该行每个 key 上加 finfo.min；在模型的 float32 中，对模型给出的任何分数，score + finfo.min 舍入后就是 finfo.min
    （P4.2d：float16 中并非如此），所有元素相等，softmax 给每个 key
    严格的 1/T，上下文是 value 的平均（在该层输出投影之后比较）。这就是 mask 用 finfo.min 而不用 -inf 的原因：换成 -inf 后 eager 对一整行 -inf 做 softmax
    （0/0），所有 logits 都是 NaN（已检查）。transformers 5.x 给 sdpa 传布尔 mask 时，torch 的融合内核对没有可见 key 的行返回
    零上下文（按其文档中的参考公式填 -inf 会得到 NaN）；证据显示它对 -inf 浮点 mask 也是如此。两种情况下 logits 中都没有 NaN。
    """
    encoded = bert.example(padded=False)
    batch = bert.batch(encoded.input_ids, torch.zeros_like(encoded.attention_mask))
    trace, output = bert.trace(batch)
    t = batch.input_ids.shape[1]
    received = trace.all("attention_mask")[0].tensor
    boolean = received is not None and received.dtype == torch.bool
    a = bert.anatomy
    rows = []
    for layer in range(bert.config.num_hidden_layers):
        values = bert.traced_values(trace, layer)
        expected = bert.projected(layer, torch.zeros_like(values) if boolean else values.mean(1, keepdim=True).expand_as(values))
        projected = trace.tensor(a.step(layer, a.attention_output))
        rows.append((layer, (projected - expected).abs().max()))
        torch.testing.assert_close(projected, expected, **(TOL["exact"] if boolean else TOL["float32_kernels"]))
        if not boolean:
            assert bool((trace.tensor(a.attention_step(layer, "scores+mask")) == torch.finfo(torch.float32).min).all())
            probs = trace.tensor(a.attention_step(layer, "probs"))
            assert torch.equal(probs, torch.full_like(probs, 1 / t)), "every key gets exactly 1/T"
    # Where attention hides keys with masked_fill itself, no -inf can be handed to it (counterfeits.why_not says why).
    no_minus_inf = counterfeits.why_not("mask_value_minus_infinity", bert)
    with_minus_inf = None
    if no_minus_inf is None:
        with mask_value_minus_infinity(bert), torch.no_grad():
            with_minus_inf = bert.model(**batch.as_kwargs()).logits
    evidence.table("all padded", ["layer mask", "T", "expected context", "logits finite", "logits NaN with -inf for finfo.min"],
                   [(masks.form(received, 1, t), t, "0 (fused kernel)" if boolean else "mean of V (probabilities 1/T)",
                     bool(torch.isfinite(output.logits).all()),
                     no_minus_inf or bool(torch.isnan(with_minus_inf).all()))])
    evidence.table("attention output projection vs the projection of the expected context", ["layer", "max |diff|"], rows)
    assert bool(torch.isfinite(output.logits).all())
    if bert.attn_implementation == "eager" and with_minus_inf is not None:
        assert bool(torch.isnan(with_minus_inf).all()), "a row of -inf should give NaN: softmax is 0/0"


def test_calling_the_model_without_attention_mask_is_the_same_as_an_all_ones_mask(bert, evidence):
    """Leaving attention_mask out gives bit-for-bit the outputs of an all-ones mask, and not those of a mask that hides a token.

    A missing mask means "every token is real". How the installed version gets
    there differs (bertspec/models/versions.py, MISSING_ATTENTION_MASK): transformers
    4.57's BertModel fills a missing attention_mask with ones and converts it
    like any 2D mask; 5.x hands the None to create_bidirectional_mask, which
    returns None, so no mask is built at all — as for an all-ones mask, which it
    also skips. Either way both calls run the same arithmetic. A mask that hides
    the last token gives another output, so the comparison can tell.

    Claim ID: P4.2c
    Question: What happens if I don't pass attention_mask?
    问题：不传 attention_mask 会怎样？
    中文：不传 attention_mask 与传全 1 的 mask 输出逐位相同，而与隐藏了某个 token 的 mask 不同。
    原因：缺失的 mask 表示“每个 token 都是真实的”。所装版本如何做到这一点各不相同（bertspec/models/versions.py 的 MISSING_ATTENTION_MASK）：
    transformers 4.57 的 BertModel 用全 1 填充缺失的 attention_mask，再像任何二维 mask 一样转换；5.x 把 None 交给
    create_bidirectional_mask，它返回 None，根本不构造 mask——与全 1 mask 一样（它同样被跳过）。两种调用都执行相同的运算。
    隐藏最后一个 token 的 mask 给出不同的输出，所以比较是有区分力的。
    """
    batch = bert.example(padded=False)
    ones = last_hidden_state(bert.model, batch)
    missing = last_hidden_state(bert.model, batch, attention_mask=None)
    hiding = last_hidden_state(bert.model, batch, attention_mask=batch.attention_mask.masked_fill(
        torch.arange(batch.input_ids.shape[1], device=bert.device) == batch.input_ids.shape[1] - 1, 0))
    evidence.table("last hidden state without attention_mask vs", ["attention_mask", "max |diff|"],
                   [("all ones", (missing - ones).abs().max()), ("last token hidden", (missing - hiding).abs().max())])
    evidence.table("what a missing attention_mask becomes, per version",
                   *versions.table(versions.MISSING_ATTENTION_MASK, ["transformers"], versions.MAJOR))
    assert bool(batch.attention_mask.all())
    torch.testing.assert_close(missing, ones, **TOL["exact"])
    assert beyond(missing, hiding, TOL["float32_kernels"])


def test_a_single_token_attends_to_itself_with_probability_exactly_one(bert, evidence):
    """A one-token input ([CLS] alone) runs, and its only query gives its only key probability exactly 1.0 in every layer.

    softmax over one entry is exp(0) / exp(0) = 1 exactly, so the attention
    output is that token's own value vector (compared after the layer's output
    projection, which every family records). Nothing in BERT needs a second
    token.

    Claim ID: P4.2c
    Question: Does BERT work on an input of a single token?
    问题：只有一个 token 的输入，BERT 也能处理吗？
    中文：只有一个 token（单独的 [CLS]）的输入也能运行，它唯一的 query 在每一层都给唯一的 key 严格为 1.0 的概率。
    原因：只有一个元素的 softmax 是 exp(0)/exp(0) = 1，精确成立，因此注意力输出就是该 token 自己的 value 向量（在该层的输出投影之后比较，每个家族都记录这一步）。BERT 不需要第二个 token。
    """
    a = bert.anatomy
    batch = bert.batch(torch.tensor([[bert.tokenizer.cls_token_id]], device=bert.device))
    trace, output = bert.trace(batch)
    probs = trace.stack("probs")
    rows = []
    for layer in range(bert.config.num_hidden_layers):
        projected, expected = trace.tensor(a.step(layer, a.attention_output)), bert.projected(layer, bert.traced_values(trace, layer))
        rows.append((layer, trace.tensor(a.attention_step(layer, "probs")).flatten().tolist(), (projected - expected).abs().max()))
        torch.testing.assert_close(projected, expected, **TOL["exact"])
    evidence.table("[CLS] alone", ["layer", "probability per head", "max |attention output - projection of its value|"], rows)
    assert torch.equal(probs, torch.ones_like(probs))
    assert output.logits.shape[:2] == (1, 1) and bool(torch.isfinite(output.logits).all())


def test_an_empty_string_is_encoded_as_cls_sep_and_runs_like_any_input(bert, evidence):
    """An empty string becomes [CLS] [SEP], two real tokens, and the model runs on it normally.

    The tokenizer adds the special tokens whatever the text; the model sees a
    two-token sequence with attention_mask 1, every attention row a proper
    distribution over the two keys.

    Claim ID: P4.2c
    Question: What happens if I give BERT an empty string?
    问题：给 BERT 输入空字符串会怎样？
    中文：空字符串被编码为 [CLS] [SEP] 两个真实 token，模型正常运行。
    原因：无论文本是什么，分词器都会加上特殊 token；模型看到的是 attention_mask 为 1 的两个 token，每一行注意力都是两个 key 上的正常分布。
    """
    batch = bert.encode("")
    trace, output = bert.trace(batch)
    probs = trace.stack("probs")
    evidence.table("encoded", ["tokens", "attention_mask", "logits shape", "min probability"],
                   [(bert.tokens(batch), batch.attention_mask[0].tolist(), tuple(output.logits.shape), probs.min())])
    assert bert.tokens(batch) == [bert.tokenizer.cls_token, bert.tokenizer.sep_token] and bool(batch.attention_mask.all())
    assert bool(torch.isfinite(output.logits).all()) and bool((probs > 0).all())
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), **TOL["prob_sum"])


def test_transformers_itself_fails_on_an_over_long_input_with_an_error_that_never_says_too_long(bert, evidence):
    """Given more tokens than max_position_embeddings, transformers fails with a size or index error that never says "too long".

    The position table has max_position_embeddings rows. Without position_ids
    BERT slices its 0..max-1 buffer, which comes out shorter than the input, and
    the next expand or addition fails on tensor sizes (a RuntimeError); with
    explicit position ids the lookup itself fails, "index out of range" (an
    IndexError). No message names the cause, which is why the toolkit counts
    tokens first and says "too long" (chapter P1). The evidence lists the
    messages of the installed version.

    Claim ID: P4.2c
    Question: What does transformers do with an input that is too long?
    问题：输入过长时 transformers 会怎样？
    中文：token 数超过 max_position_embeddings 时，transformers 报的是尺寸或索引错误，从不说"too long"。
    原因：位置嵌入表只有 max_position_embeddings 行。不传 position_ids 时 BERT 截取 0..max-1 的缓冲区，长度比输入短，
    随后的 expand 或加法因张量尺寸不符而失败（RuntimeError）；显式传入位置时查表本身失败，报"index out of range"（IndexError）。
    这些信息都没说出原因，所以工具包先数 token 并明确说"too long"（见 P1 章）。证据中列出所装版本的报错信息。
    """
    if bert.anatomy.position_embeddings is None:
        scope.differs(bert, "it has no position table to run past (rotary positions); the toolkit still refuses inputs "
                            "longer than max_position_embeddings, the length it was trained for", scope.MODERNBERT_ROTARY)
    n = bert.config.max_position_embeddings + 1
    enc = bert.tokenizer("字" * (n - 2), return_tensors="pt", return_token_type_ids=bert.typed).to(bert.device)
    calls = {
        "input_ids only": dict(input_ids=enc["input_ids"]),
        "as tokenized (ids, mask, token types)": dict(enc),
    }
    if scope.takes_position_ids(bert):
        calls["with position_ids 0..n-1"] = dict(enc, position_ids=torch.arange(n, device=bert.device)[None])
    rows = []
    for call, kwargs in calls.items():
        with pytest.raises((RuntimeError, IndexError)) as err, torch.no_grad():
            bert.model(**kwargs)
        rows.append((call, type(err.value).__name__, str(err.value).splitlines()[0][:160]))
    evidence.table(f"{n} tokens, {n - 1} positions (transformers {transformers.__version__})", ["call", "error", "message"], rows)
    assert enc["input_ids"].shape[1] == n
    for call, _, message in rows:
        assert "too long" not in message.lower() and "max_position" not in message, call


def test_an_input_longer_than_the_position_table_is_refused_with_a_message_that_says_too_long(bert, capsys, evidence):
    """An input longer than max_position_embeddings is refused up front, with a message that says "too long".

    transformers itself fails deep in the embedding lookup (a size mismatch
    or an index error) without naming the cause; the toolkit counts the tokens
    first and says how to fix it. The command line turns it into one line.

    Claim ID: P4.2c
    Question: What happens if my input is longer than max_position_embeddings?
    问题：输入超过 max_position_embeddings 时会怎样？
    中文：超过 max_position_embeddings 的输入会被提前拒绝，错误信息明确说"too long"。
    原因：transformers 本身会在嵌入查表深处报尺寸不匹配或索引错误，不说明原因；工具包先数 token 并给出解决办法，
    命令行只输出一行。
    """
    too_long = "字" * bert.config.max_position_embeddings
    with pytest.raises(InputTooLongError, match="too long.*truncat") as refused:
        bert.encode(too_long)
    args = ["trace", too_long] + ([] if bert.is_default else ["--model", str(bert.folder)])
    status = cli(args)
    err = capsys.readouterr().err.strip()
    evidence.table(f"a text of {len(too_long)} characters; max_position_embeddings = "
                   f"{bert.config.max_position_embeddings}", ["where", "status", "what it says"],
                   [("bert.encode (the toolkit)", "InputTooLongError", str(refused.value)),
                    ("bertspec trace (the command line)", status, err)])
    assert status == 2
    assert err.startswith("error: input is too long") and "\n" not in err


def test_characters_outside_the_vocabulary_all_become_the_same_unk_token(bert, evidence):
    """Characters the vocabulary lacks become [UNK], all the same one: the model cannot tell them apart, and attends to [UNK] like any token.

    The tokenizer splits CJK text into characters and maps each unknown one to
    [UNK] (id 100 in bert-base-chinese and bert-base-uncased; the spec reads it
    from the tokenizer), so two different unknown characters in the same
    context give identical input ids and hence identical outputs; the original
    character cannot be recovered from the ids. The two characters come from
    CJK Extension B, in no BERT vocabulary we know (checked on the one under
    test); the context is in the vocabulary's language, and may hold [UNK]s of
    its own. [UNK] has attention_mask 1 and is attended: shifting its value
    moves every query's attention output (bertspec.tracing.probe).

    Claim ID: P4.2c
    Question: What happens to characters that are not in the vocabulary?
    问题：词表里没有的字会变成什么？
    中文：词表中没有的字都变成同一个 [UNK]：模型无法区分它们，并像普通 token 一样关注 [UNK]。
    原因：分词器把 CJK 文本切成单字，把每个未知字映射为 [UNK]（bert-base-chinese 与 bert-base-uncased 中 id 为 100；spec 从分词器读取），
    所以在相同上下文中两个不同的未知字得到完全相同的 input ids，因而输出也相同；原来的字无法从 id 中恢复。这两个字来自 CJK 扩展 B 区，
    不在我们所知的任何 BERT 词表中（对被测词表做了检查）；上下文使用词表的语言，其中也可能有自己的 [UNK]。[UNK] 的 attention_mask 为 1，
    会被关注：平移它的 value 会改变每个 query 的 attention 输出（bertspec.tracing.probe）。
    Asked in: ymcui/Chinese-BERT-wwm#221, gitabtion/BertBasedCorrectionModels#41, destwang/CTC2021#8, google-research/bert#65, ckiplab/ckip-transformers#7, PlayVoice/vits_chinese#104
    """
    tok = bert.tokenizer
    before, after = bert.texts.around_unknown
    batch = bert.encode([before + c + after for c in UNKNOWN_CHARACTERS])
    context = tok.tokenize(before + after)
    ids = batch.input_ids.cpu()
    unknown = ids == tok.unk_token_id
    added = batch.input_ids == tok.unk_token_id
    added &= torch.arange(ids.shape[1], device=bert.device) == len(tok.tokenize(before)) + 1  # the character's position
    moved = probe.value_influence(bert.model, batch.as_kwargs(), added)
    evidence.table("two different unknown characters", ["character (code point)", "tokens", "ids"],
                   [(f"U+{ord(c):X}", bert.tokens(batch, r), ids[r].tolist()) for r, c in enumerate(UNKNOWN_CHARACTERS)])
    evidence.table("the [UNK]'s value shifted", ["layer", "smallest |Δ output| of any query"], [(i, m.min()) for i, m in enumerate(moved)])
    assert not any(c in tok.get_vocab() for c in UNKNOWN_CHARACTERS)
    assert unknown.sum(1).tolist() == [context.count(tok.unk_token) + 1] * 2
    assert bool(added.sum(1).eq(1).all()), "each character is one [UNK] at its own position"
    assert torch.equal(ids[0], ids[1]), "two different unknown characters must give the same ids"
    assert bool(batch.attention_mask[added].all()) and bool((moved > 0).all())
