"""Attention observed through what it outputs, so that claims hold on fused kernels too.

The sdpa kernel never shows its probabilities; the tracer derives them from the
kernel's inputs. A claim that must rest on what the kernel computes asks the
kernel itself: shift the value vectors at some key positions by a huge amount
and see which queries' attention outputs move. A query's output is Σ_j p_ij v_j,
so it moves by p_ij · shift: exactly not at all when the key's probability is
exactly 0 (0 · shift = 0, and adding 0 changes no bit), and visibly when it is
any positive float32 above ~1e-36 (shift 1e30 against outputs of size ~1).
"""

from contextlib import contextmanager

import torch

from bertspec.trace import is_self_attention

SHIFT = 1e30


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if is_self_attention(m)]


@contextmanager
def _outputs_of(modules):
    seen = [None] * len(modules)

    def hook_for(i):
        def hook(module, args, output):
            seen[i] = (output[0] if isinstance(output, tuple) else output).detach()
        return hook

    handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _values_shifted(module, keys: torch.Tensor, shift: float):
    def hook(linear, args, output):
        return output + keys[..., None].to(output.dtype) * shift

    handle = module.value.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def value_influence(model, inputs: dict, keys: torch.Tensor, shift: float = SHIFT) -> torch.Tensor:
    """(L, B, H, T): per layer, sequence, head and query, how far the attention output moves when the values at
    ``keys`` ((B, T) booleans) are shifted by ``shift`` in that layer alone (one forward pass per layer)."""
    modules = attention_modules(model)
    heads = modules[0].num_attention_heads
    with torch.no_grad(), _outputs_of(modules) as base:
        model(**inputs)
    moved = []
    for i, module in enumerate(modules):
        with torch.no_grad(), _outputs_of(modules) as shifted, _values_shifted(module, keys, shift):
            model(**inputs)
        b, t, c = base[i].shape
        delta = (shifted[i] - base[i]).abs().view(b, t, heads, c // heads).amax(-1)  # (B, T, H)
        moved.append(delta.permute(0, 2, 1))  # (B, H, T)
    return torch.stack(moved).cpu()


def outputs_with_unit_values(model, inputs: dict) -> torch.Tensor:
    """(L, B, T, C): every attention module's output with its value vectors replaced by ones: each entry is a row sum."""
    modules = attention_modules(model)
    handles = [m.value.register_forward_hook(lambda linear, args, output: torch.ones_like(output)) for m in modules]
    try:
        with torch.no_grad(), _outputs_of(modules) as outputs:
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(outputs).cpu()
