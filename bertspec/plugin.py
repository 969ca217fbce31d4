"""The pytest plugin of the spec: options, settings, checks before any test runs, the handbook hooks.

Loaded by ``-p bertspec.plugin`` in pyproject.toml's addopts, before conftest.py. Each hook is a line or
two that hands over to the toolkit: the checkpoint is validated by
:mod:`bertspec.models.validate`, each test's claim and evidence are collected by
:mod:`bertspec.handbook.collect`, benchmark ratios are computed by :mod:`bertspec.proof.cost`.
Nothing here imports torch, so a bad option fails in well under a second.
"""

import os

# The spec only ever loads local folders; no test may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from dataclasses import dataclass  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402

from bertspec.handbook import atomic, collect, render  # noqa: E402
from bertspec.models import source, validate  # noqa: E402
from bertspec.models.source import ARCHITECTURES, ATTN_IMPLEMENTATIONS, DEVICES, ModelSource  # noqa: E402

# How each choice a CheckpointError concerns is spelled on pytest's command line.
OPTIONS = {"model": "--bert-model", "device": "--device", "attn_implementation": "--attn-implementation"}
SETTINGS = pytest.StashKey["Settings"]()
COLLECTOR = pytest.StashKey[collect.Collector]()
SNAPSHOT_RUN = pytest.StashKey["SnapshotRun"]()


@dataclass(frozen=True)
class Settings:
    model_path: str | None  # None: the bundled default model
    attn_implementations: tuple[str, ...]
    device: str
    families: tuple[str, ...] = ()  # --family: each claim runs on these bundled architectures; (): on one model

    def source(self, family: str | None = None) -> ModelSource:
        """The model under test: --bert-model's folder, or the bundled model of the family (--family), or BERT's.
        In the default run a claim's "bert" parameter (across_families) is the bundled BERT every other claim runs on."""
        return source.resolve(self.model_path, None if family == "bert" and not self.families else family)

    def families_of(self, across: bool, beyond_encoders: bool = False) -> tuple[str, ...]:
        """The architectures a claim runs on, one test id each: --family's, for every claim; in the default run every
        bundled architecture, for a claim marked across_families (``across``) and for chapter P8's claims
        (``beyond_encoders``: they take the ``generative`` model); () for one model without a family id (--bert-model's
        checkpoint, where chapter P8's claims skip)."""
        if self.families:
            return self.families
        return ARCHITECTURES if (across or beyond_encoders) and self.model_path is None else ()


def pytest_addoption(parser):
    group = parser.getgroup("bertspec")
    group.addoption("--bert-model", metavar="PATH", default=None,
                    help="local BERT checkpoint folder to run every claim on (default: the bundled model)")
    # No argparse choices: a wrong value gets pytest's usage block; checked in pytest_configure in one line instead.
    group.addoption("--attn-implementation", metavar="|".join((*ATTN_IMPLEMENTATIONS, "all")), default="all",
                    help="attention implementation(s) the claims run on (default: all)")
    group.addoption("--device", metavar="|".join(DEVICES), default="cpu", help="device of the model (default: cpu)")
    group.addoption("--family", metavar="all|" + "|".join(ARCHITECTURES), default=None,
                    help="run every claim on the bundled model of each architecture named (the BERT family, "
                         "decoders, T5; comma-separated, or all); default: the bundled BERT, and chapter P8 on "
                         "the bundled decoders and T5")


def pytest_configure(config):
    for marker in (
        "meta: the spec checking itself (claims fail on counterfeits, docstrings follow the format)",
        "counterfeits(*names): the counterfeit models (bertspec.proof.counterfeits) on which this claim must fail",
        "browser: opens the written report in headless Chromium (select alone with -m browser)",
        "across_families: runs on every bundled family model in the default run too, not only with --family",
        "one_implementation: the answer does not depend on the attention implementation; runs on the first chosen",
        "carries(encoder=, decoder=, encoder_decoder=): the claim's verdict (bertspec.proof.scope) on a kind of "
        "architecture it does not run on",
    ):
        config.addinivalue_line("markers", marker)
    choice = config.getoption("--attn-implementation")
    _check_choice("--attn-implementation", choice, (*ATTN_IMPLEMENTATIONS, "all"))
    _check_choice("--device", config.getoption("--device"), DEVICES)
    settings = Settings(
        model_path=config.getoption("--bert-model"),
        attn_implementations=ATTN_IMPLEMENTATIONS if choice == "all" else (choice,),
        device=config.getoption("--device"),
        families=_families(config.getoption("--family"), config.getoption("--bert-model")),
    )
    config.stash[SETTINGS] = settings
    config.stash[COLLECTOR] = collector = collect.Collector()
    config.pluginmanager.register(collector, "bertspec-handbook")
    config.stash[SNAPSHOT_RUN] = snapshot_run = SnapshotRun()
    config.pluginmanager.register(snapshot_run, "bertspec-snapshot-run")
    if not _is_xdist_worker(config):  # the controller already checked, and a worker cannot stop the session cleanly
        _check_or_stop(settings)


