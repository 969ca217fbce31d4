"""Load the model under test from a local folder, or say in one line why not.

The bundled default model and a real checkpoint (e.g. a downloaded
``bert-base-chinese`` folder) take the same path: ``from_pretrained(folder)``.
Nothing here touches the network; callers set the hub offline first.
"""

from dataclasses import dataclass

import torch

from bertspec import DEFAULT_MODEL_DIR, validate
from bertspec.inputs import Batch, encode
from bertspec.trace import trace_forward
from bertspec.validate import CheckpointError, load_tokenizer

ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
HEAD_PREFIX = "cls.predictions."


@dataclass
class ModelUnderTest:
    """One loaded model, with the facts every claim needs about it."""

    model: torch.nn.Module  # BertForMaskedLM, in eval mode
    tokenizer: object
    attn_implementation: str
    device: str
    source: str  # folder path, or "bundled default"
    has_mlm_head: bool  # False: the checkpoint is encoder-only, the head is random

    @property
    def config(self):
        return self.model.config

    @property
    def is_default(self) -> bool:
        return self.source == "bundled default"

    def encode(self, texts, text_pairs=None, padding_side="right") -> Batch:
        """Tokenize, pad (right unless told) and move to the model's device, after the length check."""
        return encode(self.tokenizer, texts, self.config.max_position_embeddings, self.device, text_pairs, padding_side)

    def token(self, token_id) -> str:
        """One id as a token; a checkpoint's vocab_size may exceed its tokenizer's, so some ids have none."""
        return self.tokenizer.convert_ids_to_tokens(int(token_id)) or f"id {int(token_id)}"

    def tokens(self, batch: Batch, row: int = 0) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(batch.input_ids[row].tolist())

    def last_hidden(self, batch: Batch, **extra) -> torch.Tensor:
        return last_hidden_state(self.model, batch, **extra)

    def trace(self, batch: Batch, keep_tensors: bool = True, **extra):
        """(trace, output) of one eval-mode forward pass on ``batch``."""
        return trace_forward(self.model, keep_tensors=keep_tensors, **batch.as_kwargs(), **extra)


def last_hidden_state(model, batch: Batch, **extra) -> torch.Tensor:
    """The encoder's output (B, T, hidden) for one eval-mode pass; ``extra`` overrides batch inputs."""
    with torch.no_grad():
        return model.bert(**{**batch.as_kwargs(), **extra}).last_hidden_state


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("--device cuda: no CUDA GPU is visible to torch on this machine; use --device cpu")


def load(path=None, attn_implementation="eager", device="cpu", tokenizer=None) -> ModelUnderTest:
    """Load BertForMaskedLM from a folder (the bundled default when path is None), after validating the folder.

    Raises CheckpointError, whose one-line message the caller prefixes with the option the user typed.
    """
    from transformers import BertForMaskedLM
    from transformers.utils import logging as hf_logging

    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise CheckpointError(f"attention implementation {attn_implementation!r} is not one of {ATTN_IMPLEMENTATIONS}")
    check_device(device)
    facts = validate.check_folder(path if path is not None else DEFAULT_MODEL_DIR)
    validate.check_against_config(facts)
    folder = facts.folder
    # The load report for an encoder-only checkpoint is expected; we read it from loading_info instead.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = BertForMaskedLM.from_pretrained(
            str(folder), attn_implementation=attn_implementation, output_loading_info=True
        )
    except Exception as err:  # safetensors, pickle and torch all raise their own types
        raise CheckpointError(f"{folder}: the weights do not load ({type(err).__name__}: {validate.first_line(err)}); re-download or re-save the checkpoint") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = set(info["missing_keys"])
    encoder_missing = sorted(k for k in missing if not k.startswith(HEAD_PREFIX))
    if encoder_missing:
        raise CheckpointError(f"{folder}: encoder weights missing ({encoder_missing[0]}, ... {len(encoder_missing)} in all); this is not a BERT checkpoint")
    return ModelUnderTest(
        model=model.to(device).eval(),
        tokenizer=tokenizer if tokenizer is not None else load_tokenizer(folder),
        attn_implementation=attn_implementation,
        device=device,
        source="bundled default" if path is None else str(folder),
        has_mlm_head=not any(k.startswith(HEAD_PREFIX) for k in missing),
    )
