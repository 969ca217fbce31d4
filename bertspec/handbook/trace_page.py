"""The page ``bertspec trace TEXT --html PAGE`` writes: one forward pass of the user's text on their model, offline.

It shows what the handbook shows for the claims' examples, for this input: the
tokens, the mask as each attention receives it, every layer's and head's
attention probabilities (the handbook's attention view, same assets), the top
guesses (at each [MASK]; a decoder's for the next token, T5's for the span after
<extra_id_0>) and every traced step; each part links to the handbook claims that
explain it. The page is one file, rendered by the handbook's Jinja environment
(templates/trace_view.html), and fetches nothing. :class:`TracePage` is a
BERT-family model's, :class:`GenerativeTracePage` a bundled decoder's or T5's.
"""

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from bertspec.handbook import claims, render
from bertspec.handbook.evidence import attention_batch, attention_rows
from bertspec.models import versions
from bertspec.models.generative import CAUSAL_SELF, CROSS, DECODER, ENCODER_DECODER, ENCODER_SELF
from bertspec.tracing.trace import CAUSAL_FLAG

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
# The same for a decoder's and for T5's page (by the anatomy's kind): chapter P8's claims.
_P8_MASK = ("P8.1", "test_each_attention_receives_the_mask_form_read_in_this_version_and_a_causal_one_hides_the_future")
_P8_PROBS = (
    "P8.1", "test_padded_and_future_keys_get_exactly_zero_probability_at_every_real_query_of_a_causal_self_attention")
