"""The spec's shared fixtures: the model under test, loaded once per attention implementation.

Options, settings, the checks before any test runs and the handbook hooks live in
the plugin (bertspec/plugin.py, loaded by ``-p bertspec.plugin`` in pyproject.toml's
addopts, so that it checks the options before this file is even imported). torch is imported inside the fixtures, not at
the top, so that a bad option or checkpoint is refused before torch loads.
"""

import pytest

from bertspec.evidence import EVIDENCE, Evidence
from bertspec.plugin import SETTINGS, Settings

SEED = 0


@pytest.fixture(scope="session")
def settings(request) -> Settings:
    return request.config.stash[SETTINGS]


@pytest.fixture(scope="session")
def tokenizer(settings):
    from bertspec import DEFAULT_MODEL_DIR, validate

    return _or_exit(lambda: validate.load_tokenizer(settings.model_path or DEFAULT_MODEL_DIR))


@pytest.fixture(scope="session")
def model_cache(settings, tokenizer):
    """Loads the model under test for an attention implementation, at most once per session."""
    import torch

    from bertspec import loading

    loaded = {}

    def get(attn_implementation: str) -> loading.ModelUnderTest:
        if attn_implementation not in loaded:
            torch.manual_seed(SEED)
            loaded[attn_implementation] = _or_exit(
                lambda: loading.load(settings.model_path, attn_implementation, settings.device, tokenizer))
        return loaded[attn_implementation]

    return get


@pytest.fixture(scope="session")
def bert(settings, model_cache, attn_implementation):
    """The model under test, loaded once per attention implementation, in eval mode.

    Default: the bundled Chinese BERT in fixtures/default-model, loaded through
    the same from_pretrained(folder) path as a real checkpoint. Its weights are
    deliberately non-degenerate (query/key init std 0.2, decoder bias at the
    corpus's log unigram prior, 1200 steps of MLM and NSP; bertspec/default_model.py), so
    the mask, the scaling, the decoder bias and the transform visibly matter; a
    claim in spec/test_p1_framework.py checks that.
    """
    if attn_implementation not in settings.attn_implementations:
        pytest.skip(f"{attn_implementation} not chosen by --attn-implementation")
    return model_cache(attn_implementation)


@pytest.fixture(scope="session")
def as_class(settings):
    """The checkpoint under test loaded into another BERT class (BertModel, BertForPreTraining, ...), once per class and
    attention implementation, under the spec's seed: weights the checkpoint lacks are initialised the same way every run."""
    import torch

    from bertspec import DEFAULT_MODEL_DIR, loading

    loaded = {}

    def get(class_name: str, attn_implementation: str = "eager") -> loading.Loaded:
        key = (class_name, attn_implementation)
        if key not in loaded:
            torch.manual_seed(SEED)
            loaded[key] = _or_exit(lambda: loading.load_class(settings.model_path or DEFAULT_MODEL_DIR, class_name,
                                                              attn_implementation, settings.device))
        return loaded[key]

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
    return request.node.stash.setdefault(EVIDENCE, Evidence())


@pytest.fixture
def snapshot(snapshot, settings):
    """syrupy's snapshot, storing tensors as text; only the bundled model has snapshots."""
    from bertspec.snapshot import TensorSnapshotExtension

    if settings.model_path is not None:
        pytest.skip("snapshots record the bundled default model; --bert-model runs every other claim")
    return snapshot.use_extension(TensorSnapshotExtension)


def _or_exit(load):
    """The checkpoint was validated before the session; a load that still fails stops it as a usage error."""
    from bertspec.validate import CheckpointError

    try:
        return load()
    except CheckpointError as err:
        pytest.exit(f"--bert-model {err}", returncode=pytest.ExitCode.USAGE_ERROR)
