"""Chapter P4.2d — numerical stability: float32, float16 and bfloat16 masks and softmax, why
the dtype's minimum and not -inf, where score + mask overflows, and how closely eager and sdpa
agree in each dtype.

The dtype claims need eager and sdpa side by side: the ``implementations``
fixture loads both, and ``in_dtype`` casts copies of them to float16 and
bfloat16 (never the shared models).
"""

import copy
import math

import pytest
import torch

from bertspec.models import loading
from bertspec.models.inputs import Batch, encode, texts_for
from bertspec.models.loading import last_hidden_state
from bertspec.proof.compare import received_by_key
from bertspec.proof.tolerances import forward_tolerance, half_precision_tolerance, score_peak
from bertspec.tracing import masks, probe
from bertspec.tracing.trace import trace_forward

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@pytest.fixture(scope="module")
def implementations(settings, model_cache) -> dict:
    """The model under test for every chosen attention implementation: comparing eager with sdpa needs both in one test."""
    return {impl: model_cache(impl).model for impl in settings.attn_implementations}


@pytest.fixture(scope="module", params=list(DTYPES))
def in_dtype(request, implementations):
    """(dtype name, {implementation: model}) in float32, float16 or bfloat16: half precision on deep copies only."""
    dtype = DTYPES[request.param]
    if dtype == torch.float32:
        return request.param, implementations
    return request.param, {impl: copy.deepcopy(model).to(dtype) for impl, model in implementations.items()}


def dtype_batch(models, tokenizer) -> Batch:
    model = next(iter(models.values()))
    texts = texts_for(tokenizer)
    return encode(tokenizer, [texts.sentence, texts.short], model.config.max_position_embeddings, model.device)


def test_each_dtype_masks_padding_with_its_own_finfo_min_and_padded_keys_get_exactly_zero(in_dtype, tokenizer, evidence):
    """In float32, float16 and bfloat16 the layer's additive mask is finfo(dtype).min at padded keys, and they get probability exactly 0.

    transformers builds the mask in the model's dtype: -3.4028e38 in float32,
    -65504 in float16, -3.3895e38 in bfloat16 (or a boolean, for 5.x sdpa).
    score + finfo.min is then rounded in that dtype: in float32 and bfloat16
    any score is absorbed, but float16's spacing at 65504 is 32, so a trained
    model's scores (tens, at padded keys too) round the sum to a neighbour of
    finfo.min, or past it to -inf once the score is -16 or less. What must hold
    does hold: on eager, where the sum is observed, it stays within one spacing
    of the exact finfo.min + score (or is -inf where that lies beyond the
    range), and exp of it underflows to exactly 0 next to the row's real keys.
    The probability is checked through what attention outputs (bertspec.tracing.probe,
    values at [PAD] keys shifted by finfo.max / 64), so it holds for the fused
    sdpa kernel too, whose sum is not observable.

    Claim ID: P4.2d
    Question: Does the padding mask still work in float16 and bfloat16?
    问题：在 float16 和 bfloat16 下 padding mask 还有效吗？
    中文：在 float32、float16、bfloat16 中，层的加性 mask 在 padding key 处都是 finfo(dtype).min，padding key 的概率严格为 0。
    原因：transformers 按模型的 dtype 构造 mask：float32 为 -3.4028e38，float16 为 -65504，bfloat16 为 -3.3895e38
    （5.x sdpa 为布尔 mask）。score + finfo.min 随后按该 dtype 舍入：float32 与 bfloat16 中任何分数都被吞掉，但 float16 在 65504 处的
    间距是 32，训练过的模型的分数（padding key 处也有几十）会让和舍入到 finfo.min 的相邻值，分数 ≤ -16 时越过它成为 -inf。真正
    需要成立的确实成立：在能观测到这个和的 eager 上，它与精确的 finfo.min + score 相差不超过一个间距（或在超出范围处为 -inf），
    与该行真实 key 相比 exp 下溢为精确的 0。概率通过 attention 的输出检查（bertspec.tracing.probe，把 [PAD] key 处的 value 平移
    finfo.max / 64），因此对无法观测其加法的 sdpa 融合内核同样成立。
    """
    name, models = in_dtype
    dtype = DTYPES[name]
    batch = dtype_batch(models, tokenizer)
    pad = batch.attention_mask == 0
    floor = torch.finfo(dtype).min
    spacing = -2 * overflow_score(dtype)  # the distance between finfo.min and its neighbour
    rows = []
    for impl, model in models.items():
        trace, _ = trace_forward(model, keep_tensors=True, **batch.as_kwargs())
        received = trace.all("attention_mask")[0].tensor
        moved = probe.value_influence(model, batch.as_kwargs(), pad, shift=torch.finfo(dtype).max / 64)
        observed = trace.all("scores+mask")[0].source == "observed"
        scores, masked = (received_by_key(trace.stack(quantity), pad) for quantity in ("scores", "scores+mask"))
        exact = scores.double() + floor
        off = torch.where(torch.isinf(masked), torch.zeros_like(exact), (masked.double() - exact).abs())
        rows.append((impl, masks.form(received, *pad.shape), floor, scores.abs().max(),
                     (masked == float("-inf")).sum() if observed else "not observed",
                     off.max() / spacing if observed else "not observed", moved.max()))
        assert received is not None and received.dtype in (torch.bool, dtype), impl
        if received.dtype != torch.bool:
            assert set(received.unique().tolist()) == {0.0, floor}, impl
        if observed:
            overflowed = torch.isinf(masked)
            assert bool((off <= spacing).all()), impl
            assert bool((exact[overflowed] <= floor - spacing / 2).all()), f"{impl}: -inf where the sum is in range"
        assert torch.equal(moved, torch.zeros_like(moved)), f"{impl}: a [PAD] key reached an output"
    evidence.table(f"{name}: padded keys (spacing of finfo.min: {spacing:g})",
                   ["implementation", "layer mask", "finfo.min", "largest |score| at [PAD]", "sums that overflowed to -inf",
                    "largest |sum − (finfo.min + score)| in spacings", "max |Δ output|, [PAD] values shifted"], rows)


