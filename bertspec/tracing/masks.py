"""The attention mask in each of its forms, and a way to swap the one a layer receives.

transformers hands a self-attention module one of three forms, depending on
version and attention implementation: ``None`` (no padding, mask skipped), a
boolean tensor (True = may attend), or an additive float tensor (0 = may attend,
``finfo(dtype).min`` = padded). :func:`allowed` turns any of them into one
boolean answer to "may query i attend to key j?", so claims can compare forms.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from bertspec.models import anatomy
from bertspec.tracing import hooks
from bertspec.proof.reference import additive_mask


def allowed(mask: torch.Tensor | None, batch: int, length: int) -> torch.Tensor:
    """(B, T, T) booleans: may query i attend to key j under this layer mask?"""
    if mask is None:
        return torch.ones(batch, length, length, dtype=torch.bool)
    if mask.dim() == 2:  # the user's [B, T] mask, which a module that hides keys itself receives: 1 = may attend
        return (mask != 0).cpu()[:, None, :].expand(batch, length, length)
    keep = mask if mask.dtype == torch.bool else mask == 0
    return keep.cpu().expand(batch, 1, length, length)[:, 0]


@dataclass(frozen=True)
class MaskForm:
    """What a layer received, in words a reader can compare across versions."""

    kind: str  # "None", "bool", "float" or "int"
    shape: str  # symbolic, e.g. "[B, 1, 1, T]"
    values: str  # the distinct values, e.g. "{-0.0}" or "{0.0, finfo.min}"

    def __str__(self):
        return "None" if self.kind == "None" else f"{self.kind} {self.shape} {self.values}"


def form(mask: torch.Tensor | None, batch: int, length: int) -> MaskForm:
    if mask is None:
        return MaskForm("None", "", "")
    last = mask.dim() - 1
    dims = ["B" if i == 0 and n == batch else "T" if (i >= 2 or i == last) and n == length else str(n)
            for i, n in enumerate(mask.shape)]
    shape = "[" + ", ".join(dims) + "]"
    return MaskForm(_kind(mask), shape, "{" + ", ".join(_value_names(mask)) + "}")


def _kind(mask) -> str:
    return "bool" if mask.dtype == torch.bool else "float" if mask.is_floating_point() else "int"


def _value_names(mask) -> list[str]:
    if not mask.is_floating_point():
        return [str(v) for v in sorted(mask.unique().tolist())]
    finfo_min = torch.finfo(mask.dtype).min
    names = set()
    for v in mask.unique().tolist():  # unique() merges -0.0 and 0.0: look at sign bits separately
        if v == 0:
            negative = torch.signbit(mask[mask == 0])
            names.update({"-0.0"} if negative.all() else {"0.0"} if not negative.any() else {"-0.0", "0.0"})
        else:
            names.add("finfo.min" if v == finfo_min else f"{v:.4g}")
    return sorted(names, key=lambda n: (n != "-0.0", n != "0.0", n))


def padding_only(mask: torch.Tensor | None, hidden: torch.Tensor) -> torch.Tensor:
    """A causal layer mask without its triangle: every query sees the keys its last query sees (all but padding), in
    the mask's own form; for None, a boolean that hides nothing, so that no causal flag is passed on either."""
    if mask is None:
        b, t = hidden.shape[:2]
        return torch.ones(b, 1, t, t, dtype=torch.bool, device=hidden.device)
    return mask[..., -1:, :].expand_as(mask).clone()


@contextmanager
def layer_mask_replaced(model: torch.nn.Module, replace, only=None):
    """While open, every self-attention module (or those in ``only``) receives ``replace(original_mask,
    hidden_states)`` instead, where its mask route (bertspec.models.anatomy) says the mask arrives."""
    a = anatomy.of_model(model)
    route = a.route_in(model)

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states", kwargs.get("query"))
        original = route.mask(module, args, kwargs)
        if route.hides_keys_itself and original is not None:
            new = as_0_1(replace(additive_mask(original, hidden.dtype), hidden), original)
        else:
            new = replace(original, hidden)
            if new is None and original is not None:  # ModernBERT's 4.57 attention adds its mask unconditionally
                new = torch.ones_like(original) if original.dtype == torch.bool else torch.zeros_like(original)
        key = route.key(module, args, kwargs)
        if isinstance(key, int):
            return (*args[:key], new, *args[key + 1:]), kwargs
        return args, {**kwargs, key or "attention_mask": new}

    modules = only if only is not None else [m for _, m in a.self_attention_modules(model)]
    with hooks.attached(*modules, pre=hook):
        yield model


def as_0_1(new: torch.Tensor | None, original: torch.Tensor) -> torch.Tensor:
    """A replacement layer mask back in the 2D 0/1 form a module that hides keys itself takes (None: all keys)."""
    if new is None:
        return torch.ones_like(original)
    keep = new if new.dtype == torch.bool else new == 0
    if not new.dtype == torch.bool and not bool(((new == 0) | (new == torch.finfo(new.dtype).min)).all()):
        raise ValueError("a module that takes a 0/1 mask hides keys with finfo.min itself: no other value can reach it")
    b, t = original.shape
    keys = keep.expand(b, 1, t, t)
    if not bool((keys == keys[:, :, :1]).all()):
        raise ValueError("a module that takes a 0/1 mask hides the same keys from every query: no per-query mask")
    return keys[:, 0, 0].to(original.dtype)


def packed_mask(lengths: list[int], dtype: torch.dtype, major: int) -> torch.Tensor:
    """A block-diagonal mask for sentences of ``lengths`` packed into one row, in the form transformers ``major`` takes.

    5.x hands a 4D mask to attention as it is: [1, 1, T, T], additive, in the
    model's dtype (a boolean one would be *added* by eager attention). 4.x
    refuses 4D masks but converts a 3D [1, T, T] 0/1 mask like a 2D one.
    """
    t = sum(lengths)
    keep = torch.zeros(t, t, dtype=torch.bool)
    start = 0
    for n in lengths:
        keep[start:start + n, start:start + n] = True
        start += n
    if major >= 5:
        return torch.zeros(1, 1, t, t, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)
    return keep[None].long()
