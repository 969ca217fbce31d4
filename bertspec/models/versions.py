"""What differs between the transformers versions the spec runs on, in one place.

Each entry was read in that version's source and observed on transformers
4.57.6 and 5.24.0 (torch 2.13 CPU); the claims compare what they observe on the
installed version with these tables and show the whole table, the row they
verified marked.
"""

import transformers

MAJOR = int(transformers.__version__.split(".")[0])
VERSION = transformers.__version__

# What a self-attention module receives as its attention_mask.
# 4.x eager: BertModel.get_extended_attention_mask -> (1.0 - mask)[:, None, None, :] * finfo.min.
# 4.x sdpa: _prepare_4d_attention_mask_for_sdpa -> None when nothing is padded, else expanded to [B, 1, T, T].
# 5.x: masking_utils.create_bidirectional_mask -> None when nothing is padded; eager gets an
#      additive float [B, 1, T, T], sdpa a boolean [B, 1, T, T] (True = may attend).
MASK_FORM = {
    (4, "eager", "unpadded"): "float [B, 1, 1, T] {-0.0}",
    (4, "eager", "padded"): "float [B, 1, 1, T] {-0.0, finfo.min}",
    (4, "sdpa", "unpadded"): "None",
    (4, "sdpa", "padded"): "float [B, 1, T, T] {0.0, finfo.min}",
    (5, "eager", "unpadded"): "None",
    (5, "eager", "padded"): "float [B, 1, T, T] {0.0, finfo.min}",
    (5, "sdpa", "unpadded"): "None",
    (5, "sdpa", "padded"): "bool [B, 1, T, T] {False, True}",
}

def mask_form(family: str) -> dict:
    """MASK_FORM as the first layer of ``family`` receives it: BERT's, where the family's mask route
    (bertspec.models.anatomy) names another form."""
    from bertspec.models import anatomy

    a = anatomy.FAMILIES[family]
    return {(major, impl, padding): dict(a.receives_mask(impl, major).forms).get(padding, form)
            for (major, impl, padding), form in MASK_FORM.items()}


# DistilBERT's 4.57 eager attention computes q / sqrt(d) first, then q @ k^T (modeling_distilbert.py, MultiHeadSelfAttention):
# the raw product q . k is never formed. 5.x's eager_attention_forward, like every other family's, multiplies first.
SCALES_QUERY_FIRST = {(4, "distilbert")}

# Families whose model turns the user's mask into the layers' one with BertModel's code (CUSTOM_MASKS holds its
# readings): on 5.x every family goes through masking_utils; on 4.57 ALBERT, DistilBERT and ModernBERT have their own.
SHARES_BERTS_MASK_CODE = {5: {"bert", "roberta", "distilbert", "albert", "electra"}, 4: {"bert", "roberta", "electra"}}


# DistilBertForMaskedLM called with token_type_ids (it has no token types): 4.57's forward has no such
# parameter (TypeError); 5.x's takes **kwargs and drops it unread (modeling_distilbert.py of each version).
DISTILBERT_TOKEN_TYPE_IDS = {4: "TypeError", 5: "accepted and ignored"}

# What BertModel does when attention_mask is not passed at all.
# 4.57 BertModel.forward: `if attention_mask is None: attention_mask = torch.ones(...)`, then the usual path.
# 5.x: the None goes to create_bidirectional_mask, which returns None (every key may be attended).
MISSING_ATTENTION_MASK = {
    4: "filled with ones, then converted as any 2D mask",
    5: "left None; create_bidirectional_mask returns None (no mask built)",
}