def _families(option: str | None, model_path: str | None) -> tuple[str, ...]:
    if option is None:
        return ()
    if model_path is not None:
        raise pytest.UsageError("--family runs the bundled family models, --bert-model one checkpoint of any family: "
                                "give one of the two")
    if option == "all":
        return ARCHITECTURES
    names = tuple(option.split(","))
    # "all" is a value of its own: inside a list it would name every family twice.
    if not all(name in ARCHITECTURES for name in names) or len(set(names)) != len(names):
        raise pytest.UsageError(f"--family {option}: not a valid value; use all, or one or more of "
                                f"{', '.join(ARCHITECTURES)} separated by commas, each once")
    return names


def _check_choice(option: str, value: str, allowed: tuple) -> None:
    if value not in allowed:
        raise pytest.UsageError(f"{option} {value}: not a valid value; use one of {', '.join(allowed)}")


def _check_or_stop(settings: Settings) -> None:
    """Validate the device and the checkpoint completely; any problem stops the session as a usage error (exit 4)."""
    try:
        if settings.device == "cuda":
            from bertspec.models.loading import check_device

            check_device(settings.device)
        if settings.model_path is not None:
            validate.checked(settings.model_path)
    except validate.CheckpointError as err:
        raise pytest.UsageError(err.line(OPTIONS)) from None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    # pytest-html registers its reporter in its own pytest_configure; by now it is there.
    atomic.report_writes_atomically(session.config, render.compact_run_log)


def _is_xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)  # before -k, -m and --deselect narrow the items
def pytest_collection_modifyitems(items, config):
    from bertspec.proof import teeth

    teeth.add_counterfeit_runs(items, config)


def pytest_generate_tests(metafunc):
    # Always both ids, so test ids (and snapshot names) do not depend on the option;
    # the model fixture skips the implementations the option left out.
    if "attn_implementation" in metafunc.fixturenames:
        # A claim whose answer no attention kernel decides (a task head's loss, freezing, an optimizer's parameter
        # groups) runs on one: the first the run chose.
        one = metafunc.definition.get_closest_marker("one_implementation") is not None
        chosen = metafunc.config.stash[SETTINGS].attn_implementations[:1] if one else ATTN_IMPLEMENTATIONS
        metafunc.parametrize("attn_implementation", chosen, scope="session")
    # With --family every claim, in the default run only those marked across_families: every other test id (and
    # snapshot name) stays as it is; with --bert-model none.
    across = metafunc.definition.get_closest_marker("across_families") is not None
    families = metafunc.config.stash[SETTINGS].families_of(across, "generative" in metafunc.fixturenames)
    if families and "family" in metafunc.fixturenames:
        metafunc.parametrize("family", families, scope="session")


@pytest.hookimpl(tryfirst=True)  # before any fixture: a session-scoped one (the tokenizer) would load the model
def pytest_runtest_setup(item):
    """A claim's run on an architecture it is not written for skips with its verdict (bertspec.proof.scope.carry)."""
    from bertspec.proof import scope

    family = getattr(getattr(item, "callspec", None), "params", {}).get("family")
    if family is not None:
        scope.carry(item, family, beyond_encoders="generative" in item.fixturenames)


# ---- each test's claim and evidence travel in its report; the collector gathers them ----

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    collect.attach(item, call, report)
    collect.demand_evidence(report)
    return report