_P8_STEPS = ("P8.1", "test_the_trace_command_prints_each_attentions_mask_and_the_models_own_top_next_token_guesses")
EXPLAINED_BEYOND = {
    DECODER: {
        "tokens": (("P8.2", "test_right_padding_changes_most_batched_greedy_continuations_and_left_padding_changes_none"),),
        "mask": (_P8_MASK,), "probs": (_P8_PROBS,), "steps": (_P8_STEPS,),
        "guesses": ((
            "P8.2", "test_the_bundled_decoders_finish_corpus_lines_from_their_first_half_where_an_untrained_twin_does_not"),),
    },
    ENCODER_DECODER: {
        "tokens": ((
            "P8.5", "test_t5_builds_decoder_inputs_by_shifting_the_labels_right_and_scores_its_loss_against_the_labels_unshifted"),),
        "mask": (_P8_MASK,), "steps": (_P8_STEPS,),
        "probs": (_P8_PROBS, (
            "P8.5", "test_t5_decoder_queries_give_padded_encoder_positions_exactly_zero_probability_in_every_cross_attention_layer")),
        "guesses": (("P8.5", "test_the_bundled_t5_fills_spans_hidden_behind_sentinels_where_an_untrained_twin_does_not"),),
    },
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
    layer: int | str  # a BERT layer's number; a decoder's or T5's attention role
    step: str
    shape: tuple | None  # None: no mask was built, every key is attended
    dtype: str
    per_key: list[str] | None  # what every query's mask gives each key; None when queries differ or no mask
    per_query: list[list[str]] | None  # the whole (T, T) mask when queries differ
    causal_flag: bool = False  # the module handed the sdpa kernel is_causal=True (a decoder's None mask)


def layer_mask(trace, step, layer: int | str) -> LayerMask:
    """A mask step as the page writes it: one row of values when every query's is the same, else every row."""
    flag = step.name.replace(":attention_mask", f":{CAUSAL_FLAG}") in trace
    if step.shape is None:
        return LayerMask(layer, step.name, None, step.dtype, None, None, flag)
    mask = trace.tensor(step.name)
    rows = mask[0].reshape(-1, mask.shape[-1]).tolist()  # one row per query, or one for all: [B, 1, 1, T]
    written = [[mask_value(v, mask.dtype) for v in row] for row in rows]
    same = all(row == written[0] for row in written)
    return LayerMask(layer, step.name, step.shape, step.dtype, written[0] if same else None,
                     None if same else written, flag)


def view_record(title: str, batch: dict, probs: torch.Tensor, derived: bool) -> dict:
    """The attention view's record (the handbook's evidence kind "attention") of one batch, probs (L, B, H, T, T)."""
    return {"kind": "attention", "title": title, "batches": [batch], "layers": probs.shape[0], "heads": probs.shape[2],
            **({"derived": True} if derived else {})}


class _Page:
    """What both pages share: the claims that explain each part, and the rendering."""

    explained_by: dict
    handbook: str
    beyond = False  # a decoder's or T5's page

    def links(self, part: str) -> list[tuple[str, str, str]]:
        """The claims that explain a part of the page: (claim ID, what it says, where it is)."""
        return [(claim_id, function.removeprefix("test_").replace("_", " "),
                 f"{self.handbook}#{claims.anchor(claim_id, function)}") for claim_id, function in self.explained_by[part]]

    def html(self) -> str:
        return render.environment().get_template("trace_view.html").render(page=self)


@dataclass
class TracePage(_Page):
    """One traced forward pass of one text on a BERT-family model, as the page shows it."""

    bert: object  # bertspec.models.loading.ModelUnderTest
    text: str
    batch: object  # bertspec.models.inputs.Batch, one row
    trace: object  # bertspec.tracing.trace.Trace, tensors kept
    guesses: list | None  # top_guesses, or None: the checkpoint has no MLM head
    notes: list[str]
    handbook: str = HANDBOOK
    explained_by = EXPLAINED_BY
    token_columns = ("position", "token", "input_ids", "attention_mask", "token_type_ids")

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
        return [layer_mask(self.trace, step, i) for i, step in enumerate(self.trace.all("attention_mask"))]

    @property
    def views(self) -> list[dict]:
        return [self.view]

    @cached_property
    def view(self) -> dict:
        """The attention view's record (the handbook's evidence kind "attention"), this text its one batch."""
        probs = self.trace.stack("probs")
        derived = self.trace.all("probs")[0].source == "derived"
        return view_record(f"attention probabilities, every layer and head: {self.text}",
                           attention_batch(self.text, self.bert, self.batch, probs), probs, derived)

    def facts(self) -> list[tuple[str, str]]:
        bert = self.bert
        return [("model", f"{bert.source} ({bert.anatomy.name})"), ("attention", bert.attn_implementation),
                ("device", bert.device), ("layers × heads", f"{len(self.masks())} × {bert.config.num_attention_heads}"),
                ("torch", torch.__version__), ("transformers", versions.VERSION)]


@dataclass
class GenerativeTracePage(_Page):
    """One traced forward pass of one text on a bundled decoder or T5 (chapter P8), as the page shows it."""

    model: object  # bertspec.models.loading.GenerativeUnderTest
    text: str
    batch: dict  # input_ids and attention_mask of one row; T5's decoder_input_ids too
    trace: object  # bertspec.tracing.trace.Trace, tensors kept
    guesses: tuple[str, list[tuple[str, float]]]  # where the guess is ("next token after 的"), the top tokens
    notes: list[str]
    handbook: str = HANDBOOK
    beyond = True

    @property
    def explained_by(self) -> dict:
        return EXPLAINED_BEYOND[self.model.anatomy.kind]

    def _tokens(self, key: str) -> list[str]:
        return self.model.tokenizer.convert_ids_to_tokens(self.batch[key][0].tolist())

    @cached_property
    def token_columns(self) -> tuple[str, ...]:
        return ("position", "token", "input_ids", "attention_mask",
                *(("decoder token", "decoder_input_ids") if "decoder_input_ids" in self.batch else ()))

    def token_rows(self) -> list[tuple]:
        """Per position: index, token, id, attention_mask; T5's decoder tokens beside, where it has them."""
        columns = [self._tokens("input_ids"), self.batch["input_ids"][0].tolist(),
                   self.batch["attention_mask"][0].tolist()]
        if "decoder_input_ids" in self.batch:
            columns += [self._tokens("decoder_input_ids"), self.batch["decoder_input_ids"][0].tolist()]
        longest = max(map(len, columns))
        return [(i, *(column[i] if i < len(column) else "" for column in columns)) for i in range(longest)]

    def masks(self) -> list[LayerMask]:
        """The mask as each attention module (self and cross) received it, with the causal flag where one was passed."""
        return [layer_mask(self.trace, self.trace[f"{path}:attention_mask"], role)
                for path, role, _ in self.model.anatomy.roles(self.model.model)]

    @cached_property
    def views(self) -> list[dict]:
        """The attention view of each stack's self-attention: a decoder's one, T5's encoder and decoder. (T5's
        cross-attention, decoder queries on encoder keys, is not a square the view draws: its steps are below.)"""
        views, roles = [], self.model.anatomy.roles(self.model.model)
        for role, key in ((ENCODER_SELF, "input_ids"), (CAUSAL_SELF, "decoder_input_ids")):
            steps = [self.trace[f"{path}:probs"] for path, r, _ in roles if r == role]
            if not steps:
                continue
            key = key if key in self.batch else "input_ids"  # a decoder's queries are its inputs
            ids = self.batch[key]
            mask = self.batch["attention_mask"] if key == "input_ids" else torch.ones_like(ids)
            probs = torch.stack([self.trace.tensor(step.name) for step in steps])
            rows = attention_rows(self.text, [self._tokens(key)], mask, torch.zeros_like(ids), probs)
            views.append(view_record(f"{role} probabilities, every layer and head: {self.text}", rows, probs,
                                     steps[0].source == "derived"))
        return views

    @property
    def cross_attention(self) -> bool:
        return any(role == CROSS for _, role, _ in self.model.anatomy.roles(self.model.model))

    def facts(self) -> list[tuple[str, str]]:
        m = self.model
        heads = self.views[0]["heads"]
        return [("model", f"{m.source} ({m.anatomy.name}, a {m.anatomy.kind})"), ("attention", m.attn_implementation),
                ("device", str(self.batch["input_ids"].device)),
                ("attention modules × heads", f"{len(self.masks())} × {heads}"),
                ("torch", torch.__version__), ("transformers", versions.VERSION)]