# Custom attention masks, on a right-padded batch (bertspec.tracing.masks.form of what layer 0 receives; "honoured": the
# real tokens' outputs equal those of the plain 2D mask). Read in 4.57's BertModel.forward /
# get_extended_attention_mask / _prepare_4d_attention_mask_for_sdpa (3D passes since PR #32105; 4D is refused)
# and 5.x's masking_utils (2D .to(bool); 4D "already prepared or custom": passed on untouched, so eager *adds* a
# boolean 4D mask; 3D breaks in padding_mask_function).
_4X_2D = {"eager": "float [B, 1, 1, T] {-0.0, finfo.min}; honoured", "sdpa": "float [B, 1, T, T] {0.0, finfo.min}; honoured"}
CUSTOM_MASKS = {
    **{(4, impl, form): value for impl, value in _4X_2D.items() for form in ("2D 0/1 integers", "2D booleans")},
    (4, "eager", "2D floats, 0.5 at padding"): "float [B, 1, 1, T] {-0.0, -1.701e+38}; honoured",
    (4, "sdpa", "2D floats, 0.5 at padding"): "float [B, 1, T, T] {0.0, finfo.min}; honoured",
    **{(4, impl, "3D [B, T, T] 0/1"): "float [B, 1, T, T] {-0.0, finfo.min}; honoured" for impl in ("eager", "sdpa")},
    **{(4, impl, form): "refused: ValueError" for impl in ("eager", "sdpa")
       for form in ("4D [B, 1, T, T] additive", "4D [B, 1, T, T] booleans")},
    **{(5, "eager", form): "float [B, 1, T, T] {0.0, finfo.min}; honoured" for form in ("2D 0/1 integers", "2D booleans")},
    **{(5, "sdpa", form): "bool [B, 1, T, T] {False, True}; honoured" for form in ("2D 0/1 integers", "2D booleans")},
    **{(5, impl, "2D floats, 0.5 at padding"): "None; NOT honoured" for impl in ("eager", "sdpa")},
    **{(5, impl, "3D [B, T, T] 0/1"): "refused: RuntimeError" for impl in ("eager", "sdpa")},
    **{(5, impl, "4D [B, 1, T, T] additive"): "float [B, 1, T, T] {0.0, finfo.min}; honoured" for impl in ("eager", "sdpa")},
    (5, "eager", "4D [B, 1, T, T] booleans"): "bool [B, 1, T, T] {False, True}; NOT honoured",
    (5, "sdpa", "4D [B, 1, T, T] booleans"): "bool [B, 1, T, T] {False, True}; honoured",
}

# DataCollatorForLanguageModeling(seed=0): 4.57 creates its generator only `if self.seed`, so 0 means
# "unseeded"; 5.x tests `self.seed is not None` (data/data_collator.py of 4.57.6 and 5.24.0).
SEED_ZERO_IS_A_SEED = {4: False, 5: True}

# BertModel(..., head_mask=...) with one head's entry 0: 4.57's BertSelfAttention multiplies that head's probabilities
# by it (and BertSdpaSelfAttention falls back to eager to do so); 5.x removed head masking (PR #41076) and BertModel
# takes the keyword through **kwargs and drops it, without a warning (modeling_bert.py of 4.57.6 and 5.25).
HEAD_MASK = {4: "zeroes the head, as zeroing its context does", 5: "ignored: the output is unchanged"}

# BertModel(..., output_attentions=True) loaded with sdpa: 4.57's BertSdpaSelfAttention falls back to the eager path
# and returns its probabilities (warning that this fallback goes in v5); 5.x's sdpa_attention_forward only warns and
# the model returns an empty attentions tuple (integrations/sdpa_attention.py).
SDPA_OUTPUT_ATTENTIONS = {4: "eager's probabilities", 5: "an empty tuple"}

# gradient_checkpointing_enable() without kwargs: 4.57 checkpoints each layer with use_reentrant=True, 5.x's
# activation_checkpointing_enable (the old name deprecated until v6) with use_reentrant=False (modeling_utils.py of
# 4.57.6 and 5.25); torch.utils.checkpoint keeps preserve_rng_state=True either way.
CHECKPOINT_REENTRANT = {4: True, 5: False}

# The Python (slow) WordPiece tokenizer, the only one that honours never_split: 4.57's BertTokenizer beside the Rust-backed
# BertTokenizerFast; 5.x made BertTokenizer the Rust-backed class (BertTokenizerFast = BertTokenizer) and renamed the
# Python one BertTokenizerLegacy (models/bert/tokenization_bert.py and tokenization_bert_legacy.py of 4.57.6 and 5.25).
PYTHON_WORDPIECE = {4: "BertTokenizer", 5: "BertTokenizerLegacy"}