# Scores as a tiny model makes them, and as trained models do (the zoo's trained-magnitude member reaches 82).
SMALL_SCORES = (1.5, -3.0, 2.0, 0.25)
TRAINED_SCORES = (20.0, -30.0, 5.0, 40.0)
NEGATIVE_SCORES = (-20.0, -30.0, -17.0, -40.0)


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_a_fully_masked_row_is_uniform_under_finfo_min_only_while_the_scores_are_absorbed_and_nan_under_minus_infinity(
        dtype_name, evidence):
    """A fully masked row is uniform under finfo(dtype).min only while finfo.min absorbs its scores — always in float32 and bfloat16, within ±16 in float16 — and NaN under -inf.

    Each entry is score + finfo.min, rounded to the dtype. finfo.min absorbs a
    score (the sum rounds back to finfo.min) while |score| is below half the
    spacing of the dtype's numbers at finfo.min: 2^103 in float32, 2^119 in
    bfloat16, but 16 in float16 (finfo.min = -65504, spacing 32). Then the row
    holds T equal numbers and softmax gives each key 1/T. In float16 a score of
    trained size is not absorbed: scores 20, -30, 5, 40 give sums -65472,
    -inf, -65504, -65472, and the "masked" row puts 1/2 on each of two keys;
    a row whose scores are all -16 or less is all -inf, so NaN. Each sum is
    checked against the exact sum rounded to the nearest number of the dtype
    (IEEE round-to-nearest, past the largest finite number to -inf). With -inf
    as the mask, softmax subtracts the row maximum, -inf - (-inf) = NaN, in
    every dtype.

    Claim ID: P4.2d
    Question: Why does the mask use finfo.min instead of -inf, and is a fully masked row then always uniform?
    问题：mask 为什么用 finfo.min 而不用 -inf？整行被屏蔽时是否总是均匀分布？
    中文：整行被屏蔽时，只有 finfo(dtype).min 吸收了该行的分数才是均匀分布——float32 与 bfloat16 总是如此，float16 只在分数绝对值小于 16 时——用 -inf 则是 NaN。
    原因：每个元素是 score + finfo.min 按 dtype 舍入的结果。|score| 小于 finfo.min 处数值间距的一半时，和舍入回 finfo.min，分数被吸收：
    float32 中是 2^103，bfloat16 中是 2^119，而 float16 中只有 16（finfo.min = -65504，间距 32）。这时该行是 T 个相等的数，softmax 给每个
    key 1/T。在 float16 中，训练后模型大小的分数不会被吸收：分数 20、-30、5、40 得到 -65472、-inf、-65504、-65472，“被屏蔽”的行把
    1/2 分给其中两个 key；分数全都 ≤ -16 的行全是 -inf，于是 NaN。每个和都与精确和按 dtype 就近舍入（IEEE 就近舍入，超过最大有限数则为
    -inf）的结果核对。用 -inf 作 mask 时，softmax 减去行最大值，-inf - (-inf) = NaN，各 dtype 皆然。
    Asked in: huggingface/transformers#31038, huggingface/transformers#31035, huggingface/transformers#31303, huggingface/transformers#35647, pytorch/pytorch#119131, huggingface/optimum#1100
    """
    dtype = DTYPES[dtype_name]
    floor = torch.finfo(dtype).min
    half_spacing = -overflow_score(dtype)
    rows = []
    for label, values in (("small", SMALL_SCORES), ("trained size", TRAINED_SCORES), ("all ≤ -16", NEGATIVE_SCORES)):
        scores = torch.tensor(values, dtype=dtype)
        masked = scores + floor
        # The sum in float64 (exact for float16; for the others its error is far below their spacing), rounded once.
        rounded = (scores.double() + floor).to(dtype)
        probs = torch.softmax(masked, -1)
        absorbed = max(abs(v) for v in values) < half_spacing
        rows.append((label, values, masked.tolist(), probs.tolist(), absorbed))
        assert torch.equal(masked, rounded), label
        if absorbed:
            assert torch.equal(masked, torch.full_like(masked, floor)), label
            assert torch.equal(probs, torch.full_like(probs, 0.25)), label
        else:
            assert not torch.equal(probs, torch.full_like(probs, 0.25)), label
    with_inf = torch.softmax(torch.tensor(SMALL_SCORES, dtype=dtype) + float("-inf"), -1)
    rows.append(("-inf as the mask", SMALL_SCORES, "all -inf", with_inf.tolist(), "—"))
    evidence.table(f"{dtype_name}: finfo.min {floor:g}, absorbs |score| < {half_spacing:g}",
                   ["scores", "values", "scores + finfo.min", "softmax", "absorbed"], rows)
    assert bool(torch.isnan(with_inf).all())
    if dtype == torch.float16:
        assert half_spacing == 16.0
        assert torch.softmax(torch.tensor(TRAINED_SCORES, dtype=dtype) + floor, -1).tolist() == [0.5, 0.0, 0.0, 0.5]
        assert bool(torch.isnan(torch.softmax(torch.tensor(NEGATIVE_SCORES, dtype=dtype) + floor, -1)).all())


