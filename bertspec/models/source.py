"""Where the model under test comes from, and the values each choice about it takes — decided here once.

The pytest options, the CLI, the loader and the builders all ask this module:
which families there are (the anatomy's list), which attention implementations
and devices a run may take, and which folder a run's model is in — the folder a
user named, or a bundled model (BERT's by default, a sibling with ``--family``).
Nothing here imports torch, so a bad option is refused before torch loads.
"""

from dataclasses import dataclass
from pathlib import Path

from bertspec import FIXTURES
from bertspec.models import anatomy, generative

FAMILIES = tuple(anatomy.FAMILIES)  # the BERT family's encoders, "bert" first: the default run's family
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
DEVICES = ("cpu", "cuda")

DEFAULT_MODEL_DIR = FIXTURES / "default-model"
# The bundled model's siblings in the other architectures, built the same way (bertspec/builders/default_model.py).
FAMILY_MODEL_DIRS = {family: FIXTURES / "family" / family for family in FAMILIES if family != "bert"}
# Chapter P8's decoders and encoder-decoder, bundled beside them (bertspec/builders/beyond_encoders.py).
DECODERS = tuple(a.family for a in generative.ARCHITECTURES.values() if a.kind == generative.DECODER)
ENCODER_DECODERS = tuple(a.family for a in generative.ARCHITECTURES.values() if a.kind == generative.ENCODER_DECODER)
BEYOND_ENCODERS = (*DECODERS, *ENCODER_DECODERS)
BEYOND_ENCODER_DIRS = {name: FIXTURES / "family" / name for name in BEYOND_ENCODERS}
# Every architecture with a bundled model: --family's values, the columns of the handbook's table.
ARCHITECTURES = (*FAMILIES, *BEYOND_ENCODERS)
ENCODER = "encoder"


def kind_of(family: str) -> str:
    """encoder, decoder or encoder-decoder."""
    return generative.ARCHITECTURES[family].kind if family in generative.ARCHITECTURES else ENCODER


def name_of(family: str) -> str:
    """The architecture's name as people write it: BERT, RoBERTa, ..., GPT-2, LLaMA, T5."""
    return {**anatomy.FAMILIES, **generative.ARCHITECTURES}[family].name


def bundled_model_dir(family: str = "bert") -> Path:
    """The bundled model of a family: fixtures/default-model for BERT, fixtures/family/<family> for the others."""
    return DEFAULT_MODEL_DIR if family == "bert" else {**FAMILY_MODEL_DIRS, **BEYOND_ENCODER_DIRS}[family]


@dataclass(frozen=True)
class ModelSource:
    """One model under test: its folder, and whether bertspec ships it."""

    folder: Path
    family: str | None = None  # the bundled family model (--family); None: a folder the user named, or the default
    default: bool = False  # the bundled BERT of the default run, whose own facts (a prediction, a size) claims check

    @property
    def bundled(self) -> bool:
        return self.default or self.family is not None

    @property
    def label(self) -> str:
        """How the handbook and the skips name it: "bundled default", "bundled RoBERTa", or the folder."""
        if self.default:
            return "bundled default"
        return f"bundled {name_of(self.family)}" if self.family else str(self.folder)


def resolve(model_path=None, family: str | None = None) -> ModelSource:
    """The source of a run's model: the folder given (--bert-model, --model), else the family's bundled model
    (--family), else the bundled BERT."""
    if model_path is not None:
        return ModelSource(Path(model_path).expanduser())
    if family is not None:
        return ModelSource(bundled_model_dir(family), family=family)
    return ModelSource(DEFAULT_MODEL_DIR, default=True)
