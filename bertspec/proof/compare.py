"""How the claims compare what they observe, shared by the chapters that compare the same way.

Which positions count (:func:`real_tokens`, :func:`padded_keys`); what every
query has at some keys of a quantity stacked over layers by ``Trace.stack``
(:func:`received_by_key`); how far two tensors are apart (:func:`max_diff`)
and whether further than a tolerance allows (:func:`beyond`);
and whether a sampled count is as frequent as its probability says
(:func:`within_binomial_bound`).
"""

import math

import torch

# A binomial count stays within Z_BOUND standard deviations of its mean with probability
# 1 - 5.7e-7 (two-sided normal tail at 5 sigma): a correct sampler fails this once in ~2 million seeds.
Z_BOUND = 5.0


def real_tokens(batch) -> torch.Tensor:
    return batch.attention_mask.bool()


def padded_keys(batch) -> torch.Tensor:
    """(B, T) booleans: True where the key is a [PAD] position."""
    return batch.attention_mask.cpu() == 0


def received_by_key(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """(n, L, H, T): from a stacked (L, B, H, T, T) quantity, what every query has at the keys where ``where`` (B, T) is True."""
    return values.permute(1, 4, 0, 2, 3)[where.cpu()]


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


def beyond(actual, expected, tolerance: dict) -> bool:
    """True when the two differ by more than the tolerance allows somewhere."""
    return not torch.allclose(actual, expected, **tolerance)


def within_binomial_bound(count: int, n: int, p: float) -> tuple[float, float]:
    """(observed fraction, half-width of the Z_BOUND-sigma band around p) for count successes in n trials."""
    return count / n, Z_BOUND * math.sqrt(p * (1 - p) / n)
