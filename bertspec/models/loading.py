"""Load the model under test from a local folder, or say in one line why not.

The bundled default model and a real checkpoint (e.g. a downloaded
``bert-base-chinese`` folder) take the same path: ``from_pretrained(folder)``.
Nothing here touches the network; callers set the hub offline first.
"""

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from bertspec.models import anatomy, generative, source, validate
from bertspec.models.anatomy import Anatomy
from bertspec.models.inputs import Batch, Texts, encode, texts_for
from bertspec.models.source import ATTN_IMPLEMENTATIONS, ModelSource
from bertspec.models.validate import CheckpointError
from bertspec.tracing.trace import trace_forward


@dataclass
class ModelUnderTest:
    """One loaded model, with the facts every claim needs about it."""

    model: torch.nn.Module  # the family's MLM class (BertForMaskedLM, ...), in eval mode
    tokenizer: object
    attn_implementation: str
    device: str
    origin: ModelSource  # where it was loaded from: a user's folder or a bundled model
    has_mlm_head: bool  # False: the checkpoint is encoder-only, the head is random

    @property
    def config(self):
        return self.model.config

    @property
    def folder(self) -> Path:
        return self.origin.folder

    @property
    def source(self) -> str:
        """The folder, or "bundled default" (BERT), "bundled RoBERTa" ... (--family): as skips and the handbook say it."""
        return self.origin.label

    @property
    def bundled(self) -> bool:
        """One of the models bertspec ships: the default BERT, or a family sibling (--family)."""
        return self.origin.bundled

    @property
    def is_default(self) -> bool:
        """The bundled BERT of the default run, whose own facts (a prediction, a magnitude) some claims check."""
        return self.origin.default

    @cached_property
    def anatomy(self) -> Anatomy:
        """Where each role lives in this family's model, and the conventions that differ from BERT."""
        return anatomy.of_model(self.model)

    @property
    def encoder(self) -> torch.nn.Module:
        """The base model inside the MLM class (BertModel, RobertaModel, ...): embeddings and layers."""
        return self.anatomy.encoder(self.model)

    def module(self, path: str) -> torch.nn.Module:
        return self.model.get_submodule(path)

    @property
    def word_embeddings(self) -> torch.nn.Embedding:
        return self.module(self.anatomy.word_embeddings)

    @property
    def decoder(self) -> torch.nn.Linear:
        return self.module(self.anatomy.decoder)

    @property
    def decoder_bias(self) -> torch.nn.Parameter:
        """The head's own bias (cls.predictions.bias in BERT), the Parameter the decoder adds."""
        return self.model.get_parameter(self.anatomy.decoder_bias)

    @cached_property
    def texts(self) -> Texts:
        """The claims' example inputs in the language of this checkpoint's vocabulary."""
        return texts_for(self.tokenizer)

    def example(self, padded: bool = True) -> Batch:
        """The plan's sentence (one [MASK]) in this vocabulary's language, beside a shorter one unless ``padded`` is False.

        Padded, row 1 is the shorter sentence and ends in [PAD] positions.
        """
        return self.encode([self.texts.sentence, self.texts.short] if padded else [self.texts.sentence])

    def encode(self, texts, text_pairs=None, padding_side="right", truncate=False) -> Batch:
        """Tokenize, pad (right unless told) and move to the model's device, after the length check.

        A checkpoint with one token type (type_vocab_size 1) has no row for segment
        B, which the tokenizer marks 1 in a pair; such a model is fed type 0 everywhere,
        as its users must (a P4 claim shows the error transformers gives otherwise).
        """
        batch = encode(self.tokenizer, texts, self.max_positions, self.device, text_pairs, padding_side, truncate)
        if not self.typed or self.config.type_vocab_size == 1:
            return self.batch(batch.input_ids, batch.attention_mask)
        return batch

    @property
    def typed(self) -> bool:
        """Whether the family has token types at all (DistilBERT and ModernBERT have none)."""
        return self.anatomy.token_type_embeddings is not None

    def batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Batch:
        """A batch of given ids for this model: every token real unless a mask is given, token type 0 everywhere."""
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return Batch(input_ids, mask, torch.zeros_like(input_ids), self.typed)

    def traced_values(self, trace, i: int) -> torch.Tensor:
        """Layer i's value vectors (B, T, hidden) as traced: the value projection's output, or a fused one's last third."""
        values = trace.tensor(self.anatomy.projection_step(i, "value"))
        return values.chunk(3, dim=-1)[2] if self.anatomy.fused_qkv else values

    def projected(self, i: int, context: torch.Tensor) -> torch.Tensor:
        """Layer i's attention output projection applied to a context (B, T, hidden): comparable, in every family,
        with the traced step ``anatomy.step(i, anatomy.attention_output)``."""
        a = self.anatomy
        with torch.no_grad():
            return self.module(a.in_layer(i, a.attention_output))(context)

    @property
    def max_positions(self) -> int:
        """How many tokens fit: the position table's rows, less the offset RoBERTa's positions start at."""
        offset = self.config.pad_token_id + 1 if self.anatomy.positions == "learned, after padding_idx" else 0
        return self.config.max_position_embeddings - offset

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
    """The encoder's output (B, T, hidden) for one eval-mode pass; ``extra`` overrides batch inputs (None: left out)."""
    with torch.no_grad():
        return anatomy.of_model(model).encoder(model)(**{**batch.as_kwargs(), **extra}).last_hidden_state


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("cuda: no CUDA GPU is visible to torch on this machine; use --device cpu", "device")


