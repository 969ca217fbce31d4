"""Evidence for the HTML report: the claim block, tables, text and figures.

pytest-html renders only ``html`` extras inline, so everything here becomes one
HTML fragment per test; figures are embedded PNG data URIs, so the report stays a
single self-contained file.
"""

import base64
import html
import io

import torch

from bertspec.claims import Claim

STYLE = (
    "<style>"
    ".claim{font-family:sans-serif;margin:6px 0 10px}"
    ".claim .id{font-weight:bold;color:#555}"
    ".claim p{margin:4px 0;max-width:60em}"
    ".claim .zh{color:#234;border-left:3px solid #9bd;padding-left:8px}"
    "table.evidence{border-collapse:collapse;margin:6px 0;font:12px monospace}"
    "table.evidence td,table.evidence th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "table.evidence caption{text-align:left;font-weight:bold;font-family:sans-serif}"
    "tbody.passed .logwrapper{display:none}"
    "</style>"
)


def paragraphs(text: str, joiner: str) -> str:
    """Docstring paragraphs as <p>, their hard line breaks undone (Chinese joins without spaces)."""
    blocks = [joiner.join(line.strip() for line in block.splitlines()) for block in text.split("\n\n")]
    return "".join(f"<p>{html.escape(block)}</p>" for block in blocks if block)


def claim_block(claim: Claim) -> str:
    e = html.escape
    return (
        f'<div class="claim"><span class="id">{e(claim.claim_id)}</span> <b>{e(claim.sentence)}</b>'
        f"{paragraphs(claim.why, ' ')}"
        f'<div class="zh"><b>{e(claim.sentence_zh)}</b>{paragraphs(claim.why_zh, "")}</div></div>'
    )


def fmt(value) -> str:
    """One cell: floats to 4 significant digits, the rest as text."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Evidence:
    """What a test shows besides its verdict; the report renders it under the claim."""

    def __init__(self):
        self.fragments: list[str] = []

    def table(self, title: str, header, rows) -> None:
        e = html.escape
        head = "".join(f"<th>{e(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{e(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
        self.fragments.append(f'<table class="evidence"><caption>{e(title)}</caption><tr>{head}</tr>{body}</table>')

    def matrix(self, title: str, values: torch.Tensor, row_labels, col_labels) -> None:
        """A 2D tensor as a table with labelled rows and columns."""
        rows = [[label, *values[i].tolist()] for i, label in enumerate(row_labels)]
        self.table(title, ["", *col_labels], rows)

    def text(self, title: str, text: str) -> None:
        self.fragments.append(f"<p><b>{html.escape(title)}</b></p><pre>{html.escape(text)}</pre>")

    def figure(self, title: str, fig) -> None:
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        self.fragments.append(
            f'<p><b>{html.escape(title)}</b></p><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        )

    def html(self) -> str:
        return "".join(self.fragments)