def overflow_score(dtype) -> float:
    """The score at which score + finfo.min rounds to -inf: half an ulp of finfo.min (ties go to the even neighbour, infinity)."""
    info = torch.finfo(dtype)
    ulp_at_max = info.eps * 2.0 ** math.floor(math.log2(info.max))
    return -ulp_at_max / 2


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_score_plus_mask_overflows_to_minus_infinity_only_in_float16_at_ordinary_scores(dtype_name, evidence):
    """score + finfo.min overflows to -inf once the score is below minus half an ulp of finfo.min: -16 in float16, out of reach in float32 and bfloat16.

    float16's finfo.min is -65504 with an ulp of 32 there, so a score of -16 or
    less rounds the sum past -65504 to -inf; float32 (ulp 2^104) and bfloat16
    (ulp 2^120) would need scores around -1e31 and -7e35. The overflow is
    harmless while the row keeps a finite key: softmax gives a -inf key exactly
    0, the same as finfo.min would. Only a row of nothing but -inf is NaN (the
    previous claim).

    Claim ID: P4.2d
    Question: Can score + finfo.min overflow to -inf, and in which dtype?
    问题：score + finfo.min 会溢出成 -inf 吗？在哪种 dtype 中？
    中文：当分数低于 finfo.min 处半个 ulp 的负值时，score + finfo.min 溢出为 -inf：float16 中是 -16，float32 与 bfloat16 中遥不可及。
    原因：float16 的 finfo.min 为 -65504，该处 ulp 为 32，分数 ≤ -16 时和会舍入越过 -65504 成为 -inf；float32（ulp 2^104）与
    bfloat16（ulp 2^120）需要约 -1e31 和 -7e35 的分数。只要该行还有有限的 key，溢出无害：softmax 给 -inf 的 key 精确的 0，
    与 finfo.min 相同。只有整行都是 -inf 时才是 NaN（见上一条）。
    """
    dtype = DTYPES[dtype_name]
    floor = torch.tensor(torch.finfo(dtype).min, dtype=dtype)
    threshold = overflow_score(dtype)
    absorbed = floor + torch.tensor(threshold / 2, dtype=dtype)
    overflowed = floor + torch.tensor(threshold, dtype=dtype)
    probs = torch.softmax(torch.stack([torch.tensor(0.0, dtype=dtype), overflowed]), -1)
    evidence.table(dtype_name, ["finfo.min", "overflow at score ≤", "min + score/2", "min + score", "softmax([0, min + score])"],
                   [(floor, threshold, absorbed, overflowed, probs.tolist())])
    assert torch.equal(absorbed, floor)
    assert overflowed.item() == float("-inf")
    assert probs.tolist() == [1.0, 0.0]
    if dtype == torch.float16:
        assert threshold == -16.0


