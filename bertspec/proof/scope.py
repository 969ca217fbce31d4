"""Where a claim applies: on every family, or not, and then why, as data the comparison table reads.

A claim that holds for the BERT family holds for all of it; where an
architecture's mechanism is another one, the claim skips with ``differs``,
naming the claim that shows the difference (chapter P7), and where the
question does not arise with ``not_applicable``. Either skip raises
:class:`OutOfScope`: pytest shows it like any skip, by its text, and the
plugin copies its :class:`Verdict` onto the test report, where the handbook's
comparison table (claim × architecture) reads it.
"""

from dataclasses import dataclass

import pytest

# The verdict kinds, spelled as the handbook's comparison table spells them.
DIFFERS = "differs"
NOT_APPLICABLE = "n/a"
_SAYS = {DIFFERS: "differs on", NOT_APPLICABLE: "not applicable to"}


@dataclass(frozen=True)
class Verdict:
    """Why a claim does not run on a family, as data: it travels in the test report to the handbook."""

    kind: str  # DIFFERS or NOT_APPLICABLE
    family: str  # the family's name as the handbook writes it: RoBERTa, ModernBERT, ...
    why: str
    shown_by: str = ""  # DIFFERS: the claim (test function) that shows the family's own mechanism

    @property
    def statement(self) -> str:
        """The verdict in words, e.g. "differs on RoBERTa: its default positions count ..."."""
        return f"{_SAYS[self.kind]} {self.family}: {self.why}"

    @property
    def reason(self) -> str:
        """The skip's text: the statement, then the claim that shows the difference in brackets."""
        return f"{self.statement} [{self.shown_by}]" if self.shown_by else self.statement


class OutOfScope(pytest.skip.Exception):
    """pytest's skip, carrying its :class:`Verdict` beside the text pytest prints."""

    # pytest prints a skip as "<module>.<qualified name>: <text>" and then drops "Skipped: "; its own skip poses as
    # builtins.Skipped to get there, and posing the same way keeps the terminal's line what pytest.skip would print.
    __module__ = "builtins"
    __qualname__ = "Skipped"

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.reason)
        self.verdict = verdict


@dataclass(frozen=True)
class Elsewhere:
    """A claim's declared verdict for a kind of architecture it was not written for (marker ``carries``)."""

    kind: str  # DIFFERS or NOT_APPLICABLE
    why: str
    shown_by: str = ""


def differs_on(why: str, shown_by: str) -> Elsewhere:
    return Elsewhere(DIFFERS, why, shown_by)


def not_applicable_to(why: str) -> Elsewhere:
    return Elsewhere(NOT_APPLICABLE, why)


# What a claim says of a kind of architecture it declares nothing for: P1–P7 ask of the BERT family's encoders,
# chapter P8 of decoders and encoder-decoders.
ASKED_OF_ENCODERS = not_applicable_to("the question is asked of the BERT family's encoders (chapters P1–P7); "
                                      "chapter P8 asks its counterparts of decoders and encoder-decoders")
ASKED_BEYOND_ENCODERS = not_applicable_to("the question is asked of decoders and encoder-decoders (chapter P8)")


def carry(node, family: str, beyond_encoders: bool) -> None:
    """Skip a claim's run on an architecture it does not run on, with its verdict, before any model loads.

    ``beyond_encoders``: the claim is written for decoders and encoder-decoders (it takes the ``generative``
    model); otherwise for the BERT family. A ``carries`` marker names the verdict per kind of architecture
    (``encoder=``, ``decoder=``, ``encoder_decoder=``) or per architecture (``llama=``); one it names is out of
    scope even where the claim otherwise runs (T5's cross-attention on a decoder).
    """
    from bertspec.models import source

    kind = source.kind_of(family)
    marker = node.get_closest_marker("carries")
    said = marker.kwargs if marker else {}
    declared = said.get(family, said.get(kind.replace("-", "_")))  # one architecture's verdict before its kind's
    if declared is None and (kind != source.ENCODER) == beyond_encoders:
        return
    declared = declared or (ASKED_OF_ENCODERS if kind != source.ENCODER else ASKED_BEYOND_ENCODERS)
    raise OutOfScope(Verdict(declared.kind, source.name_of(family), declared.why, declared.shown_by))


def differs(model, why: str, shown_by: str) -> None:
    """Skip: on this family the mechanism is another one; ``shown_by`` is the claim (test name) that shows it."""
    raise OutOfScope(Verdict(DIFFERS, model.anatomy.name, why, shown_by))


def not_applicable(model, why: str) -> None:
    """Skip: the question does not arise for this family (no token types, no pooler, ...)."""
    raise OutOfScope(Verdict(NOT_APPLICABLE, model.anatomy.name, why))