class UnsupportedImplementation(Exception):
    """The installed transformers has no such attention implementation for this family (ELECTRA's sdpa on 4.57)."""


def check_implementation(a: Anatomy, attn_implementation: str) -> None:
    import transformers

    if attn_implementation == "sdpa" and not getattr(getattr(transformers, a.mlm_class), "_supports_sdpa", True):
        raise UnsupportedImplementation(f"transformers {transformers.__version__}'s {a.mlm_class} has no sdpa "
                                        "attention (_supports_sdpa is False); its claims run on eager")


@dataclass
class Loaded:
    """A checkpoint loaded into one transformers class, with what the load reported."""

    model: torch.nn.Module  # in eval mode, on its device
    missing: set[str]  # the class's weights the checkpoint lacks: initialised at random
    unexpected: set[str]  # the checkpoint's weights the class has no place for: dropped
    warnings: list[str]  # what transformers logged at WARNING level, first lines


def load_class(folder, class_name: str, attn_implementation="eager", device="cpu", **overrides) -> Loaded:
    """``from_pretrained(folder, **overrides)`` into a transformers class by name (``overrides``: config values such as
    num_labels or tie_word_embeddings), its load report kept instead of printed.

    4.57 reports missing and unused weights in two log messages, 5.x in one table
    (and, before it, a progress bar); both go to the "transformers" logger, which is
    captured here, while ``output_loading_info`` gives the same keys as data (lists
    on 4.57, sets on 5.x: normalised to sets).
    """
    import logging

    import transformers
    from transformers.utils import logging as hf_logging

    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    root = logging.getLogger("transformers")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    handlers = root.handlers[:]
    root.handlers = [handler]
    try:
        model, info = getattr(transformers, class_name).from_pretrained(
            str(folder), attn_implementation=attn_implementation, output_loading_info=True, **overrides)
    except Exception as err:  # safetensors, pickle and torch all raise their own types
        raise CheckpointError(f"{folder}: the weights do not load ({type(err).__name__}: {validate.first_line(err)}); "
                              "re-download or re-save the checkpoint") from None
    finally:
        root.handlers = handlers
        hf_logging.set_verbosity(verbosity)
    first_lines = [message.replace("\x1b[1m", "").replace("\x1b[0m", "").splitlines()[0] for message in records]
    return Loaded(model.to(device).eval(), set(info["missing_keys"]), set(info["unexpected_keys"]), first_lines)


def load(model: ModelSource | str | Path | None = None, attn_implementation="eager", device="cpu") -> ModelUnderTest:
    """Load the family's MLM class (BertForMaskedLM, ...) from a model source, or a folder (None: the bundled
    default), checked once per process (validate.checked).

    Raises CheckpointError, whose one-line message the caller prefixes with the option the user typed.
    """
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise CheckpointError(f"{attn_implementation}: not one of {', '.join(ATTN_IMPLEMENTATIONS)}", "attn_implementation")
    check_device(device)
    origin = model if isinstance(model, ModelSource) else source.resolve(model)
    facts = validate.checked(origin.folder)
    folder = facts.folder
    a = anatomy.of_model_type(facts.model_type)
    check_implementation(a, attn_implementation)
    loaded = load_class(folder, a.mlm_class, attn_implementation, device)
    encoder_missing = sorted(k for k in loaded.missing if k.startswith(f"{a.base}."))
    if encoder_missing:
        raise CheckpointError(f"{folder}: encoder weights missing ({encoder_missing[0]}, ... {len(encoder_missing)} in all); "
                              f"this is not a complete {a.name} checkpoint; {validate.OFFLINE_ADVICE}")
    return ModelUnderTest(
        model=loaded.model,
        tokenizer=facts.tokenizer,
        attn_implementation=attn_implementation,
        device=device,
        origin=origin,
        has_mlm_head=not any(not k.startswith(f"{a.base}.") for k in loaded.missing),
    )


@dataclass
class GenerativeUnderTest:
    """A bundled decoder or encoder-decoder (chapter P8), loaded in eval mode, with its tokenizer."""

    model: torch.nn.Module  # GPT2LMHeadModel, LlamaForCausalLM or T5ForConditionalGeneration
    tokenizer: object
    attn_implementation: str
    origin: ModelSource

    @property
    def config(self):
        return self.model.config

    @cached_property
    def anatomy(self) -> generative.GenerativeAnatomy:
        return generative.of_model_type(self.config.model_type)

    @property
    def source(self) -> str:
        return self.origin.label

    def encode(self, texts, padding_side: str = "left", **kwargs):
        """Tokenize and pad a batch; on the left unless told, as a decoder that appends to each row needs."""
        self.tokenizer.padding_side = padding_side
        return self.tokenizer(texts, return_tensors="pt", padding=True, **kwargs)


def load_generative(origin: ModelSource, attn_implementation="eager", device="cpu") -> GenerativeUnderTest:
    """Load a bundled decoder or T5 into its language-model class, as from_pretrained reads any folder."""
    import transformers

    a = generative.ARCHITECTURES[origin.family]
    if attn_implementation == "sdpa" and not getattr(getattr(transformers, a.lm_class), "_supports_sdpa", True):
        raise UnsupportedImplementation(f"transformers {transformers.__version__}'s {a.lm_class} has no sdpa "
                                        "attention (_supports_sdpa is False); its claims run on eager")
    loaded = load_class(origin.folder, a.lm_class, attn_implementation, device)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(origin.folder), local_files_only=True)
    return GenerativeUnderTest(loaded.model, tokenizer, attn_implementation, origin)
