"""Evidence: what a claim shows besides its verdict, kept as records and rendered late.

A claim calls ``evidence.table(...)``, ``.text(...)``, ``.figure(...)`` or
``.attention_view(...)``; each call appends one record, a plain dict of
strings, numbers and lists. Records travel inside the test report (also from
pytest-xdist workers), so the handbook can put a claim's eager and sdpa evidence
side by side, and the JSON beside the report can carry them unchanged.

Record kinds (``record["kind"]``):
  ``table``     title, columns, rows (cells: str, int, float, bool or None)
  ``text``      title, text (shown preformatted)
  ``code``      title, code, language
  ``figure``    title, svg (an SVG document whose text the browser renders)
  ``attention`` title, tokens, probs, padded, ... (the interactive attention view)
Any record may carry ``derived: True`` (the values were recomputed from a
kernel's inputs, not observed) and a ``note``.
"""

import io
import math

import pytest

EVIDENCE = pytest.StashKey["Evidence"]()  # a test's records, kept on its item until the report takes them


def cell(value):
    """One table cell as plain data: a one-element tensor becomes its number, other objects their text."""
    if hasattr(value, "numel") and value.numel() == 1:  # a tensor, without importing torch here
        value = value.item()
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no inf or nan
    return str(value)


def svg(fig) -> str:
    """A matplotlib figure as SVG text, its labels left as text so the reader's fonts (CJK included) draw them."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG goes inline in HTML


class Evidence:
    """The records one test attaches, in the order it attached them."""

    def __init__(self):
        self.records: list[dict] = []

    def _add(self, kind: str, title: str, derived: bool, note: str | None, **fields) -> None:
        record = {"kind": kind, "title": title, **fields}
        if derived:
            record["derived"] = True
        if note:
            record["note"] = note
        self.records.append(record)

    def table(self, title: str, header, rows, derived: bool = False, note: str | None = None) -> None:
        self._add("table", title, derived, note, columns=[str(h) for h in header],
                  rows=[[cell(c) for c in row] for row in rows])

    def matrix(self, title: str, values, row_labels, col_labels, derived: bool = False, note=None) -> None:
        """A 2D tensor as a table with labelled rows and columns."""
        rows = [[label, *values[i].tolist()] for i, label in enumerate(row_labels)]
        self.table(title, ["", *col_labels], rows, derived, note)

    def text(self, title: str, text: str, note: str | None = None) -> None:
        self._add("text", title, False, note, text=text)

    def code(self, title: str, code: str, language: str = "python", note: str | None = None) -> None:
        self._add("code", title, False, note, code=code, language=language)

    def figure(self, title: str, fig, derived: bool = False, note: str | None = None) -> None:
        self._add("figure", title, derived, note, svg=svg(fig))

    def attention_view(self, title: str, tokens, probs, padded, derived: bool = False, note=None) -> None:
        """probs (L, B, H, T, T), tokens [B][T], padded [B][T]: every layer and head of a batch, for the interactive view.

        An exact zero is stored as the integer 0 and every other probability to 4
        significant digits, so the view can tell "exactly 0" from "rounds to 0".
        """
        values = [[[[[float(f"{p:.4g}") if p else 0 for p in row] for row in head] for head in seq] for seq in layer]
                  for layer in probs.detach().cpu().double().tolist()]
        self._add("attention", title, derived, note, tokens=tokens, padded=padded, probs=values,
                  layers=probs.shape[0], heads=probs.shape[2])


class Unread(Evidence):
    """Evidence of a claim run on a counterfeit: nobody reads it, so figures are closed, not drawn. Records stay
    (a claim may check what it recorded, as the attention view's claim does)."""

    def figure(self, title, fig, derived=False, note=None):
        import matplotlib.pyplot as plt

        plt.close(fig)