def reference_only_for_bert(model) -> None:
    """The from-scratch reference (bertspec.proof.reference) spells out BERT; other families' keys and steps differ."""
    if model.anatomy.family != "bert":
        not_applicable(model, "the from-scratch reference implements BERT only "
                              "(its state-dict keys and steps are BERT's)")


def post_ln(model) -> None:
    if model.anatomy.norm_order != "post-LN":
        differs(model, "pre-LN: each sublayer reads a normalised input and adds to an unnormalised residual",
                MODERNBERT_PRE_LN)


ROBERTA_POSITIONS = "test_roberta_counts_positions_from_after_padding_idx_so_left_padding_leaves_them_alone"
MODERNBERT_ROTARY = "test_modernbert_has_no_position_table_and_rotates_queries_and_keys_by_position_instead"
MODERNBERT_PRE_LN = "test_modernbert_normalises_before_each_sublayer_and_once_more_after_the_last_layer"
MODERNBERT_LOCAL = "test_modernbert_local_layers_see_only_a_window_of_keys_and_global_layers_every_key"
DISTILBERT_MASK = "test_distilbert_has_no_token_types_and_receives_its_padding_mask_by_its_own_route"


# Chapter P8's claims that show a decoder's or T5's own mechanism, named by the BERT claims that differ there.
CAUSAL_MASK_FORM = "test_each_attention_receives_the_mask_form_read_in_this_version_and_a_causal_one_hides_the_future"
CAUSAL_ZERO = "test_padded_and_future_keys_get_exactly_zero_probability_at_every_real_query_of_a_causal_self_attention"
LEFT_PADDING = "test_right_padding_changes_most_batched_greedy_continuations_and_left_padding_changes_none"
DECODER_POSITIONS = ("test_a_left_padded_row_gives_its_prompts_logits_with_generates_position_ids_and_without_them_only_"
                     "under_rotary_positions")
CAUSAL_GRADIENT = ("test_minus_100_on_prompt_and_padding_leaves_them_out_of_a_decoders_loss_and_gives_their_preceding_"
                   "logits_exactly_zero_gradient")
T5_CROSS_MASK = "test_t5_decoder_queries_give_padded_encoder_positions_exactly_zero_probability_in_every_cross_attention_layer"
T5_SHIFT = "test_t5_builds_decoder_inputs_by_shifting_the_labels_right_and_scores_its_loss_against_the_labels_unshifted"
T5_SPANS = "test_the_bundled_t5_fills_spans_hidden_behind_sentinels_where_an_untrained_twin_does_not"
TIED_HEAD = "test_the_lm_head_is_the_word_embedding_matrix_itself_exactly_where_the_config_ties_them_and_has_no_bias"
NO_TOKEN_TYPES = not_applicable_to("no token-type table: nothing is added per segment")
CAUSAL_ZERO_TOO = differs_on("no [CLS] or [SEP]; a causal self-attention gives padded and future keys both exactly 0",
                             CAUSAL_ZERO)


def positions_from_zero(model) -> None:
    """Skip unless the family numbers positions 0..T-1 in a learned table and its base model takes position_ids."""
    a = model.anatomy
    if a.positions == "learned, after padding_idx":
        differs(model, "its default positions count the real tokens from padding_idx + 1", ROBERTA_POSITIONS)
    if a.positions == "rotary":
        differs(model, "rotary positions: attention sees only the distance between two positions, not the positions",
                MODERNBERT_ROTARY)
    if not takes_position_ids(model):
        not_applicable(model, f"{type(model.encoder).__name__}.forward takes no position_ids in this transformers version")


def takes_position_ids(model) -> bool:
    import inspect

    return "position_ids" in inspect.signature(type(model.encoder).forward).parameters


def token_types(model) -> None:
    """Skip for families without token types: nothing to pass, nothing added."""
    if not model.typed:
        not_applicable(model, "the family has no token types (no token_type_ids, no token-type embeddings)")


def attends_globally(model, length: int) -> None:
    """Skip when some layer sees only a window of keys narrower than the input (ModernBERT's local layers)."""
    window = getattr(model.config, "local_attention", None) if model.anatomy.family == "modernbert" else None
    if window is not None and window // 2 < length - 1:
        differs(model, f"its local layers see only the keys within {window // 2} positions of each query, and this "
                       f"input is {length} long", MODERNBERT_LOCAL)


def needs_additive_mask(model) -> None:
    """Skip where the family's attention takes the user's 0/1 mask and hides keys itself (DistilBERT on 4.57, eager)."""
    from bertspec.models import versions

    if model.anatomy.receives_mask(model.attn_implementation).hides_keys_itself:
        differs(model, f"on transformers {versions.VERSION} its eager attention receives the 0/1 mask itself and hides "
                       "padded keys with masked_fill(mask == 0, finfo.min): no additive mask exists", DISTILBERT_MASK)
