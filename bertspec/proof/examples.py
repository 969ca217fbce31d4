"""The examples several chapters' claims share: their inputs, the answers, and the reference that recomputes them.

The plan's sentence beside a shorter one, right-padded or not (:func:`padded_batch`,
:func:`unpadded_batch`); three sentences with four [MASK] tokens (:func:`masked_batch`)
and the original token at each [MASK] (:func:`answer_labels`); the trace step
that holds sequence_output (:func:`sequence_output_step`); and the from-scratch
reference holding the model's weights, built once per model (:func:`reference_of`).
"""

import weakref

import torch

from bertspec.proof import scope
from bertspec.proof.reference import IGNORE_INDEX, from_model


def padded_batch(bert):
    return bert.example()


def unpadded_batch(bert):
    return bert.example(padded=False)


def masked_batch(bert):
    """Three sentences with four [MASK]s, right-padded, in the language of the checkpoint's vocabulary."""
    return bert.encode(list(bert.texts.masked))


def answer_labels(bert, batch) -> torch.Tensor:
    """(B, T) the original token at every [MASK], -100 everywhere else."""
    filled = bert.encode(list(bert.texts.filled)).input_ids
    assert filled.shape == batch.input_ids.shape, "each [MASK] must stand for exactly one token of the filled text"
    return torch.where(batch.input_ids == bert.tokenizer.mask_token_id, filled, IGNORE_INDEX)


def sequence_output_step(bert) -> str:
    return bert.anatomy.sequence_output_step(bert.config.num_hidden_layers)


_REFERENCES = weakref.WeakKeyDictionary()


def reference_of(bert):
    """The from-scratch reference holding the model's weights, built once per model (~0.5 s at bert-base size)."""
    scope.reference_only_for_bert(bert)
    if bert.model not in _REFERENCES:
        _REFERENCES[bert.model] = from_model(bert.model).eval()
    return _REFERENCES[bert.model]
