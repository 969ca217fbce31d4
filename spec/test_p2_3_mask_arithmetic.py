"""Chapter P2.3 — the arithmetic of score + mask: exactly zero probability at padded keys, the
dtype's minimum itself after the addition, rows that still sum to 1, padded outputs that never
reach the real tokens; the tracer at each place of modeling_bert.py the plan names, and a figure
of the mask's path from the 2D mask to the probabilities.

Every claim runs on each chosen attention implementation (``attn_implementation``
parametrizes the ``bert`` fixture). The batch is the plan's sentence beside a
shorter one, right-padded, so row 1 ends in [PAD] positions
(bertspec.proof.examples.padded_batch).
"""

import dataclasses

import pytest
import torch

from bertspec.handbook.figures import mask_path_figure
from bertspec.proof import scope
from bertspec.proof.compare import padded_keys
from bertspec.proof.examples import padded_batch
from bertspec.proof.tolerances import TOL, kernel_tolerance
from bertspec.tracing import masks, probe


@pytest.mark.counterfeits("mask_dropped", "mask_inverted")
def test_padded_keys_get_exactly_zero_attention_probability(bert, evidence):
    """Every query, in every layer and head, gives a [PAD] key probability exactly 0.0: its value moves no output.

    softmax(x)_j = exp(x_j - max x) / sum. At a padded key x_j = score + finfo.min
    ~ -3.4e38, so x_j - max x is far below log(float32's smallest subnormal)
    ~ -103.3 and exp underflows to exactly 0 — not merely to something small
    (a boolean mask, 5.x sdpa, makes the kernel skip the key). The proof rests
    on what attention outputs, so it holds for the fused sdpa kernel too:
    shifting the value vectors at the [PAD] keys by 1e30, one layer at a time
    (bertspec.tracing.probe), leaves every attention output of every query bit-for-bit
    unchanged, since 0 · 1e30 = 0; any probability above ~1e-36 would have moved
    it. On eager the observed probabilities are also exactly 0.0; on sdpa the
    table shows the tracer's derived ones.

    Claim ID: P2.3b
    Question: How much attention does a [PAD] key get?
    问题：[PAD] 位置的 key 会得到多少注意力？
    中文：每一层、每个头、每个 query 给 [PAD] key 的概率严格等于 0.0：它的 value 不影响任何输出。
    原因：softmax 中 exp(x_j - max x)；padding 位置 x_j = score + finfo.min ≈ -3.4e38，
    远小于 float32 最小次正规数的对数（约 -103.3），exp 下溢为精确的 0，而不只是很小（布尔 mask，即 5.x sdpa，让内核直接跳过该 key）。
    证明依据的是 attention 的输出，因此对 sdpa 融合内核同样成立：逐层把 [PAD] key 处的 value 向量平移 1e30（bertspec.tracing.probe），
    每个 query 的 attention 输出逐位不变，因为 0 · 1e30 = 0；任何大于约 1e-36 的概率都会让它改变。eager 上观测到的概率也严格为 0.0；
    sdpa 上表格显示的是 tracer 推导的概率。
    """
    batch = padded_batch(bert)
    scope.attends_globally(bert, batch.input_ids.shape[1])
    trace, _ = bert.trace(batch)
    pad = padded_keys(batch)
    probs = [trace.tensor(s.name).cpu() for s in trace.all("probs")]
    moved = probe.value_influence(bert.model, batch.as_kwargs(), pad.to(batch.input_ids.device))
    derived = trace.all("probs")[0].source == "derived"
    evidence.matrix("layer 0, head 0, row 1 (ends in [PAD]): probabilities", probs[0][1, 0], bert.tokens(batch, 1),
                    [f"{tok}{' (PAD)' if pad[1, j] else ''}" for j, tok in enumerate(bert.tokens(batch, 1))], derived=derived)
    evidence.table(f"the attention output, values at the [PAD] keys shifted by {probe.SHIFT:g}",
                   ["layer", "max |Δ output| over heads and queries"], [(i, m.max()) for i, m in enumerate(moved)])
    assert bool(pad.any())
    assert torch.equal(moved, torch.zeros_like(moved)), "a [PAD] key's value reached some query's output"
    if not derived:
        for layer, p in enumerate(probs):
            at_padding = p.permute(0, 3, 1, 2)[pad]  # (n_padded_keys, heads, queries)
            assert torch.equal(at_padding, torch.zeros_like(at_padding)), f"layer {layer}: max {at_padding.max():.3g}"


