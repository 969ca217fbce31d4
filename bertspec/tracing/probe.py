"""Attention observed through what it outputs, so that claims hold on fused kernels too.

The sdpa kernel never shows its probabilities; the tracer derives them from the
kernel's inputs. A claim that must rest on what the kernel computes asks the
kernel itself: shift the value vectors at some key positions by a huge amount
and see which queries' attention outputs move. A query's output is Σ_j p_ij v_j,
so it moves by p_ij · shift: exactly not at all when the key's probability is
exactly 0 (0 · shift = 0, and adding 0 changes no bit), and visibly when it is
any positive float32 above ~1e-36 (shift 1e30 against outputs of size ~1).

The attention output read here is the context Σ_j p_ij v_j itself: the input of
the layer's output projection, which is where it is in every family (BERT's
self-attention module returns it; DistilBERT's, ALBERT's and ModernBERT's
project it first). ALBERT runs its one layer num_hidden_layers times, so each
layer is a call of a module: its occurrence.
"""

from contextlib import contextmanager

import torch

from bertspec.models import anatomy
from bertspec.tracing import hooks

SHIFT = 1e30


def _layers(model) -> list[tuple[torch.nn.Module, slice, torch.nn.Module, int]]:
    """Per layer: the Linear that makes its values, which of its output features they are, the output projection
    (whose input is the context), and which call of those modules the layer is."""
    a = anatomy.of_model(model)
    found = []
    for i in range(model.config.num_hidden_layers):
        _, attention = a.locate(model, a.attention(i))  # ALBERT: the shared layer, for every i
        _, projection = a.locate(model, a.in_layer(i, a.attention_output))
        if a.fused_qkv is None:
            values, features = attention.get_submodule(a.value), slice(None)
        else:  # q, k, v side by side: v is the last third
            values = attention.get_submodule(a.fused_qkv)
            width = values.out_features // 3
            features = slice(2 * width, 3 * width)
        found.append((values, features, projection, i if a.shared_layer else 0))
    return found


@contextmanager
def _contexts(layers):
    """Every layer's context (B, T, C), the input of its output projection, in layer order."""
    seen = []

    def hook(module, args, kwargs):
        seen.append(args[0].detach())

    # A shared layer's projection is hooked once and called once per layer.
    with hooks.attached(*(projection for _, _, projection, _ in layers), pre=hook):
        yield seen


def _on_call(occurrence: int, change):
    """A forward hook that applies ``change(output)`` on one call of its module (each forward counts from 0)."""
    calls = []

    def hook(module, args, kwargs, output):
        calls.append(None)
        return change(output) if len(calls) - 1 == occurrence else None
    return hook


def value_influence(model, inputs: dict, keys: torch.Tensor, shift: float = SHIFT) -> torch.Tensor:
    """(L, B, H, T): per layer, sequence, head and query, how far the attention output moves when the values at
    ``keys`` ((B, T) booleans) are shifted by ``shift`` in that layer alone (one forward pass per layer)."""
    layers = _layers(model)
    heads = model.config.num_attention_heads
    with torch.no_grad(), _contexts(layers) as base:
        model(**inputs)
    moved = []
    for i, (values, features, _, occurrence) in enumerate(layers):
        def shifted_values(output):
            shifted = output.clone()
            shifted[..., features] += keys[..., None].to(output.dtype) * shift
            return shifted

        with torch.no_grad(), _contexts(layers) as shifted, \
                hooks.attached(values, post=_on_call(occurrence, shifted_values)):
            model(**inputs)
        b, t, c = base[i].shape
        delta = (shifted[i] - base[i]).abs().view(b, t, heads, c // heads).amax(-1)  # (B, T, H)
        moved.append(delta.permute(0, 2, 1))  # (B, H, T)
    return torch.stack(moved).cpu()


def outputs_with_unit_values(model, inputs: dict) -> torch.Tensor:
    """(L, B, T, C): every layer's context with its value vectors replaced by ones: each entry is a row sum."""
    layers = _layers(model)
    features = {id(values): f for values, f, _, _ in layers}

    def unit_values(module, args, kwargs, output):
        replaced = output.clone()
        replaced[..., features[id(module)]] = 1.0
        return replaced

    # Every call of every value projection, a shared layer's too: attached hooks each module once.
    with torch.no_grad(), hooks.attached(*(values for values, _, _, _ in layers), post=unit_values), \
            _contexts(layers) as contexts:
        model(**inputs)
    return torch.stack(contexts).cpu()
