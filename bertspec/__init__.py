"""bertspec: BERT's mechanisms as an executable specification.

The toolkit beside the spec: load a model under test (:mod:`bertspec.loading`),
encode inputs with a length check (:mod:`bertspec.inputs`), record a forward pass
step by step (:mod:`bertspec.trace`), recompute it from scratch
(:mod:`bertspec.reference`), and turn evidence into report HTML and figures
(:mod:`bertspec.report`, :mod:`bertspec.figures`).
"""

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "default-model"