# A sequence classifier saved with 3 labels, loaded with num_labels=2 and without ignore_mismatched_sizes: 4.57 raises
# torch's load_state_dict error ("size mismatch for bias: copying a param with shape ..."); 5.x prints its LOAD REPORT
# (MISMATCH rows) and raises its own RuntimeError pointing at the flag (modeling_utils.py of 4.57.6 and 5.25).
MISMATCHED_SIZES_ERROR = {4: "size mismatch for", 5: "You set `ignore_mismatched_sizes` to `False`"}

# BertForMaskedLM.from_pretrained(..., tie_word_embeddings=False) on a checkpoint that stores no decoder matrix: 4.57's
# BertLMPredictionHead assigns decoder.bias = self.bias, so the decoder keeps the checkpoint's cls.predictions.bias and
# only decoder.weight is newly initialised; 5.x ties decoder.bias to it through _tied_weights_keys, so untied, both
# decoder.weight and decoder.bias are missing (the bias starts at zero) (modeling_bert.py of 4.57.6 and 5.25).
UNTIED_DECODER_MISSING = {4: ("cls.predictions.decoder.weight",),
                          5: ("cls.predictions.decoder.bias", "cls.predictions.decoder.weight")}

# The position_ids generate gives a decoder's padded batch: cumsum(attention_mask) - 1, so that each row counts from its
# first real token, and at the pads (where that is -1) a filler: 4.57's GenerationMixin.prepare_inputs_for_generation
# rebuilds them at every step (`position_ids.masked_fill_(attention_mask == 0, 1)`); 5.x's generate builds them once in
# _prepare_position_ids_for_generation (`masked_fill(attention_mask == 0, 0)`) and _update_model_kwargs_for_generation
# appends last + 1 for each new token (generation/utils.py of 4.57.6 and 5.25; neither GPT-2 nor LLaMA overrides them).
GENERATE_PAD_POSITION = {4: 1, 5: 0}

# The keyword a decoder's or T5's forward takes its cache under, and the field of its output that returns it: 4.57
# `past_key_values`, beside cache_position (the new tokens' slots in the cache, by default past length + arange); 5.x
# renamed it `cache` (@deprecate_kwarg("past_key_values", "5.40.0", new_name="cache"): the old name still works, with a
# warning) and dropped cache_position: positions, the causal mask and T5's relative bias read cache.get_seq_length()
# (modeling_gpt2.py, modeling_llama.py, modeling_t5.py of 4.57.6 and 5.25). Both build a DynamicCache (T5: an
# EncoderDecoderCache of two, self- and cross-attention) when use_cache=True and none is passed.
CACHE_KEYWORD = {4: "past_key_values", 5: "cache"}

# Where T5Attention puts the mask it receives: 4.57 adds it into the position bias it computes (`position_bias =
# position_bias + causal_mask`, in each stack's first layer; later layers receive that sum and do not add their mask
# again) and returns the sum as its second output; 5.x returns the bias alone and the attention function adds the mask
# (eager) or folds both into sdpa's attn_mask (create_position_bias_mask), where a causal module called with no mask
# (sdpa, nothing padded) gets the triangle from its is_causal flag (modeling_t5.py T5Attention.forward of 4.57.6 and
# 5.25; integrations/sdpa_attention.py of 5.25).
T5_BIAS_HOLDS_MASK = {4: True, 5: False}


def table(knowledge: dict, columns: list[str], *observed) -> tuple[list[str], list[list]]:
    """(header, rows) of a version table, with a column marking the rows this run verified (keys in ``observed``)."""
    seen = {key if isinstance(key, tuple) else (key,) for key in observed}
    rows = []
    for key, value in knowledge.items():
        key = key if isinstance(key, tuple) else (key,)
        rows.append([f"{key[0]}.x", *key[1:], value, "✓ this run" if key in seen else ""])
    return [*columns, "expected", "verified"], rows
