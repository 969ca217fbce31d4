"""Figures for the report (matplotlib, Agg backend, no screen needed).

Axes are labelled with the tokens themselves, Chinese characters included. The
figures are saved as SVG whose text stays text (bertspec.handbook.evidence.svg), so the
reader's browser draws the characters with its own fonts; on a machine without
a CJK font, matplotlib only measures the labels with a Latin font (its
missing-glyph warning is filtered in pyproject.toml).
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

# A claim's evidence column is about 550 px wide in a 1366 px window (eager | sdpa side by side): a figure drawn at
# most that wide is shown at its own size, where labels of 9 pt are 12 px. Wider, the page scales it down.
COLUMN_INCHES = 5.6  # 403 pt = 537 px
LABEL_PT = 9

plt.rcParams["font.sans-serif"] = ["Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Zen Hei",
                                   "DejaVu Sans"]


def _finite(t: torch.Tensor) -> np.ndarray:
    """Show a masked entry as the row's smallest real score minus one, so the colour scale stays readable."""
    x = t.detach().cpu().to(torch.float64).numpy().copy()
    masked = ~np.isfinite(x) | (x < -1e30)
    if masked.any() and (~masked).any():
        x[masked] = x[~masked].min() - 1.0
    return x


def masked_value_label(values: torch.Tensor, hidden: torch.Tensor) -> str:
    """What the hidden entries of scores + mask actually hold: finfo.min, -inf, or a number."""
    at_hidden = values[:, hidden].unique()
    if at_hidden.numel() != 1:
        return f"{at_hidden.numel()} different values"
    value = at_hidden.item()
    if value == torch.finfo(values.dtype).min:
        return "finfo.min"
    return "-inf" if value == float("-inf") else f"{value:.4g}"


def _token_axes(ax, tokens, rows: bool):
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=LABEL_PT)
    if rows:
        ax.set_yticks(range(len(tokens)), tokens, fontsize=LABEL_PT)
    else:
        ax.set_yticks([])


def mask_path_figure(mask_2d, allowed_row, masked_scores, probs, tokens, title: str):
    """Four panels, one padded sequence: 2D mask → what the layer allows → scores + mask → softmax."""
    hidden = mask_2d == 0
    fig, axes = plt.subplots(2, 2, figsize=(COLUMN_INCHES, 5.8), gridspec_kw={"height_ratios": [1, 5]})
    panels = [  # (values, title, colour map, with a colour bar): the 0/1 strips say their values in the title
        (mask_2d.reshape(1, -1).float(), "1. attention_mask (input)\n1 = real, 0 = [PAD]", "Greys_r", False),
        (allowed_row.reshape(1, -1).float(), "2. the layer's mask as\n'may attend' (1 / 0)", "Greys_r", False),
        (torch.from_numpy(_finite(masked_scores)),
         f"3. scores + mask; [PAD] keys:\n{masked_value_label(masked_scores, hidden)} (drawn as row min - 1)", "viridis", True),
        (probs, "4. softmax: probabilities\n[PAD] keys exactly 0", "viridis", True),
    ]
    for ax, (values, label, cmap, bar) in zip(axes.flat, panels):
        image = ax.imshow(values.detach().cpu().numpy(), cmap=cmap, aspect="auto")
        ax.set_title(label, fontsize=LABEL_PT)
        _token_axes(ax, tokens, rows=values.shape[0] > 1)
        if bar:
            fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03).ax.tick_params(labelsize=LABEL_PT)
    fig.suptitle(title, fontsize=LABEL_PT)
    fig.tight_layout()
    return fig


def heatmap(values, title: str, tokens, xlabel="key", ylabel="query"):
    fig, ax = plt.subplots(figsize=(5, 4.4))
    image = ax.imshow(values.detach().cpu().numpy(), cmap="viridis", aspect="auto")
    ax.set_title(title, fontsize=8)
    _token_axes(ax, tokens, rows=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def loss_and_gradient_figure(labelled, real, logits_grad_norm, embedding_grad_norm, tokens, title: str):
    """Per sequence, per position: where the loss is taken, and which positions receive gradient.

    Per sequence, the upper panel: the norm of d loss / d logits at each
    position (non-zero only where a label is); the lower: the norm of d loss /
    d input embedding (non-zero at every real token of a labelled sequence),
    under the sequence's tokens. Labelled positions are starred, [PAD]
    positions shaded; ``tokens`` holds each sequence's tokens.
    """
    rows = [(logits_grad_norm, "|d loss / d logits|"), (embedding_grad_norm, "|d loss / d input embedding|")]
    n_seq, length = labelled.shape
    fig = plt.figure(figsize=(COLUMN_INCHES, 2.5 * n_seq + 0.3), layout="constrained")
    positions = np.arange(length)
    # Each sequence's two panels share its tokens, written once under the lower one.
    pairs = [part.subplots(2, 1, sharex=True) for part in np.atleast_1d(fig.subfigures(n_seq, 1))]
    for seq, axes in enumerate(pairs):
        for ax, (values, label) in zip(axes, rows):
            v = values[seq].detach().cpu().to(torch.float64).numpy()
            ax.bar(positions, v, color="tab:blue")
            for j in np.flatnonzero(~real[seq].cpu().numpy()):
                ax.axvspan(j - 0.5, j + 0.5, color="0.85", zorder=0)
            starred = np.flatnonzero(labelled[seq].cpu().numpy())
            ax.plot(starred, np.full(len(starred), v.max() * 1.08 if v.max() > 0 else 1.0), "r*", label="labelled")
            ax.tick_params(axis="y", labelsize=LABEL_PT)
            ax.set_title(f"sequence {seq}: {label}", fontsize=LABEL_PT)
        axes[1].set_xticks(positions, tokens[seq], rotation=90, fontsize=LABEL_PT)
    pairs[0][0].legend(fontsize=LABEL_PT, loc="upper left")
    fig.suptitle(title, fontsize=LABEL_PT)
    return fig


def ratio_figure(rows):
    """One horizontal bar per ratio of a benchmark run (log scale), coloured by what it compares; targets as red ticks."""
    names = list(dict.fromkeys(row["ratio"] for row in rows))
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    measured = [row["measurement"] for row in rows]
    fig, ax = plt.subplots(figsize=(10, 0.24 * len(rows) + 1.5))
    positions = np.arange(len(rows))[::-1]
    for y, row in zip(positions, rows):
        ax.barh(y, row["value"], color=colours(names.index(row["ratio"]) % colours.N), label=row["ratio"])
        ax.text(row["value"], y, f" {row['value']:.3g}", va="center", fontsize=7)
        for bound in (row["target"] or {}).values():  # one tick per bound: a range has two
            ax.plot(bound, y, marker="|", color="red", markersize=12, markeredgewidth=2)
    # A measurement with several ratios (time and memory) is told apart by the ratio's name.
    labels = [m if measured.count(m) == 1 else f"{m} ({row['ratio']})" for m, row in zip(measured, rows)]
    ax.set_yticks(positions, labels, fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("ratio (log scale; 1 = as costly as the baseline; red tick = target)")
    handles, legend_labels = ax.get_legend_handles_labels()
    unique = dict(zip(legend_labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
