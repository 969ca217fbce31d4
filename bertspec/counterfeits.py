"""Counterfeit BERTs: the model under test with one mechanism broken, for meta-tests.

A claim that stays green on a counterfeit proves nothing about the mechanism
the counterfeit breaks. Each counterfeit is a context manager that yields a
ModelUnderTest and leaves the shared model as it found it: either a deep copy
is changed, or a hook is added and removed again.
"""

import copy
import dataclasses
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from bertspec import masks
from bertspec.loading import ModelUnderTest
from bertspec.report import Evidence


@contextmanager
def untied_decoder(bert: ModelUnderTest, perturbation: float = 0.0):
    """A deep copy whose decoder weight is its own clone of the word-embedding matrix.

    With ``perturbation == 0`` the clone holds the same values, so every forward
    pass is unchanged: only a check of identity (same storage), or of what
    training does to the two matrices, can tell it from the real thing.
    """
    model = copy.deepcopy(bert.model)
    decoder = model.cls.predictions.decoder
    clone = decoder.weight.detach().clone()
    if perturbation:
        noise = torch.randn(clone.shape, generator=torch.Generator().manual_seed(0))
        clone += perturbation * noise.to(clone.device)
    decoder.weight = torch.nn.Parameter(clone)
    yield dataclasses.replace(bert, model=model)


@contextmanager
def head_without_transform(bert: ModelUnderTest):
    """The model under test whose MLM head skips its transform: the decoder gets the encoder output as is.

    The transform's submodules still run (a tracer still sees them), but a
    forward hook hands the transform's input on instead of its output, as a head
    built without the transform would.
    """
    handle = bert.model.cls.predictions.transform.register_forward_hook(lambda module, args, output: args[0])
    try:
        yield bert
    finally:
        handle.remove()


def loss_over_every_position(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The classic bug: -100 clamped to a valid id (0, [PAD]) and every position averaged."""
    return F.cross_entropy(logits.flatten(0, 1), labels.clamp(min=0).flatten())


@contextmanager
def loss_counting_ignored_positions(bert: ModelUnderTest):
    """The model under test whose returned loss counts the positions labelled -100."""

    def hook(module, args, kwargs, output):
        labels = kwargs.get("labels")
        if labels is not None:
            output.loss = loss_over_every_position(output.logits, labels)
        return output

    handle = bert.model.register_forward_hook(hook, with_kwargs=True)
    try:
        yield bert
    finally:
        handle.remove()


class Unread(Evidence):
    """Evidence of a claim run on a counterfeit: nobody reads it, so figures are closed, not drawn."""

    def figure(self, title, fig):
        import matplotlib.pyplot as plt

        plt.close(fig)


def call_claim(claim, **arguments):
    """Call a claim function with those of ``arguments`` that it names (its fixtures and parameters)."""
    names = claim.__code__.co_varnames[: claim.__code__.co_argcount]
    return claim(**{name: arguments[name] for name in names})


def assert_claim_fails(claim, counterfeit: ModelUnderTest, **parameters) -> None:
    """Run a claim on a counterfeit model and require that it goes red (AssertionError)."""
    import pytest

    with pytest.raises(AssertionError):
        call_claim(claim, bert=counterfeit, mlm=counterfeit, evidence=Unread(), **parameters)


@contextmanager
def _embeddings_pre_hook(bert: ModelUnderTest, hook):
    handle = bert.model.bert.embeddings.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield bert
    finally:
        handle.remove()


@contextmanager
def positions_counted_from_one(bert: ModelUnderTest):
    """The model under test with default position ids 1..T instead of 0..T-1, an off-by-one.

    Position ids the caller passes are left alone, as a bug in the default would.
    """

    def hook(module, args, kwargs):
        if kwargs.get("position_ids") is not None:
            return args, kwargs
        input_ids = kwargs["input_ids"]
        return args, {**kwargs, "position_ids": torch.arange(1, input_ids.shape[1] + 1, device=input_ids.device)[None]}

    with _embeddings_pre_hook(bert, hook):
        yield bert


@contextmanager
def token_types_ignored(bert: ModelUnderTest):
    """The model under test giving every token type 0, whatever token_type_ids says."""

    def hook(module, args, kwargs):
        return args, {**kwargs, "token_type_ids": torch.zeros_like(kwargs["input_ids"])}

    with _embeddings_pre_hook(bert, hook):
        yield bert


@contextmanager
def mask_dropped(bert: ModelUnderTest):
    """The model under test whose layers never receive the padding mask, as a bug in mask routing would."""
    with masks.layer_mask_replaced(bert.model, lambda _: None):
        yield bert


@contextmanager
def mask_value(bert: ModelUnderTest, value: float):
    """The model under test whose layers' masks add ``value`` at hidden keys instead of finfo.min.

    -1.0, say, is far too small to hide padding: a [PAD] key keeps e^-1 of its weight.
    """

    def weak(mask):
        if mask is None:
            return None
        hidden = ~mask if mask.dtype == torch.bool else mask < 0
        dtype = mask.dtype if mask.is_floating_point() else torch.get_default_dtype()
        return torch.zeros(hidden.shape, dtype=dtype, device=hidden.device).masked_fill(hidden, value)

    with masks.layer_mask_replaced(bert.model, weak):
        yield bert
