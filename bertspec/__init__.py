"""bertspec: BERT's mechanisms as an executable specification.

The toolkit beside the spec, in five subpackages:

- :mod:`bertspec.models` — model knowledge: where each role lives in each family
  (``anatomy``), where the model under test comes from (``source``), checking
  and loading a checkpoint (``validate``, ``loading``), inputs (``inputs``),
  what differs between transformers versions (``versions``);
- :mod:`bertspec.builders` — the bundled models, the zoo, a random checkpoint;
- :mod:`bertspec.tracing` — recording a forward pass step by step (``trace``),
  probing and replacing the mask (``probe``, ``masks``);
- :mod:`bertspec.proof` — what the claims compare against: a from-scratch
  reference, counterfeit models, tolerances from rounding bounds, snapshots;
- :mod:`bertspec.handbook` — the report a learner reads.

The pytest plugin of the spec is :mod:`bertspec.plugin`; the CLI is ``python -m bertspec``.
"""

from importlib.resources import files
from pathlib import Path

# The repository's fixtures/ folder, installed as the package bertspec.fixtures (see pyproject.toml).
FIXTURES = Path(str(files("bertspec.fixtures")))