def _cut_short(exitstatus) -> bool:
    return exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    session.config.stash[COLLECTOR].finish(session, exitstatus)
    if not session.config.stash[SNAPSHOT_RUN].complete(session, exitstatus):
        # A run that left some claims unvisited (interrupted, aborted, --collect-only, -k, -m, -x, --lf) cannot tell
        # an unused snapshot from one whose claim did not run; syrupy (whose hook runs inside this one) must neither
        # add its failure bit to the status nor advise --snapshot-update, which would delete the unvisited ones.
        session.config.option.disable_unused_snapshots = True
    return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo):
    give_line_numbers(excinfo)


def give_line_numbers(excinfo) -> None:
    """Give every traceback entry of an interrupt (and of the exceptions chained to it) a line number.

    Ctrl-C lands wherever the interpreter is; on Python 3.11 that can be an
    instruction without a line number, whose ``tb_lineno`` is None. pytest's
    terminal reporter formats the interrupt with ``tb_lineno - 1`` and then
    crashes with a TypeError instead of exiting 2 (the interrupted-run claim hit
    it twice in some twenty runs here). Such an entry gets its function's first
    line; the others are kept.
    """
    exc = excinfo.value
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _lacks_line(exc.__traceback__):
            exc.__traceback__ = _numbered(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__
    # ExceptionInfo keeps its own (type, value, tb); pytest has no public setter for it.
    if hasattr(excinfo, "_excinfo") and _lacks_line(excinfo.tb):
        excinfo._excinfo = (excinfo.type, excinfo.value, _numbered(excinfo.tb))
        excinfo._traceback = None


def _lacks_line(tb) -> bool:
    while tb is not None:
        if tb.tb_lineno is None:
            return True
        tb = tb.tb_next
    return False


def _numbered(tb):
    from types import TracebackType

    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    rebuilt = None
    for entry in reversed(entries):
        line = entry.tb_lineno if entry.tb_lineno is not None else entry.tb_frame.f_code.co_firstlineno
        rebuilt = TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, line)
    return rebuilt


class SnapshotRun:
    """Whether every collected claim ran, the one case where syrupy can call a snapshot unused.

    The xdist controller decides for the session (a worker runs only its share);
    it sees every item's reports and xdist sets its ``testscollected``.
    """

    def __init__(self):
        self.deselected = 0
        self.started: set[str] = set()

    def pytest_deselected(self, items):
        self.deselected += len(items)

    def pytest_runtest_logreport(self, report):
        if report.when == "setup":
            self.started.add(report.nodeid)

    def complete(self, session, exitstatus) -> bool:
        option = session.config.option
        if _cut_short(exitstatus) or option.collectonly:
            return False
        if _is_xdist_worker(session.config):
            return True  # the controller decides
        narrowed = self.deselected or option.keyword or option.markexpr or option.deselect or getattr(option, "lf", False)
        return not narrowed and len(self.started) == session.testscollected

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        """After syrupy's finish: its summary would warn that unused detection is off; a partial run needs no warning."""
        syrupy = getattr(session.config, "_syrupy", None)
        report = getattr(syrupy, "report", None)
        if report is not None and not self.complete(session, exitstatus):
            syrupy.report = SimpleNamespace(lines=[line for line in report.lines if "snapshot-disable-unused" not in line])


# ---- the handbook: pytest-html writes the page, these hooks fill it ----

def pytest_html_report_title(report):
    report.title = "bertspec — BERT 机制手册 / a handbook of BERT's mechanisms, verified"


def pytest_html_results_summary(prefix, summary, postfix, session):
    config = session.config
    page = render.Page(config.stash[COLLECTOR], config.stash[SETTINGS])
    prefix.append(page.html())
    page.write_json(config.option.htmlpath)


def pytest_html_results_table_header(cells):
    cells.insert(1, render.run_log_header())


def pytest_html_results_table_row(report, cells):
    cells.insert(1, render.run_log_cell(report))


def pytest_html_results_table_html(report, data):
    # The handbook shows each claim's evidence and skip reason; the run log keeps only failures' logs.
    if report.passed or report.skipped:
        data.clear()


# ---- benchmarks (spec/test_p4_2*.py): ratios computed from each run's own timings ----

@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Add every benchmark's ratios to the JSON that --benchmark-json / --benchmark-autosave write."""
    from bertspec.proof import cost

    cost.add_ratios(output_json)
