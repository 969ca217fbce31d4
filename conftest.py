"""Options, shared fixtures and the report hooks of the spec.

The hub is switched off before transformers is imported: the spec only ever
loads local folders (the bundled default model, or ``--bert-model PATH``).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import html  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from bertspec import claims, cost, loading  # noqa: E402
from bertspec.report import STYLE, Evidence, claim_block  # noqa: E402
from bertspec.snapshot import TensorSnapshotExtension  # noqa: E402

SEED = 0
EVIDENCE = pytest.StashKey[Evidence]()
SETTINGS = pytest.StashKey["Settings"]()


@dataclass(frozen=True)
class Settings:
    model_path: str | None  # None: the bundled default model
    attn_implementations: tuple[str, ...]
    device: str

    @property
    def model_label(self) -> str:
        return "bundled default" if self.model_path is None else self.model_path


def pytest_addoption(parser):
    group = parser.getgroup("bertspec")
    group.addoption("--bert-model", metavar="PATH", default=None,
                    help="local BERT checkpoint folder to run every claim on (default: the bundled model)")
    group.addoption("--attn-implementation", choices=("eager", "sdpa", "all"), default="all",
                    help="attention implementation(s) the claims run on (default: all)")
    group.addoption("--device", choices=("cpu", "cuda"), default="cpu", help="device of the model (default: cpu)")


def pytest_configure(config):
    choice = config.getoption("--attn-implementation")
    settings = Settings(
        model_path=config.getoption("--bert-model"),
        attn_implementations=loading.ATTN_IMPLEMENTATIONS if choice == "all" else (choice,),
        device=config.getoption("--device"),
    )
    try:
        loading.check_device(settings.device)
        if settings.model_path is not None:
            loading.check_folder(settings.model_path)
    except loading.CheckpointError as err:
        raise pytest.UsageError(str(err)) from None
    config.stash[SETTINGS] = settings
    torch.manual_seed(SEED)


def pytest_generate_tests(metafunc):
    # Always both ids, so test ids (and snapshot names) do not depend on the option;
    # the `bert` fixture skips the implementations the option left out.
    if "attn_implementation" in metafunc.fixturenames:
        metafunc.parametrize("attn_implementation", loading.ATTN_IMPLEMENTATIONS, scope="session")


@pytest.fixture(scope="session")
def settings(request) -> Settings:
    return request.config.stash[SETTINGS]


@pytest.fixture(scope="session")
def tokenizer(settings):
    return _or_exit(lambda: loading.load_tokenizer(loading.check_folder(settings.model_path or loading.DEFAULT_MODEL_DIR)))


@pytest.fixture(scope="session")
def model_cache(settings, tokenizer):
    """Loads the model under test for an attention implementation, at most once per session."""
    loaded = {}

    def get(attn_implementation: str) -> loading.ModelUnderTest:
        if attn_implementation not in loaded:
            torch.manual_seed(SEED)
            loaded[attn_implementation] = _or_exit(
                lambda: loading.load(settings.model_path, attn_implementation, settings.device, tokenizer))
        return loaded[attn_implementation]

    return get


@pytest.fixture(scope="session")
def bert(settings, model_cache, attn_implementation) -> loading.ModelUnderTest:
    """The model under test, loaded once per attention implementation, in eval mode.

    Default: the bundled Chinese BERT in fixtures/default-model, loaded through
    the same from_pretrained(folder) path as a real checkpoint. Its weights are
    deliberately non-degenerate (query/key init std 0.2, decoder bias at the
    corpus's log unigram prior, 400 MLM steps; bertspec/default_model.py), so
    the mask, the scaling, the decoder bias and the transform visibly matter; a
    claim in spec/test_p1_framework.py checks that.
    """
    if attn_implementation not in settings.attn_implementations:
        pytest.skip(f"{attn_implementation} not chosen by --attn-implementation")
    return model_cache(attn_implementation)


@pytest.fixture
def mlm(bert) -> loading.ModelUnderTest:
    """The model under test, for claims about the MLM head: skipped when the checkpoint has none."""
    if not bert.has_mlm_head:
        pytest.skip(f"{bert.source} has no MLM-head weights (encoder-only checkpoint); head claims need a trained head")
    return bert


@pytest.fixture
def evidence(request) -> Evidence:
    return request.node.stash.setdefault(EVIDENCE, Evidence())


@pytest.fixture
def snapshot(snapshot, settings):
    """syrupy's snapshot, storing tensors as text; only the bundled model has snapshots."""
    if settings.model_path is not None:
        pytest.skip("snapshots record the bundled default model; --bert-model runs every other claim")
    return snapshot.use_extension(TensorSnapshotExtension)


def _or_exit(load):
    try:
        return load()
    except loading.CheckpointError as err:
        pytest.exit(str(err), returncode=4)


# ---- the report: each test's claim, explanation and evidence, expanded ----

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    final = report.when == "call" or (report.when == "setup" and not report.passed)
    if not final or not hasattr(item, "function"):
        return
    from pytest_html import extras

    doc = item.function.__doc__
    try:
        head = claim_block(claims.parse(doc))
        report.claim_id = claims.parse(doc).claim_id
    except claims.ClaimFormatError as err:
        head = f"<p><b>docstring is not a claim: {html.escape(str(err))}</b></p>"
        report.claim_id = ""
    evidence = item.stash.get(EVIDENCE, Evidence())
    report.extras = [*getattr(report, "extras", []), extras.html(STYLE + head + evidence.html())]


def pytest_html_report_title(report):
    report.title = "bertspec: BERT's mechanisms, verified"


def pytest_html_results_summary(prefix, summary, postfix, session):
    import transformers

    s = session.config.stash[SETTINGS]
    facts = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model": s.model_label,
        "attention implementation(s)": ", ".join(s.attn_implementations),
        "device": s.device,
    }
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items())
    prefix.append(f'<table class="evidence">{rows}</table>')


def pytest_html_results_table_header(cells):
    cells.insert(1, '<th class="sortable" data-column-type="claim">Claim ID</th>')


def pytest_html_results_table_html(report, data):
    # A passed claim's evidence is the point; an empty log box is noise.
    if data == ["No log output captured."]:
        data.clear()


def pytest_html_results_table_row(report, cells):
    cells.insert(1, f'<td class="col-claim">{html.escape(getattr(report, "claim_id", ""))}</td>')


# ---- benchmarks (spec/test_p4_cost.py): ratios computed from each run's own timings ----

@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Add every benchmark's ratios to the JSON that --benchmark-json / --benchmark-autosave write."""
    cost.add_ratios(output_json)
