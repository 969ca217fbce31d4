"""Figures for the report (matplotlib, Agg backend, no screen needed).

Axis labels use positions, not characters: the machines the spec runs on have
no CJK font, and the evidence tables beside each figure name the tokens.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _finite(t: torch.Tensor) -> np.ndarray:
    """Show a masked entry as the row's smallest real score minus one, so the colour scale stays readable."""
    x = t.detach().cpu().to(torch.float64).numpy().copy()
    masked = ~np.isfinite(x) | (x < -1e30)
    if masked.any() and (~masked).any():
        x[masked] = x[~masked].min() - 1.0
    return x


def mask_path_figure(mask_2d, allowed_row, masked_scores, probs, title: str):
    """Four panels, one padded sequence: 2D mask → what the layer allows → scores + mask → softmax."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.2, 1.2]})
    length = mask_2d.shape[-1]
    ticks = range(length)
    panels = [
        (mask_2d.reshape(1, -1).float(), "1. attention_mask (2D input)\n1 = real, 0 = [PAD]", "Greys_r"),
        (allowed_row.reshape(1, -1).float(), "2. what the layer receives\n(as 'may attend': 1 / 0)", "Greys_r"),
        (torch.from_numpy(_finite(masked_scores)), "3. scores + mask (head 0)\npadded keys at finfo.min", "viridis"),
        (probs, "4. softmax → probabilities\npadded keys exactly 0", "viridis"),
    ]
    for ax, (values, label, cmap) in zip(axes, panels):
        image = ax.imshow(values.detach().cpu().numpy(), cmap=cmap, aspect="auto")
        ax.set_title(label, fontsize=9)
        ax.set_xticks(ticks)
        ax.set_xlabel("key position")
        if values.shape[0] > 1:
            ax.set_ylabel("query position")
        else:
            ax.set_yticks([])
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def heatmap(values, title: str, xlabel="key position", ylabel="query position"):
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    image = ax.imshow(values.detach().cpu().numpy(), cmap="viridis", aspect="auto")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