@pytest.mark.counterfeits("mask_dropped", "mask_value_minus_infinity")
def test_score_plus_mask_at_a_padded_key_is_the_dtype_minimum_itself(bert, evidence):
    """At a padded key, score + finfo.min rounds to finfo.min itself: the score is absorbed.

    float32 near 3.4e38 has a spacing (ulp) of 2^104 ~ 2e31. Any score a BERT
    computes (trained models reach a few hundred) is far below half an ulp, so
    the sum rounds back to finfo.min exactly. What the key's score was no longer
    exists after the addition. The addition is observed on eager, where the
    tracer sees both operands and the sum. Inside the fused sdpa kernel it cannot
    be observed (and 5.x passes sdpa a boolean mask, which adds no number at
    all), so on sdpa the claim is skipped with that reason; what the kernel does
    with padded keys is the previous claim, shown through its output. The
    bias need not be the most negative number: Google's BERT, and transformers
    until PR #17306 made it finfo(dtype).min, added -10000.0, and any bias that
    makes exp(score + bias - max) underflow gives the same probabilities bit
    for bit. The evidence adds -10000 and -1 beside finfo.min to layer 0's
    scores: -10000 masks exactly as much as finfo.min, -1 leaks.

    Claim ID: P2.3b
    Question: What is score + finfo.min at a padded key?
    问题：padding 的 key 处 score + finfo.min 等于多少？
    中文：在 padding 的 key 处，score + finfo.min 舍入后就是 finfo.min 本身：分数被"吞掉"。
    原因：float32 在 3.4e38 附近的间距约为 2^104≈2e31，BERT 算出的任何分数（训练过的模型可达几百）都远小于半个间距，
    所以和被舍入回 finfo.min。加法之后，这个 key 原来的分数已不复存在。eager 上可以观测到这次加法：tracer 看到两个操作数与和。
    sdpa 融合内核内部的加法无法观测（5.x 给 sdpa 传的是布尔 mask，根本不做加法），因此在 sdpa 上本断言以此为由跳过；
    内核如何处理 padding key 见上一条断言，它通过内核输出来证明。偏置不必是最负的数：谷歌原版 BERT，以及 PR #17306 改为
    finfo(dtype).min 之前的 transformers，加的是 -10000.0；只要 exp(score + bias - max) 下溢为 0，任何偏置给出的概率都逐位相同。
    证据把 -10000 和 -1 与 finfo.min 并列加到第 0 层的分数上：-10000 屏蔽得与 finfo.min 完全一样，-1 则会泄漏。
    Asked in: huggingface/transformers#34339, huggingface/transformers#13555, ai-glimpse/toynlp#50
    """
    batch = padded_batch(bert)
    trace, _ = bert.trace(batch)
    if trace.all("scores+mask")[0].source == "derived":
        pytest.skip("the fused sdpa kernel adds the mask inside itself (or takes a boolean): the sum is not observable")
    pad = padded_keys(batch)
    finfo_min = torch.tensor(torch.finfo(torch.float32).min)
    rows = []
    for scores, step in zip(trace.all("scores"), trace.all("scores+mask")):
        at_pad = trace.tensor(scores.name).cpu().permute(0, 3, 1, 2)[pad]
        masked = trace.tensor(step.name).cpu().permute(0, 3, 1, 2)[pad]
        rows.append((step.name, at_pad.abs().max(), masked.unique().tolist()))
        assert bool((masked == finfo_min).all()), f"{step.name}: padded entries are not finfo.min"
    evidence.table("float32 at the bottom of its range", ["finfo.min", "ulp there"],
                   [(finfo_min.item(), (torch.nextafter(finfo_min, torch.tensor(0.0)) - finfo_min).item())])
    evidence.table("at the padded keys", ["step", "largest |score|", "score + mask"], rows)
    scores = trace.tensor(trace.all("scores")[0].name).cpu()
    probs = {bias: torch.softmax(scores + torch.where(pad[:, None, None, :], bias, 0.0), -1)
             for bias in (finfo_min.item(), -10000.0, -1.0)}
    evidence.table("layer 0's scores, padded keys biased by", ["bias", "largest probability at a [PAD] key",
                   "max |Δ| from finfo.min's probabilities"],
                   [(bias, p.permute(0, 3, 1, 2)[pad].max(), (p - probs[finfo_min.item()]).abs().max()) for bias, p in probs.items()])
    assert torch.equal(probs[-10000.0], probs[finfo_min.item()]), "-10000 should mask exactly as finfo.min does"
    assert bool((probs[-1.0].permute(0, 3, 1, 2)[pad] > 0).all()), "a bias of -1 leaves padded keys weight e^-1"


