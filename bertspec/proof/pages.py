"""Reading a written handbook page back, for the claims about the page (spec/test_p5_*.py).

:func:`write_report` writes report.html as a user does, with a pytest run of a
few claims in a subprocess; :func:`every_claim_page` renders the page of every claim from the docstrings;
:func:`sections` and :func:`text_of` read its HTML.
"""

import html
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "spec"
# A few claims whose report shows every kind of evidence: tables, a figure, the attention view, the card.
REPORTED = [
    "spec/test_p2_3_mask_arithmetic.py::test_padded_keys_get_exactly_zero_attention_probability",
    "spec/test_p2_3_mask_arithmetic.py::test_a_padded_key_stays_masked_along_the_whole_path_to_its_probability",
    "spec/test_p5_1_handbook.py::test_the_interactive_attention_view_holds_exactly_the_probabilities_the_model_computed",
    "spec/test_p5_2_toolkit.py::test_the_quick_reference_card_is_read_off_the_model_under_test",
]
MAX_REPORT_BYTES = 2 * 2**20


def write_report(folder: Path, model_path: str | None) -> Path:
    """report.html written by a pytest run of the REPORTED claims, as a user runs the spec."""
    model = ["--bert-model", model_path] if model_path else []
    run = subprocess.run([sys.executable, "-m", "pytest", *REPORTED, f"--html={folder / 'report.html'}", "-q",
                          "-p", "no:cacheprovider", "-p", "no:randomly", *model],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return folder / "report.html"


def every_claim_page(settings):
    """The handbook of every claim in spec/, each a passed run made from its docstring (nothing runs, so a -k
    selection hides none): the page as a whole run shows it, for the claims about the page."""
    from bertspec.handbook import claims, collect, render

    collector = collect.Collector()
    for claim in claims.discover(SPEC).values():
        collector.add(collect.synthetic_report(claim))
    return render.Page(collector, settings)


def sections(page: str) -> dict[str, str]:
    """anchor -> the HTML of that claim's section."""
    return dict(re.findall(r'<section class="claim [^"]*" id="([^"]+)" data-filter>(.*?)</section>', page, re.S))


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def steps_of(html: str, walk: str) -> dict[str, str]:
    """A walk of the handbook (``bert-in-one-page``, ``bert-to-gpt-and-t5``): step anchor -> the HTML of that step."""
    start = html.index(f'<section id="{walk}">')
    section = html[start:html.index("</section>", start)]
    return {part.split('"', 1)[0]: part for part in section.split('<li class="step" id="')[1:]}
