"""Train/eval switches that leave the shared model as they found it."""

from contextlib import contextmanager

import torch


@contextmanager
def training(model: torch.nn.Module):
    """Train mode (dropout active) for the block, eval mode again after."""
    model.train()
    try:
        yield model
    finally:
        model.eval()


@contextmanager
def dropout_disabled(model: torch.nn.Module):
    """Every dropout probability set to 0 for the block, restored after.

    Attention dropout does not always live in an nn.Dropout: transformers 4.x's
    sdpa attention keeps its own ``dropout_prob`` float, so both are switched.
    """
    saved = []
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            saved.append((module, "p", module.p))
            module.p = 0.0
        if isinstance(getattr(module, "dropout_prob", None), float):
            saved.append((module, "dropout_prob", module.dropout_prob))
            module.dropout_prob = 0.0
    try:
        yield model
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)
