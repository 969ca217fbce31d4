"""Every numeric tolerance of the spec, in one table, each with its reason.

``torch.testing.assert_close(actual, expected, **TOL[name])``.
"""

TOL = {
    # Same kernels, same inputs: IEEE arithmetic is deterministic, any difference is a real one.
    "exact": dict(atol=0.0, rtol=0.0),
    # Same maths through a different float32 kernel (a fused sdpa vs matmul+softmax, another
    # matrix shape so another BLAS blocking): each op rounds differently, errors of a few ulp
    # per op accumulate over the layers. transformers' own eager-vs-sdpa tests use fp32
    # atol 1e-6 / rtol 1e-4 per layer; a whole model stacks several layers, so atol 1e-5.
    "float32_kernels": dict(atol=1e-5, rtol=1e-4),
    # A probability row's sum in float32: T terms each rounded to 2^-24 relative.
    "prob_sum": dict(atol=1e-6, rtol=0.0),
    # Eager vs sdpa on a whole model cast to float16 / bfloat16, last hidden state. Both
    # kernels round every intermediate to the dtype, but at different points (a fused
    # kernel keeps some sums wider); LayerNorm keeps hidden values near 1, so the error is
    # a number of ulps of 1.0 (eps: 2^-10 in float16, 2^-7 in bfloat16) that grows layer
    # by layer. transformers' own tests allow about 5 eps (fp16 5e-3, bf16 1e-2) on one or
    # two layers; measured here: 4 eps on the bundled 3-layer model and 8 eps on a
    # 12-layer bert-base-sized one, so 16 eps. A real bug (a mask not applied) moves
    # outputs by O(1), far beyond.
    "eager_vs_sdpa_float16": dict(atol=16 * 2**-10, rtol=16 * 2**-10),
    "eager_vs_sdpa_bfloat16": dict(atol=16 * 2**-7, rtol=16 * 2**-7),
    # One reference component (an encoder block's sublayer, the MLM head) fed the very tensor
    # transformers' module received. The ops are torch's own except: (a) the score scale, which
    # transformers 5 multiplies by head_dim**-0.5 while the reference divides by sqrt(head_dim)
    # (1 ulp apart unless head_dim is a power of 4, like 16 and 64); (b) the decoder, written
    # h @ W.T + bias instead of one fused addmm (~5e-7 apart at K=768 on some BLAS blockings);
    # (c) sdpa, a fused kernel against matmul-softmax-matmul: measured <= 4.8e-7 on attention
    # outputs of size <= 2 (bundled and bert-base-sized, transformers 4.57 and 5.24).
    "reference_component": dict(atol=1e-6, rtol=1e-6),
    # (attention steps: see attention_component below, which grows with the scores)
    # The whole reference model against transformers: the component differences above carried
    # through every layer. Measured: bit-equal on eager; on sdpa max |diff| 1.3e-6 (bundled,
    # 3 layers) and 2.3e-6 (bert-base-sized, 12 layers) on logits. TransformerLens holds whole
    # models to rtol 1.3e-6 / atol 4e-5; 1e-5 keeps a 4x margin over what was measured.
    "reference_model": dict(atol=1e-5, rtol=1.3e-6),
    # LayerNorm written out in float64, (x - mean) / sqrt(biased var + eps) * weight + bias,
    # against torch's float32 kernel: the kernel's output is rounded to 2^-24 relative and its
    # mean and variance carry float32 reduction error, a few ulp of outputs of size <= 10.
    # A wrong eps (1e-5 instead of 1e-12) or the unbiased variance would be off by >= 1e-4.
    "layernorm_by_hand": dict(atol=2e-6, rtol=1e-6),
    # d loss / d logits written out, (softmax - one_hot) / n, against autograd's, which gets
    # the probabilities as exp(log_softmax): the largest term, p - 1, differs by at most one
    # ulp of 1.0 (2^-23), and dividing by n only shrinks it.
    "softmax_gradient": dict(atol=2.0**-23, rtol=0.0),
    # The same cross entropy reduced another way: a mean of n float32 terms summed in another
    # order, or log-softmax run over a differently shaped tensor (another vectorisation):
    # relative error <= n * 2^-24, n <= 64 labelled positions in this spec. Measured: 1 ulp.
    "loss_reduction": dict(atol=0.0, rtol=4e-6),
}


def kernel_tolerance(attn_implementation: str) -> dict:
    """Two forwards of one model on inputs that must agree: eager adds and multiplies in the same order whatever
    the input (exact); sdpa may pick another kernel for another mask or shape (float32_kernels)."""
    return TOL["exact"] if attn_implementation == "eager" else TOL["float32_kernels"]


def attention_component(score_max: float, value_max: float = 1.0) -> dict:
    """The reference's attention probabilities (value_max 1) or context against transformers', for scores up to score_max.

    A score computed another way (the fused kernel's summation order, a scale
    multiplied by head_dim**-0.5 instead of divided by sqrt(head_dim)) is off by
    a few ulps of itself, |score| · 2^-23 each. softmax turns an absolute score
    error d into a relative probability error of about d, and a context is a
    probability-weighted sum of values, so the error bound grows with |score| ·
    |value|: 4 ulps of the largest score times the largest value. On the bundled
    model (scores <= 12) this stays at reference_component's 1e-6; on checkpoints
    with trained-size scores (±50) it is a few e-6. Measured: at most 0.52 of it.
    """
    return dict(atol=max(TOL["reference_component"]["atol"], 4 * 2**-23 * score_max * value_max),
                rtol=TOL["reference_component"]["rtol"])
