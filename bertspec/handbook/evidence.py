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
  ``attention`` title, layers, heads, batches: each name, tokens, padded, types, shape, probs (float32, base64)
Any record may carry ``derived: True`` (the values were recomputed from a
kernel's inputs, not observed) and a ``note``.
"""

import base64
import io
import math
import re

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
    return compact(text[text.index("<svg"):])  # drop the XML prolog and DOCTYPE: the SVG goes inline in HTML


# Matplotlib's SVG repeats each label's font list, indents every element and writes coordinates to 6 decimals:
# the page carries every figure of every run, so the same drawing is written in half the bytes.
_FONT = re.compile(r"font-family: ([^;\"]+)")
_NUMBER = re.compile(r"(-?\d+\.\d\d)\d+")


def _attribute(value: str) -> str:
    if value.startswith("data:"):  # an embedded image: its base64 is broken over lines, which mean nothing there
        return "".join(value.split())
    return _NUMBER.sub(r"\1", " ".join(value.split()))


def compact(text: str) -> str:
    """The same drawing in fewer bytes: no metadata or indentation, coordinates to 0.01 pt (a pixel is 0.75 pt),
    the font list once in the style sheet, no id that nothing refers to (matplotlib names every group). Text
    between tags (the labels) is left as it is."""
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    referenced = set(re.findall(r'(?:url\(|href=")#([^)"]+)', text))
    text = re.sub(r' id="([^"]+)"', lambda m: m.group(0) if m.group(1) in referenced else "", text)
    text = re.sub(r">\s+<", "><", text)
    text = re.sub(r'="([^"]*)"', lambda m: f'="{_attribute(m.group(1))}"', text)
    families = _FONT.findall(text)
    if families:
        common = max(set(families), key=families.count)
        text = text.replace(f"; font-family: {common}", "").replace(
            "</style>", f" text{{font-family: {common}}}</style>", 1)
    return text


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

    def attention_view(self, title: str, batches: list[dict], derived: bool = False, note=None) -> None:
        """The interactive view of every layer and head of several example batches (each from :func:`attention_batch`)."""
        layers, _, heads, _, _ = batches[0]["shape"]
        self._add("attention", title, derived, note, batches=batches, layers=layers, heads=heads)


def attention_batch(name: str, bert, batch, probs) -> dict:
    """One example batch of a BERT-family model for the attention view (:func:`attention_rows`)."""
    tokens = [bert.tokens(batch, row) for row in range(batch.input_ids.shape[0])]
    return attention_rows(name, tokens, batch.attention_mask, batch.token_type_ids, probs)


def attention_rows(name: str, tokens: list[list[str]], attention_mask, token_type_ids, probs) -> dict:
    """One example batch of the attention view: its tokens, which are padding, their token types, and probs
    (L, B, H, T, T) as the float32 values the model computed.

    The probabilities are written as their float32 bytes (little-endian, base64): exact by construction, and at
    5.3 characters a value a third of their shortest decimal form, so a 12-layer model's view still fits the page.
    """
    values = probs.detach().cpu().float().numpy().astype("<f4")  # a copy in that byte order, contiguous
    return {"name": name, "tokens": tokens, "padded": (attention_mask.cpu() == 0).tolist(),
            "types": token_type_ids.cpu().tolist(), "shape": list(values.shape),
            "probs": base64.b64encode(values.tobytes()).decode("ascii")}


def attention_probs(record: dict):
    """A view batch's probabilities back as the float32 tensor (L, B, H, T, T) they were written from."""
    import numpy as np
    import torch

    values = np.frombuffer(base64.b64decode(record["probs"]), dtype="<f4").reshape(record["shape"])
    return torch.from_numpy(values.astype(np.float32))


class Unread(Evidence):
    """Evidence of a claim run on a counterfeit: nobody reads it, so figures are closed, not drawn. Records stay
    (a claim may check what it recorded, as the attention view's claim does)."""

    def figure(self, title, fig, derived=False, note=None):
        import matplotlib.pyplot as plt

        plt.close(fig)
