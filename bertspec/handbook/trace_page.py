"""The page ``bertspec trace TEXT --html PAGE`` writes: one forward pass of the user's text on their model, offline.

It shows what the handbook shows for the claims' examples, for this input: the
tokens, the mask as each layer receives it, every layer's and head's attention
probabilities (the handbook's attention view, same assets), the top guesses at
each [MASK] and every traced step; each part links to the handbook claims that
explain it. The page is one file, rendered by the handbook's Jinja environment
(templates/trace_view.html), and fetches nothing.
"""

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from bertspec.handbook import claims, render
from bertspec.handbook.evidence import attention_batch
from bertspec.models import versions

HANDBOOK = "report.html"  # where the claims are, by default: the handbook written beside the page
TOP = 5  # guesses shown at each [MASK]

# Each part of the page -> the claims that explain it, (claim ID, test function). A P1.2 claim checks that each is a
# claim of spec/ with that ID, so a renamed claim cannot leave a dead link.
EXPLAINED_BY = {
    "tokens": (("P1.1", "test_the_tokenizer_wraps_every_text_in_cls_and_sep_and_gives_each_special_token_its_own_id"),
               ("P2.2a", "test_the_padding_mask_and_the_mlm_mask_token_are_separate_inputs")),
    "mask": (("P2.1a", "test_every_layer_receives_the_same_mask_built_once_from_the_2d_mask"),
             ("P2.1a", "test_the_mask_reaching_the_layers_has_the_form_read_in_this_transformers_version"),
             ("P2.1d", "test_adding_the_all_zero_mask_leaves_every_score_bit_for_bit_unchanged")),
    "probs": (("P2.3b", "test_padded_keys_get_exactly_zero_attention_probability"),
              ("P2.3b", "test_every_attention_row_sums_to_one"),
              ("P2.2b", "test_the_mask_token_is_attended_to_and_attends_to_every_real_token"),
              ("P5.1b", "test_the_interactive_attention_view_holds_exactly_the_probabilities_the_model_computed")),
    "guesses": (("P3.2d", "test_prediction_scores_are_unnormalised_logits_that_softmax_turns_into_a_distribution"),
                ("P4.1c", "test_several_masks_are_predicted_in_one_pass_and_none_sees_anothers_answer")),
    "steps": (("P1.2", "test_the_tracer_records_every_step_of_every_layer_in_post_ln_order"),
              ("P3.1a", "test_every_step_from_input_ids_to_the_logits_has_the_shape_the_config_implies")),
}


def top_guesses(bert, batch, output) -> list[tuple[int, list[tuple[str, float]]]]:
    """Per [MASK] of row 0, its position and the TOP most probable tokens with their probabilities."""
    guesses = []
    for pos in batch.positions(bert.tokenizer.mask_token_id):
        top = output.logits[0, pos].softmax(-1).topk(TOP)
        guesses.append((pos, [(bert.token(i), p) for p, i in zip(top.values.tolist(), top.indices.tolist())]))
    return guesses


def mask_value(value, dtype: torch.dtype) -> str:
    """One entry of a layer's mask as the page writes it: True/False, 0, finfo.min, -inf or the number."""
    if not dtype.is_floating_point:  # a boolean mask (True: may attend), or the 2D 0/1 mask itself
        return str(value)
    if value == torch.finfo(dtype).min:
        return "finfo.min"
    return "-inf" if value == -math.inf else f"{value:.4g}"


@dataclass(frozen=True)
class LayerMask:
    layer: int
    step: str
    shape: tuple | None  # None: no mask was built, every key is attended
    dtype: str
    per_key: list[str] | None  # what every query's mask gives each key; None when queries differ or no mask
    per_query: list[list[str]] | None  # the whole (T, T) mask when queries differ


@dataclass
class TracePage:
    """One traced forward pass of one text, as the page shows it."""

    bert: object  # bertspec.models.loading.ModelUnderTest
    text: str
    batch: object  # bertspec.models.inputs.Batch, one row
    trace: object  # bertspec.tracing.trace.Trace, tensors kept
    guesses: list | None  # top_guesses, or None: the checkpoint has no MLM head
    notes: list[str]
    handbook: str = HANDBOOK

    @cached_property
    def tokens(self) -> list[str]:
        return self.bert.tokens(self.batch)

    def token_rows(self) -> list[tuple]:
        """Per position: index, token, id, attention_mask, token type."""
        b = self.batch
        return list(zip(range(len(self.tokens)), self.tokens, b.input_ids[0].tolist(), b.attention_mask[0].tolist(),
                        b.token_type_ids[0].tolist()))

    def masks(self) -> list[LayerMask]:
        """The mask as each layer's self-attention received it (ALBERT: each run of its one layer)."""
        return [self._layer_mask(i, step) for i, step in enumerate(self.trace.all("attention_mask"))]

    def _layer_mask(self, i: int, step) -> LayerMask:
        if step.shape is None:
            return LayerMask(i, step.name, None, step.dtype, None, None)
        mask = self.trace.tensor(step.name)
        rows = mask[0].reshape(-1, mask.shape[-1]).tolist()  # one row per query, or one for all: [B, 1, 1, T]
        written = [[mask_value(v, mask.dtype) for v in row] for row in rows]
        same = all(row == written[0] for row in written)
        return LayerMask(i, step.name, step.shape, step.dtype, written[0] if same else None, None if same else written)

    @cached_property
    def view(self) -> dict:
        """The attention view's record (the handbook's evidence kind "attention"), this text its one batch."""
        probs = self.trace.stack("probs")
        derived = self.trace.all("probs")[0].source == "derived"
        return {"kind": "attention", "title": f"attention probabilities, every layer and head: {self.text}",
                "batches": [attention_batch(self.text, self.bert, self.batch, probs)],
                "layers": probs.shape[0], "heads": probs.shape[2], **({"derived": True} if derived else {})}

    def links(self, part: str) -> list[tuple[str, str, str]]:
        """The claims that explain a part of the page: (claim ID, what it says, where it is)."""
        return [(claim_id, function.removeprefix("test_").replace("_", " "),
                 f"{self.handbook}#{claims.anchor(claim_id, function)}") for claim_id, function in EXPLAINED_BY[part]]

    def facts(self) -> list[tuple[str, str]]:
        bert = self.bert
        return [("model", f"{bert.source} ({bert.anatomy.name})"), ("attention", bert.attn_implementation),
                ("device", bert.device), ("layers × heads", f"{len(self.masks())} × {bert.config.num_attention_heads}"),
                ("torch", torch.__version__), ("transformers", versions.VERSION)]

    def html(self) -> str:
        return render.environment().get_template("trace_view.html").render(page=self)
