"""bertspec: BERT's mechanisms as an executable specification.

The toolkit beside the spec: load a model under test (:mod:`bertspec.models.loading`),
encode inputs with a length check (:mod:`bertspec.models.inputs`), record a forward pass
step by step (:mod:`bertspec.tracing.trace`), recompute it from scratch
(:mod:`bertspec.proof.reference`), probe attention through its outputs
(:mod:`bertspec.tracing.probe`), and write the handbook (:mod:`bertspec.handbook.evidence`,
:mod:`bertspec.handbook.figures`, :mod:`bertspec.handbook.page`, :mod:`bertspec.handbook.knowledge`).
The pytest plugin of the spec is :mod:`bertspec.plugin`.
"""

from importlib.resources import files
from pathlib import Path

# The repository's fixtures/ folder, installed as the package bertspec.fixtures (see pyproject.toml).
FIXTURES = Path(str(files("bertspec.fixtures")))
DEFAULT_MODEL_DIR = FIXTURES / "default-model"
# The bundled model's siblings in the other BERT-family architectures, built the same way (bertspec/builders/default_model.py).
FAMILY_MODEL_DIRS = {name: FIXTURES / "family" / name
                     for name in ("roberta", "distilbert", "albert", "electra", "modernbert")}


def bundled_model_dir(family: str = "bert") -> Path:
    """The bundled model of a family: fixtures/default-model for BERT, fixtures/family/<family> for the others."""
    return DEFAULT_MODEL_DIR if family == "bert" else FAMILY_MODEL_DIRS[family]