def test_every_attention_row_sums_to_one(bert, evidence):
    """Each query's attention probabilities sum to 1, padded queries included.

    Masking removes keys from the softmax's sum, it does not remove queries: every
    row is still a probability distribution over the keys it may see. Shown
    through what attention outputs, so it holds for the fused sdpa kernel too:
    with every value vector replaced by ones, a query's output is Σ_j p_ij · 1,
    its row sum (bertspec.tracing.probe). Tolerance: T float32 terms, each rounded to
    2^-24 relative (TOL["prob_sum"]). The table adds the row sums of the traced
    probabilities (derived, on sdpa).

    Claim ID: P2.3b
    Question: Does every attention row still sum to 1 with padding, [PAD] queries included?
    问题：有 padding 时每行注意力之和还是 1 吗？[PAD] 的 query 也是吗？
    中文：每个 query 的注意力概率之和为 1，padding 位置的 query 也一样。
    原因：mask 只是把某些 key 从 softmax 的求和中去掉，并不去掉 query；每一行仍是对可见 key 的概率分布。
    证明依据的是 attention 的输出，因此对 sdpa 融合内核同样成立：把每个 value 向量换成全 1，query 的输出就是 Σ_j p_ij · 1，
    即它那一行的和（bertspec.tracing.probe）。容差：T 个 float32 项，每项按 2^-24 的相对误差舍入（TOL["prob_sum"]）。
    表格另列出 trace 记录的概率的行和（sdpa 上为推导值）。
    """
    batch = padded_batch(bert)
    scope.attends_globally(bert, batch.input_ids.shape[1])
    trace, _ = bert.trace(batch)
    traced = trace.stack("probs").sum(-1)
    outputs = probe.outputs_with_unit_values(bert.model, batch.as_kwargs())
    evidence.table("row sums over all layers, heads, queries", ["from", "min", "max"],
                   [("the attention output with values = 1", outputs.min(), outputs.max()),
                    (f"the traced probabilities ({trace.all('probs')[0].source})", traced.min(), traced.max())])
    torch.testing.assert_close(outputs, torch.ones_like(outputs), **TOL["prob_sum"])
    torch.testing.assert_close(traced, torch.ones_like(traced), **TOL["prob_sum"])