def test_eager_and_sdpa_agree_within_the_tolerance_of_each_dtype(in_dtype, implementations, tokenizer, evidence):
    """Eager and sdpa attention give the same last hidden state within each dtype's tolerance: float32, float16, bfloat16.

    The two implementations compute the same maths with different kernels, so
    they differ by rounding only. In float32 the tolerance is the rounding
    bound of bertspec.proof.tolerances.forward_tolerance: L layers x (2
    (sqrt(head_dim) u32 + 2u) x the largest score + (2 sqrt(hidden) +
    sqrt(intermediate)) u32 + 3u) x max|output|, u = 2^-24. In float16 and
    bfloat16 that worst case is wide enough on scores of tens to pass anything
    (float16 resolves a score of 80 to 0.04, bfloat16 to 0.3), so the bound is
    the triangle through float32 (half_precision_tolerance): both kernels round
    the same intermediates, so each lies about as far from the float32 result
    as eager does, E; their difference is held to (1 + 3) E. Every position is
    compared, padded ones included: no row is fully masked here, so no kernel
    is left undefined.

    Claim ID: P4.2d
    Question: How far apart are eager and sdpa in float32, float16 and bfloat16?
    问题：在 float32、float16、bfloat16 下，eager 与 sdpa 相差多少？
    中文：eager 与 sdpa 的最后隐藏状态在每种 dtype 的容差内一致：float32、float16、bfloat16。
    原因：两种实现用不同内核计算相同的数学，差别只来自舍入。float32 下容差是舍入误差界 bertspec.proof.tolerances.forward_tolerance：
    L 层 ×（2 (sqrt(head_dim) u32 + 2u) × 最大分数 + (2 sqrt(hidden) + sqrt(intermediate)) u32 + 3u）× max|输出|，u = 2^-24。
    float16 与 bfloat16 下这个最坏情况在分数达几十时宽到什么都能通过（float16 把 80 的分数分辨到 0.04，bfloat16 到 0.3），
    所以改用经过 float32 的三角不等式（half_precision_tolerance）：两个内核对同样的中间量做舍入，各自与 float32 结果的距离
    与 eager 的距离 E 相当；两者之差限制在 (1 + 3) E 以内。
    比较所有位置（含 padding）：这里没有整行被屏蔽的情况，没有哪个内核的结果是未定义的。
    """
    name, models = in_dtype
    if set(models) != set(loading.ATTN_IMPLEMENTATIONS):
        pytest.skip("comparing eager with sdpa needs --attn-implementation all")
    batch = dtype_batch(models, tokenizer)
    eager, sdpa = (last_hidden_state(models[impl], batch) for impl in ("eager", "sdpa"))
    peak = score_peak(models["eager"], batch)
    if DTYPES[name] == torch.float32:
        tolerance = forward_tolerance(eager, models["eager"].config, peak)
    else:
        tolerance = half_precision_tolerance(eager, last_hidden_state(implementations["eager"], batch))
    diff, eps = (eager.float() - sdpa.float()).abs().max(), torch.finfo(DTYPES[name]).eps
    evidence.table("eager vs sdpa, last hidden state", ["dtype", "eps", "largest score", "max |diff|", "in eps", "bound (atol)"],
                   [(name, eps, peak, diff, diff / eps, tolerance["atol"])])
    assert eager.dtype == sdpa.dtype == DTYPES[name]
    torch.testing.assert_close(sdpa, eager, **tolerance)
