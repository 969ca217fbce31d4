"""The spec's shared fixtures: the model under test, loaded once per attention implementation.

Options, settings, the checks before any test runs and the handbook hooks live in
the plugin (bertspec/plugin.py, loaded by ``-p bertspec.plugin`` in pyproject.toml's
addopts, so that it checks the options before this file is even imported). torch is imported inside the fixtures, not at
the top, so that a bad option or checkpoint is refused before torch loads.
"""

import pytest

from bertspec.handbook.evidence import EVIDENCE, Evidence, Unread
from bertspec.plugin import SETTINGS, Settings
from bertspec.proof import teeth

SEED = 0


@pytest.fixture(scope="session")
def settings(request) -> Settings:
    return request.config.stash[SETTINGS]


@pytest.fixture(scope="session")
def family():
    """The family whose bundled model is under test, when parametrized (--family, or a claim marked across_families in
    the default run); None: the one model of the run."""
    return None


@pytest.fixture(scope="session")
def tokenizer(settings, family):
    from bertspec.models import validate

    return _or_exit(lambda: validate.checked(settings.source(family).folder).tokenizer)


@pytest.fixture(scope="session")
def model_cache(settings):
    """Loads a model under test for (family, attention implementation), at most once per session."""
    import torch

    from bertspec.models import loading

    loaded = {}

    def get(attn_implementation: str, family: str | None = None) -> loading.ModelUnderTest:
        key = (settings.source(family), attn_implementation)  # the default run's "bert" is the bundled BERT: one load
        if key not in loaded:
            torch.manual_seed(SEED)
            loaded[key] = _or_exit(lambda: loading.load(settings.source(family), attn_implementation, settings.device))
        return loaded[key]

    return get


@pytest.fixture
def bert(model_under_test, request):
    """The model under test; on a claim's counterfeit run (bertspec/proof/teeth.py), that counterfeit of it."""
    with teeth.broken(request, model_under_test) as model:
        yield model


@pytest.fixture  # model_cache keeps each model: a session-scoped value would outlive a family parameter it was made for
def model_under_test(settings, model_cache, attn_implementation, family):
    """The model under test, loaded once per attention implementation (and family, with --family), in eval mode.

    Default: the bundled Chinese BERT in fixtures/default-model, loaded through
    the same from_pretrained(folder) path as a real checkpoint. Its weights are
    deliberately non-degenerate (query/key init std 0.2, decoder bias at the
    corpus's log unigram prior, 1200 steps of MLM and NSP; bertspec/builders/default_model.py), so
    the mask, the scaling, the decoder bias and the transform visibly matter; a
    claim in spec/test_p1_1_framework.py checks that. With --family, the bundled
    model of each architecture named, built the same way (fixtures/family/).
    """
    from bertspec.models.loading import UnsupportedImplementation

    if attn_implementation not in settings.attn_implementations:
        pytest.skip(f"{attn_implementation} not chosen by --attn-implementation")
    try:
        return model_cache(attn_implementation, family)
    except UnsupportedImplementation as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def generative_cache(settings):
    """Loads a bundled decoder or T5 for (architecture, attention implementation), at most once per session."""
    import torch

    from bertspec.models import loading, source

    loaded = {}

    def get(attn_implementation: str, family: str) -> loading.GenerativeUnderTest:
        if (family, attn_implementation) not in loaded:
            torch.manual_seed(SEED)
            origin = source.resolve(family=family)
            loaded[family, attn_implementation] = loading.load_generative(origin, attn_implementation, settings.device)
        return loaded[family, attn_implementation]

    return get


@pytest.fixture
def generative(settings, generative_cache, attn_implementation, family, request):
    """Chapter P8's model under test: a bundled decoder (GPT-2, LLaMA) or encoder-decoder (T5), in eval mode, per
    attention implementation; on a claim's counterfeit run, that counterfeit of it (bertspec/proof/teeth.py)."""
    from bertspec.models.loading import UnsupportedImplementation

    if family is None:
        pytest.skip("chapter P8 runs on the bundled decoders and T5 (the default run, or --family); --bert-model "
                    "names one encoder checkpoint, on which P1–P7 run")
    if attn_implementation not in settings.attn_implementations:
        pytest.skip(f"{attn_implementation} not chosen by --attn-implementation")
    try:
        model = generative_cache(attn_implementation, family)
    except UnsupportedImplementation as err:
        pytest.skip(str(err))
    with teeth.broken(request, model) as broken:
        yield broken