@pytest.mark.counterfeits("mask_dropped", "mask_inverted")
def test_padded_positions_get_outputs_that_never_reach_the_real_tokens(bert, evidence):
    """A [PAD] position still gets an output vector, but changing it changes no real token's output.

    The mask hides padded *keys*; padded *queries* are computed like any other
    row, attending to the real tokens. Their outputs are finite, depend on what
    token sits there, and are simply ignored downstream (labels -100, pooling
    by mask). Because their probability as keys is exactly 0, a real token's
    output is bit-for-bit the same whatever id the padded slots hold (eager);
    sdpa is held to the float32 kernel tolerance. So a padded query's row of
    attention is not zeros: like every row it sums to 1, all of it on the
    real keys (the evidence shows layer 0's).

    Claim ID: P2.3b
    Question: Does a [PAD] position get an output, and can it affect the real tokens?
    问题：[PAD] 位置有输出吗？它会影响真实 token 吗？
    中文：[PAD] 位置仍有输出向量，但改变它不会改变任何真实 token 的输出。
    原因：mask 屏蔽的是作为 key 的 padding；作为 query 的 padding 行照常计算并关注真实 token，
    其输出有限、取决于该位置的 token，下游会忽略（label=-100、按 mask 池化）。由于作为 key 的概率精确为 0，
    无论 padding 槽放什么 id，真实 token 的输出都逐位不变（eager）；sdpa 按 float32 内核容差比较。所以 padding 的 query 那一行
    attention 并不是全 0：它和每一行一样和为 1，而且全部落在真实 key 上（证据列出第 0 层的情况）。
    Asked in: https://discuss.huggingface.co/t/bert-attention-mask-question/60142, huggingface/transformers#1761
    """
    batch = padded_batch(bert)
    pad = padded_keys(batch).to(batch.input_ids.device)
    other = dataclasses.replace(batch, input_ids=batch.input_ids.masked_fill(pad, bert.tokenizer.unk_token_id))
    with_pad, with_unk = bert.last_hidden(batch), bert.last_hidden(other)
    real = ~pad
    evidence.table("padded slots filled with [PAD] vs [UNK]", ["positions", "max |diff|"],
                   [("real tokens", (with_pad[real] - with_unk[real]).abs().max()),
                    ("padded positions", (with_pad[pad] - with_unk[pad]).abs().max())])
    assert torch.isfinite(with_pad[pad]).all()
    torch.testing.assert_close(with_unk[real], with_pad[real], **kernel_tolerance(bert.attn_implementation))
    assert not torch.allclose(with_unk[pad], with_pad[pad]), "padded positions' outputs should depend on their token"
    trace, _ = bert.trace(batch)
    probs = trace.tensor(trace.all("probs")[0].name).cpu()
    row_sum, on_real_keys = ((p.sum(-1).transpose(1, 2)[pad.cpu()]) for p in (probs, probs * real.cpu()[:, None, None, :]))
    evidence.table("layer 0, the rows of the padded queries", ["", "smallest", "largest"],
                   [("row sum", row_sum.min(), row_sum.max()), ("of which on real keys", on_real_keys.min(), on_real_keys.max())])
    torch.testing.assert_close(on_real_keys, torch.ones_like(on_real_keys), **TOL["prob_sum"])


