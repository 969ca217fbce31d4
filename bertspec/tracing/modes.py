"""Train/eval switches that leave the shared model as they found it."""

from contextlib import contextmanager

import torch

# Attention dropout some attention modules keep as a float, handed to sdpa as dropout_p.
FLOAT_DROPOUTS = ("dropout_prob", "attention_dropout")


@contextmanager
def training(model: torch.nn.Module):
    """Train mode (dropout active) for the block, eval mode again after."""
    model.train()
    try:
        yield model
    finally:
        model.eval()


def dropout_probabilities(model: torch.nn.Module) -> set[float]:
    """Every dropout probability the model applies in train mode, read from its modules.

    Families name them differently in their configs (BERT's hidden_dropout_prob and
    attention_probs_dropout_prob, DistilBERT's dropout and attention_dropout,
    ModernBERT's embedding, attention and mlp dropout), so the modules are read.
    """
    found = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            found.add(module.p)
        for attr in FLOAT_DROPOUTS:
            if isinstance(getattr(module, attr, None), float):
                found.add(getattr(module, attr))
    return found


@contextmanager
def dropout_disabled(model: torch.nn.Module):
    """Every dropout probability set to 0 for the block, restored after.

    Attention dropout does not always live in an nn.Dropout: transformers 4.x's
    sdpa attention keeps its own ``dropout_prob`` float (ModernBERT an
    ``attention_dropout`` one), so both kinds are switched.
    """
    saved = []
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            saved.append((module, "p", module.p))
            module.p = 0.0
        for attr in FLOAT_DROPOUTS:
            if isinstance(getattr(module, attr, None), float):
                saved.append((module, attr, getattr(module, attr)))
                setattr(module, attr, 0.0)
    try:
        yield model
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)
