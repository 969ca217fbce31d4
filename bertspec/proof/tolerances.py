"""Every numeric tolerance of the spec, in one table, each with its reason.

``torch.testing.assert_close(actual, expected, **TOL[name])``.

The constants fit comparisons whose error does not grow with the model (a row
sum, a loss, one sublayer). Two forwards of a whole model by different kernels
are held instead to ``forward_tolerance``: an error bound computed from the
tensors at hand (largest attention score, largest compared value, widths,
layers, dtype), derived in ``layer_error``.
"""

import math

import torch

TOL = {
    # Same kernels, same inputs: IEEE arithmetic is deterministic, any difference is a real one.
    "exact": dict(atol=0.0, rtol=0.0),
    # Same maths through a different float32 kernel (a fused sdpa vs matmul+softmax, another
    # matrix shape so another BLAS blocking) on small activations (a scaled-down layer, one
    # projection): each op rounds differently, errors of a few ulp per op. Whole-model outputs
    # of a checkpoint are held to forward_tolerance instead, which grows with its scores.
    # transformers' own eager-vs-sdpa tests use fp32 atol 1e-6 / rtol 1e-4 per layer.
    "float32_kernels": dict(atol=1e-5, rtol=1e-4),
    # A probability row's sum in float32: T terms each rounded to 2^-24 relative.
    "prob_sum": dict(atol=1e-6, rtol=0.0),
    # (eager vs sdpa on a whole model in float16 / bfloat16: forward_tolerance below, in that dtype.
    # Fixed multiples of eps, fitted to the bundled model, failed on a checkpoint with scores of 80:
    # float16 resolves such a score to 0.04, and softmax turns that into a 4% probability error.)
    # One reference component (an encoder block's sublayer, the MLM head) fed the very tensor
    # transformers' module received. The ops are torch's own except: (a) the score scale, which
    # transformers 5 multiplies by head_dim**-0.5 while the reference divides by sqrt(head_dim)
    # (1 ulp apart unless head_dim is a power of 4, like 16 and 64); (b) the decoder, written
    # h @ W.T + bias instead of one fused addmm (~5e-7 apart at K=768 on some BLAS blockings);
    # (c) sdpa, a fused kernel against matmul-softmax-matmul: measured <= 4.8e-7 on attention
    # outputs of size <= 2 (bundled and bert-base-sized, transformers 4.57 and 5.24).
    "reference_component": dict(atol=1e-6, rtol=1e-6),
    # (attention steps: see attention_component below, which grows with the scores)
    # (the whole reference model against transformers: forward_tolerance below. The fixed atol 1e-5
    # fitted to the bundled model's scores failed at 4.2e-5 on an 8-layer 512-wide checkpoint.)
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


# Unit roundoff u (half an ulp of 1.0) of each dtype: one rounding moves a value by at most u relative.
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
# Every term below is already a worst case (the largest score, the largest output, errors of all
# layers adding up in phase), so no further margin is stacked on it. Measured differences stay at
# 0.002-0.05 of the bound in float32 (bundled, trained-magnitude, protein and bert-base-sized
# checkpoints, eager and sdpa): the bound is loose, and the counterfeits, which move outputs by
# 1e-2 to O(1), stay caught (their counterfeit runs). In half precision it would allow about the size of
# the outputs themselves, so eager vs sdpa there is held to half_precision_tolerance instead.
SAFETY = 1.0


def layer_error(dtype: torch.dtype, score_max: float, head_dim: int, hidden: int, intermediate: int) -> float:
    """Relative error one post-LN encoder layer adds when two kernels round its arithmetic differently.

    Each matmul accumulates in float32 (CPU and GPU kernels for float16 and
    bfloat16 do too) and rounds its result once to the dtype: a dot product of
    length K is off by about sqrt(K) · u32 relative to its size (random-walk
    rounding; K · u32 is the worst case), plus u of the dtype for the final
    rounding. A score of size s is so off by (sqrt(head_dim) · u32 + 2 u) · s
    (the scale multiply is one more rounding); softmax turns an absolute score
    error d into a relative probability error of up to 2d, and the context, a
    probability-weighted mean of values, inherits it: the score term grows with
    the largest score, which is what makes trained checkpoints (scores of tens)
    need more than the bundled one (scores <= 12). The three projections (the
    attention output, the FFN in and out) add sqrt(K) · u32 + u each. LayerNorm
    divides the residual by its own std, so a relative error of the pre-norm
    residual stays a relative error of the output: the layer's relative errors
    simply add.
    """
    u, u32 = UNIT_ROUNDOFF[dtype], UNIT_ROUNDOFF[torch.float32]
    scores = 2 * (math.sqrt(head_dim) * u32 + 2 * u) * score_max
    projections = (2 * math.sqrt(hidden) + math.sqrt(intermediate)) * u32 + 3 * u
    return scores + projections


def forward_tolerance(expected: torch.Tensor, config, score_max: float, dtype: torch.dtype = torch.float32,
                      layers: int | None = None) -> dict:
    """assert_close arguments for one model's output computed two ways (another kernel, shape or batch).

    atol = SAFETY · L · layer_error · max|expected|, rtol 0: the per-layer
    relative errors of ``layer_error`` over L layers (first order: each layer
    passes its input's relative error on and adds its own), taken relative to
    the largest compared value, which LayerNorm's affine step sets. Float32 on
    the bundled model (scores up to 16, outputs about 3): about 1.2e-4; on
    scores of 80: about 5e-4; in float16 and bfloat16 the dtype's own rounding
    (u = 2^13 and 2^16 times u32) dominates through the score term, which makes
    the bound vacuous there at trained-size scores (half_precision_tolerance).
    """
    heads = config.num_attention_heads
    layers = config.num_hidden_layers if layers is None else layers
    # DistilBERT names its FFN width hidden_dim; 4 x hidden is BERT's own ratio.
    intermediate = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", 4 * config.hidden_size)
    per_layer = layer_error(dtype, score_max, config.hidden_size // heads, config.hidden_size, intermediate)
    return dict(atol=SAFETY * layers * per_layer * expected.detach().abs().max().item(), rtol=0.0)


def score_peak(model, batch, **extra) -> float:
    """The largest |q.k/sqrt(d)| of any layer and head of ``model`` on ``batch`` (padded positions included: an upper bound)."""
    from bertspec.tracing.trace import trace_forward

    trace, _ = trace_forward(model, keep_tensors=True, **{**batch.as_kwargs(), **extra})
    return max(step.tensor.float().abs().max().item() for step in trace.all("scores"))


def model_tolerance(bert, batch, expected: torch.Tensor, **extra) -> dict:
    """forward_tolerance for ``bert`` (float32) run on ``batch``, with the scores measured on that batch."""
    return forward_tolerance(expected, bert.config, score_peak(bert.model, batch, **extra))


def generative_score_bound(generative, **inputs) -> float:
    """An upper bound of every |attention score| of a decoder or T5 (chapter P8) on ``inputs``, for forward_tolerance.

    Cauchy–Schwarz, |q·k| <= |q| |k|, with each head's queries and keys read where their projections leave them
    (rotary positions turn pairs of a head's coordinates and keep its norm; GPT-2's one c_attn holds q, k, v in that
    order), times the architecture's score scale, plus the largest relative position bias T5 adds to its scores.
    """
    from bertspec.tracing import hooks

    a, model, config = generative.anatomy, generative.model, generative.config
    head_dim = getattr(config, "d_kv", None) or getattr(config, "head_dim", None) or \
        config.hidden_size // config.num_attention_heads
    largest = {"q": 0.0, "k": 0.0}

    def measure(roles):
        def post(module, args, kwargs, output):
            for role, part in zip(roles, output.chunk(len(roles), dim=-1)):
                if role in largest:
                    largest[role] = max(largest[role], part.unflatten(-1, (-1, head_dim)).norm(dim=-1).max().item())
        return post

    handles = []
    for path, _, _ in a.attention_modules(model):
        names = a.stack_of(path).projections
        for name, roles in zip(names, [("q", "k", "v")] if len(names) == 1 else [("q",), ("k",), ("v",)]):
            handles += hooks.register(model.get_submodule(f"{path}.{name}"), post=measure(roles))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        hooks.remove(handles)
    bias = max((m.weight.abs().max().item() for n, m in model.named_modules() if n.endswith("relative_attention_bias")),
               default=0.0)
    return largest["q"] * largest["k"] * (head_dim ** -0.5 if a.scales_scores else 1.0) + bias


def generative_tolerance(generative, expected: torch.Tensor, **inputs) -> dict:
    """forward_tolerance for a decoder or T5 run on ``inputs``, with generative_score_bound as the largest score and one
    layer's error per attention module (a T5 decoder layer counts twice, for its self- and its cross-attention)."""
    return forward_tolerance(expected, generative.config, generative_score_bound(generative, **inputs),
                             layers=len(generative.anatomy.attention_modules(generative.model)))


def rotary_shift_tolerance(generative, expected: torch.Tensor, angle_max: float, **inputs) -> dict:
    """generative_tolerance, plus what rounding the rotary angles adds when every position of a row moves by one constant.

    In exact arithmetic a rotary score depends on m − n only: R(mθ)q · R(nθ)k = q · R((n − m)θ)k, for any θ. In
    float32 each angle m·θ_i is rounded (by at most u·angle_max, the largest position times θ_0 = 1 rad), and its cos
    and sin by about 2u more, so each rotated query or key moves by up to 2u(angle_max + 3) of its norm (one more u for
    the rotation's own products) and a score by up to 4u(angle_max + 3)·N, N the score bound (generative_score_bound,
    |q||k| times the scale); the two forwards compared each carry that, 8u(angle_max + 3)·N apart. As in layer_error,
    softmax turns an absolute score error d into a relative error of up to 2d, and the layers' errors add.
    """
    score = generative_score_bound(generative, **inputs)
    layers = len(generative.anatomy.attention_modules(generative.model))
    rotary = 16 * UNIT_ROUNDOFF[torch.float32] * (angle_max + 3) * score
    base = forward_tolerance(expected, generative.config, score, layers=layers)
    return dict(atol=base["atol"] + SAFETY * layers * rotary * expected.detach().abs().max().item(), rtol=0.0)


# A second kernel in a half dtype may land up to this many times as far from float32 as eager does: both round the
# same intermediates to the dtype (a fused kernel keeps some sums wider, never narrower), so 3x is already generous.
SECOND_KERNEL_SPREAD = 3


def half_precision_tolerance(eager_half: torch.Tensor, eager_float32: torch.Tensor) -> dict:
    """Eager against another kernel, both in float16 or bfloat16: the triangle through the float32 result.

    |eager - other| <= |eager - f32| + |other - f32| <= (1 + SECOND_KERNEL_SPREAD) E, with E eager's own largest
    distance from float32 on these inputs: the dtype's rounding as this checkpoint's scores and values feel it,
    measured, not assumed. The worst-case bound of forward_tolerance is about 100x wider here (rounding errors
    of opposite signs do not all line up), wide enough on scores of tens to pass any output: a mask dropped by one
    kernel moves its outputs by O(1), beyond this bound, while eager's own distance from float32 does not move.
    """
    distance = (eager_half.float() - eager_float32.float()).abs().max().item()
    return dict(atol=(1 + SECOND_KERNEL_SPREAD) * distance, rtol=0.0)