@pytest.fixture(scope="session")
def loaded_classes():
    return {}


@pytest.fixture
def as_class(bert, loaded_classes):
    """The checkpoint under test loaded into another class of its family (BertModel, BertForPreTraining, ...), once per
    class and attention implementation, under the spec's seed: weights the checkpoint lacks are initialised the same
    way every run."""
    import torch

    from bertspec.models import loading

    def get(class_name: str, attn_implementation: str = "eager") -> loading.Loaded:
        key = (bert.folder, class_name, attn_implementation)
        if key not in loaded_classes:
            torch.manual_seed(SEED)
            loaded_classes[key] = _or_exit(lambda: loading.load_class(bert.folder, class_name, attn_implementation,
                                                                      bert.device))
        return loaded_classes[key]

    return get


@pytest.fixture
def mlm(bert):
    """The model under test, for claims about the MLM head: skipped when the checkpoint has none."""
    if not bert.has_mlm_head:
        pytest.skip(f"{bert.source} has no MLM-head weights (encoder-only): a head transformers initialises at random "
                    "would test that initialisation, not this checkpoint")
    return bert


@pytest.fixture
def evidence(request) -> Evidence:
    if teeth.counterfeit_of(request.node):  # a claim on a counterfeit: its evidence is not the claim's
        return Unread()
    return request.node.stash.setdefault(EVIDENCE, Evidence())


@pytest.fixture
def snapshot(snapshot, settings):
    """syrupy's snapshot, storing tensors as text; only the bundled model has snapshots."""
    from bertspec.proof.snapshot import TensorSnapshotExtension

    if settings.model_path is not None or settings.families:
        pytest.skip("snapshots record the bundled BERT in the default run; --bert-model and --family run every other claim")
    return snapshot.use_extension(TensorSnapshotExtension)


@pytest.fixture(scope="session")
def broken(tmp_path_factory):
    """The bad-input table's checkpoint folders, each broken in one way (bertspec.proof.bad_input), made once for the
    claims about pytest (spec/test_p1_1_bad_input.py) and about the trace command (spec/test_p1_2_tracer.py)."""
    from bertspec.proof import bad_input

    return bad_input.folders(tmp_path_factory.mktemp("broken"))


@pytest.fixture(scope="session")
def subjects(settings):
    """bert-base-chinese-sized models (or ``--bert-model``), built once for the cost chapters (spec/test_p4_2*.py).

    Building a random model here, instead of using the ``bert`` fixture, is
    deliberate: the claims are about the cost of a forward pass of that size,
    which does not depend on how the weights were made, and the bundled model
    is too small to show it. The weights come from torch.manual_seed(0), the
    same for every attention implementation (bertspec.proof.benchmarks.Subjects,
    each model made on first use). Only benchmarks use this fixture, so the
    plain spec run (benchmarks skipped) never builds a model.
    """
    from bertspec.proof.benchmarks import Subjects

    return Subjects(settings)


def _or_exit(load):
    """The checkpoint was validated before the session; a load that still fails stops it as a usage error."""
    from bertspec.models.validate import CheckpointError
    from bertspec.plugin import OPTIONS

    try:
        return load()
    except CheckpointError as err:
        pytest.exit(err.line(OPTIONS), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def written_report(settings, tmp_path_factory):
    """report.html written by a pytest run of a few claims (bertspec.proof.pages.REPORTED), as a user runs the spec:
    what the claims about the page and the browser claims read."""
    from bertspec.proof import pages

    return pages.write_report(tmp_path_factory.mktemp("handbook"), settings.model_path)


@pytest.fixture(scope="session")
def screenshots(request, tmp_path_factory):
    """Where the browser claims save what they saw: ``screenshots/`` beside the report this run writes (``--html``),
    so that a reader, and CI's artifacts, keep them; a temporary folder when the run writes no report."""
    from pathlib import Path

    html = request.config.getoption("htmlpath", None)
    folder = Path(html).resolve().parent / "screenshots" if html else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
