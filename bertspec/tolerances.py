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
}