def test_the_tracer_shows_each_place_the_plan_names_in_every_layer_without_editing_transformers(bert, evidence):
    """At every place the plan names in modeling_bert.py — the mask as received, scores, scores + mask, probabilities — the tracer records each layer's value, without editing transformers.

    The plan asks for debug output at the key places of modeling_bert.py. The
    tracer gets it from outside: a pre-hook on each self-attention module reads
    its ``attention_mask`` argument, and a torch function mode active only
    while that module runs (once its q, k and v are made) sees the scores, the sum with the mask and the
    softmax (on sdpa, the kernel's inputs, from which it derives them). No
    source file is changed and no method replaced: while tracing, every
    module's ``forward`` is still its class's own function and the installed
    modeling_bert.py hashes the same; after tracing the model holds exactly the
    hooks it held before. (Not zero: transformers 5.x installs its own
    output-capturing hooks, for good, the first time hidden states or
    attentions are asked for.)

    Claim ID: P2.3a
    Question: How do I print the mask, scores and probabilities inside modeling_bert.py without editing it?
    问题：怎样在不修改 modeling_bert.py 的情况下打印其中的 mask、分数与概率？
    中文：在计划指出的 modeling_bert.py 每个关键位置——层收到的 mask、scores、scores + mask、概率——tracer 都记录了每一层的值，而无需修改 transformers。
    原因：计划要求在 modeling_bert.py 的关键位置加调试输出。tracer 从外部获得它们：每个 self-attention 模块上的 pre-hook 读取其
    attention_mask 参数，一个只在该模块运行期间（q、k、v 算出之后）生效的 torch function mode 看到分数、与 mask 的和以及 softmax（sdpa 上是内核的输入，
    由此推导）。不修改任何源文件、不替换任何方法：trace 期间每个模块的 forward 仍是其类自己的函数，所装的 modeling_bert.py 哈希不变；
    trace 结束后模型上的 hook 与 trace 前完全相同（不一定为 0：transformers 5.x 第一次被要求输出 hidden states 或 attentions 时，
    会永久装上它自己的输出捕获 hook）。
    """
    import hashlib
    import inspect
    from pathlib import Path

    from bertspec.tracing.trace import Tracer

    source = Path(inspect.getsourcefile(type(bert.encoder)))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    batch = padded_batch(bert)

    def hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in bert.model.modules())

    before = hooks()
    with Tracer(bert.model, keep_tensors=False) as tracer:
        own = all(getattr(m.forward, "__func__", None) is type(m).forward for m in bert.model.modules())
        during = hooks()
        bert.model(**batch.as_kwargs())
    after = hooks()
    places = ("attention_mask", "scores", "scores+mask", "probs")
    found = {q: tracer.trace.all(q) for q in places}
    evidence.table("the plan's places, per layer", ["place", "layers recorded", "shape", "source"],
                   [(q, len(steps), steps[0].shape, steps[0].source) for q, steps in found.items()])
    evidence.table("transformers left as installed", ["forward methods are the classes' own",
                                                      "hooks before / while tracing / after",
                                                      f"{source.name} sha256 before = after"],
                   [(own, f"{before} / {during} / {after}", digest == hashlib.sha256(source.read_bytes()).hexdigest())])
    assert all(len(steps) == bert.config.num_hidden_layers for steps in found.values())
    assert all(s.shape is not None for steps in found.values() for s in steps)
    assert own and during > before and after == before
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()


@pytest.mark.counterfeits("mask_dropped")
def test_a_padded_key_stays_masked_along_the_whole_path_to_its_probability(bert, evidence):
    """Along the mask's path — 2D mask, layer mask, scores + mask, softmax — a [PAD] key is hidden at every step.

    The figure follows row 1 (which ends in [PAD]) through layer 0, head 0:
    (1) the 2D input, (2) what the layer receives, as "may attend", (3) scores +
    mask, with padded keys at the floor, (4) probabilities, zero there. The
    assertions check the same four arrays the figure draws.

    Claim ID: P2.3c
    Question: At which step is a [PAD] key hidden: the mask, the scores or the softmax?
    问题：[PAD] key 是在哪一步被屏蔽的：mask、scores 还是 softmax？
    中文：沿 mask 的处理路径——二维 mask、层收到的 mask、scores + mask、softmax——[PAD] key 每一步都被屏蔽。
    原因：图中跟踪第 1 行（以 [PAD] 结尾）在第 0 层第 0 个头的处理：(1) 二维输入，(2) 层收到的 mask（可见与否），
    (3) scores + mask，padding 处为最小值，(4) 概率，padding 处为 0。断言检查的正是图中的四个数组。
    """
    batch = padded_batch(bert)
    trace, _ = bert.trace(batch)
    b, t = batch.input_ids.shape
    row = 1
    mask_2d = batch.attention_mask[row].cpu()
    allowed = masks.allowed(trace.all("attention_mask")[0].tensor, b, t)[row]
    masked = trace.tensor(trace.all("scores+mask")[0].name)[row, 0].cpu()
    probs = trace.tensor(trace.all("probs")[0].name)[row, 0].cpu()
    hidden = mask_2d == 0
    evidence.figure("the mask's path (layer 0, head 0, row 1)",
                    mask_path_figure(mask_2d, allowed[0], masked, probs, bert.tokens(batch, row),
                                     f"{bert.attn_implementation}, row {row}: [PAD] at positions {hidden.nonzero().flatten().tolist()}"),
                    derived=trace.all("probs")[0].source == "derived")
    assert bool(hidden.any())
    assert torch.equal(~allowed[0], hidden)
    assert bool((masked[:, hidden] < -1e30).all())
    assert bool((probs[:, hidden] == 0).all()) and bool((probs[:, ~hidden] > 0).all())
