"""Where a claim applies: on every family, or not, and then why, in words the comparison table can read.

A claim that holds for the BERT family holds for all of it; where an
architecture's mechanism is another one, the claim skips with ``differs``,
naming the claim that shows the difference (chapter P7), and where the
question does not arise with ``not_applicable``. The handbook's comparison
table (claim × architecture) is built from these reasons.
"""

import pytest

DIFFERS = "differs on"
NOT_APPLICABLE = "not applicable to"


def differs(model, why: str, shown_by: str) -> None:
    """Skip: on this family the mechanism is another one; ``shown_by`` is the claim (test name) that shows it."""
    pytest.skip(differs_reason(model.anatomy.name, why, shown_by))


def not_applicable(model, why: str) -> None:
    """Skip: the question does not arise for this family (no token types, no pooler, ...)."""
    pytest.skip(not_applicable_reason(model.anatomy.name, why))


def differs_reason(family_name: str, why: str, shown_by: str) -> str:
    return f"{DIFFERS} {family_name}: {why} [{shown_by}]"


def not_applicable_reason(family_name: str, why: str) -> str:
    return f"{NOT_APPLICABLE} {family_name}: {why}"


def reference_only_for_bert(model) -> None:
    """The from-scratch reference (bertspec.proof.reference) spells out BERT; other families' keys and steps differ."""
    if model.anatomy.family != "bert":
        pytest.skip(f"{NOT_APPLICABLE} {model.anatomy.name}: the from-scratch reference implements BERT only "
                    f"(its state-dict keys and steps are BERT's)")


def post_ln(model) -> None:
    if model.anatomy.norm_order != "post-LN":
        differs(model, "pre-LN: each sublayer reads a normalised input and adds to an unnormalised residual",
                MODERNBERT_PRE_LN)


ROBERTA_POSITIONS = "test_roberta_counts_positions_from_after_padding_idx_so_left_padding_leaves_them_alone"
MODERNBERT_ROTARY = "test_modernbert_has_no_position_table_and_rotates_queries_and_keys_by_position_instead"
MODERNBERT_PRE_LN = "test_modernbert_normalises_before_each_sublayer_and_once_more_after_the_last_layer"
MODERNBERT_LOCAL = "test_modernbert_local_layers_see_only_a_window_of_keys_and_global_layers_every_key"
DISTILBERT_MASK = "test_distilbert_has_no_token_types_and_receives_its_padding_mask_by_its_own_route"


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

    if versions.takes_0_1_mask(model.anatomy.family, model.attn_implementation):
        differs(model, f"on transformers {versions.VERSION} its eager attention receives the 0/1 mask itself and hides "
                       "padded keys with masked_fill(mask == 0, finfo.min): no additive mask exists", DISTILBERT_MASK)
