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

from bertspec.trace import mask_argument, is_self_attention


def allowed(mask: torch.Tensor | None, batch: int, length: int) -> torch.Tensor:
    """(B, T, T) booleans: may query i attend to key j under this layer mask?"""
    if mask is None:
        return torch.ones(batch, length, length, dtype=torch.bool)
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
    dims = ["B" if i == 0 and n == batch else "T" if i >= 2 and n == length else str(n) for i, n in enumerate(mask.shape)]
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


@contextmanager
def layer_mask_replaced(model: torch.nn.Module, replace):
    """While open, every self-attention module receives ``replace(original_mask, hidden_states)`` instead."""

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        new = replace(mask_argument(args, kwargs), hidden)
        if "attention_mask" in kwargs or len(args) < 2:
            return args, {**kwargs, "attention_mask": new}
        return (args[0], new, *args[2:]), kwargs

    handles = [
        m.register_forward_pre_hook(hook, with_kwargs=True) for m in model.modules() if is_self_attention(m)
    ]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


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
