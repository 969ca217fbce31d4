"""Counterfeit decoders and T5s: a bundled model of chapter P8 with one mechanism broken.

Registered in the same registry as the counterfeit BERTs (bertspec.proof.counterfeits), each a context manager
that takes a :class:`bertspec.models.loading.GenerativeUnderTest`, yields one, and leaves the shared model as it
found it. A P8 claim names the ones it must fail on with ``@pytest.mark.counterfeits(...)``.
"""

import torch

from bertspec.models import versions
from bertspec.models.generative import CAUSAL_SELF, DECODER, ENCODER_DECODER
from bertspec.proof.counterfeits import counterfeit
from bertspec.tracing import hooks, masks


def kinds(*wanted):
    """``applies``: a counterfeit of decoders, or of encoder-decoders, only."""
    def applies(model):
        if model.anatomy.kind not in wanted:
            return f"a mechanism of {' and '.join(w + 's' for w in wanted)} only, not of {model.anatomy.name}"
        return None
    return applies


# ---- P8.1 the causal mask (owner: masks and tracer) ----

@counterfeit("causal_mask_dropped", applies=kinds(DECODER, ENCODER_DECODER))
def causal_mask_dropped(model):
    """Every causal self-attention receives a padding-only mask: each query sees the future keys, as an encoder's would.

    What a decoder would be if its attention mask were the padding mask alone, as the tokenizer's 0/1
    attention_mask is: training on next tokens would let every position read the answer. Where the mask was None
    the module gets a boolean that hides nothing, so that it hands the sdpa kernel no causal flag either; GPT-2 on
    transformers 4.57, which applies a triangle of its own, has that opened too.
    """
    a, route = model.anatomy, model.anatomy.mask_route
    causal = [module for _, role, module in a.roles(model.model) if role == CAUSAL_SELF]
    triangles = [t for t in (getattr(m, a.own_triangle or "", None) for m in causal) if isinstance(t, torch.Tensor)]
    kept = [t.clone() for t in triangles]

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        return args, {**kwargs, route.argument: masks.padding_only(route.mask(module, args, kwargs), hidden)}

    try:
        for t in triangles:
            t.fill_(True)
        with hooks.attached(*causal, pre=hook):
            yield model
    finally:
        for t, original in zip(triangles, kept):
            t.copy_(original)


# ---- P8.2 positions and P8.3 the causal LM loss (owner: generation and loss) ----

def _learned_positions(model):
    if model.anatomy.positions != "learned from 0":
        return (f"{model.anatomy.name}'s positions are {model.anatomy.positions}: positions that are not shifted change "
                "no score (q_m·k_n depends on m − n only), so leaving them unshifted breaks nothing")
    return None


@counterfeit("positions_not_shifted", applies=_learned_positions)
def positions_not_shifted(model):
    """generate passes no position_ids: every row counts its positions from its first column, pads included.

    What a decoder would be if generation ignored the padding, as a forward called without position_ids does: a
    left-padded prompt then starts at the position after its pads instead of at 0. Not a counterfeit of a rotary
    model, whose scores depend only on the distance between two positions.
    """
    prepare = model.model.prepare_inputs_for_generation

    def unshifted(*args, **kwargs):
        return {**prepare(*args, **kwargs), "position_ids": None}

    model.model.prepare_inputs_for_generation = unshifted
    try:
        yield model
    finally:
        del model.model.prepare_inputs_for_generation


@counterfeit("labels_shifted_twice", applies=kinds(DECODER))
def labels_shifted_twice(model):
    """The labels arrive shifted one token left and the model shifts them again: each position is scored against the token two ahead.

    What a causal LM's training would be if the user shifted the labels (labels = input_ids[:, 1:]) as a hand-written
    next-token loss does: the model's own shift comes on top.
    """
    def pre(module, args, kwargs):
        labels = kwargs.get("labels")
        if labels is None:
            return args, kwargs
        return args, {**kwargs, "labels": torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)}

    with hooks.attached(model.model, pre=pre):
        yield model


@counterfeit("causal_loss_counting_ignored_positions", applies=kinds(DECODER))
def causal_loss_counting_ignored_positions(model):
    """The returned loss scores every position against its next token, next tokens labelled -100 too (as id 0).

    What a causal LM's loss would be if -100 were a label like any other rather than ignore_index: the prompt and the
    padding would count in the mean and send gradient.
    """
    def post(module, args, kwargs, output):
        labels = kwargs.get("labels")
        if labels is not None:
            output.loss = torch.nn.functional.cross_entropy(output.logits[:, :-1].flatten(0, 1),
                                                            labels[:, 1:].clamp(min=0).flatten())
        return output

    with hooks.attached(model.model, post=post):
        yield model


# ---- P8.4 the cache and P8.5 T5 (owner: cache and encoder-decoder) ----

def _on_cached_steps(model, change):
    """While open, every call of the model whose cache already holds tokens (a step after the first) gets the keyword
    arguments ``change(kwargs)`` returns instead of its own."""
    keyword = versions.CACHE_KEYWORD[versions.MAJOR]

    def pre(module, args, kwargs):
        cache = kwargs.get(keyword)
        if cache is None or cache.get_seq_length() == 0:
            return args, kwargs
        return args, {**kwargs, **change(kwargs)}

    return hooks.attached(model.model, pre=pre)


@counterfeit("cache_positions_restart", applies=kinds(DECODER))
def cache_positions_restart(model):
    """Once the cache holds tokens, each step's position ids restart at 0: the new token is placed as if it came first.

    What a decoder would be if positions were counted within each forward call instead of along the sequence the cache
    continues. (T5 takes no position ids: its relative bias counts the cache's length itself.)
    """
    with _on_cached_steps(model, lambda kwargs: {"position_ids": torch.zeros_like(kwargs["input_ids"])}):
        yield model


@counterfeit("cache_padding_unmasked")
def cache_padding_unmasked(model):
    """Once the cache holds tokens, each step's attention mask is all ones: the padding in the cache becomes visible.

    What a decoder would be if its cache remembered which keys were padding, so that the mask were needed for the
    prompt's forward only; in T5 the mask is the encoder's, and the cached cross-attention keys of its padding appear.
    """
    def unmasked(kwargs):
        mask = kwargs.get("attention_mask")
        return {} if mask is None else {"attention_mask": torch.ones_like(mask)}

    with _on_cached_steps(model, unmasked):
        yield model


def _attention_modules(model, kind=None):
    return [module for _, k, module in model.anatomy.attention_modules(model.model) if kind in (None, k)]


@counterfeit("cross_attention_unmasked", applies=kinds(ENCODER_DECODER))
def cross_attention_unmasked(model):
    """Every cross-attention module is called without a mask: decoder queries see the encoder's padded positions.

    What an encoder-decoder would be if the encoder's padding mask stayed in the encoder.
    """
    keyword = model.anatomy.mask_route.argument

    def pre(module, args, kwargs):
        return args, {**kwargs, keyword: None}

    with hooks.attached(*_attention_modules(model, "cross"), pre=pre):
        yield model


@counterfeit("t5_scores_scaled", applies=kinds(ENCODER_DECODER))
def t5_scores_scaled(model):
    """Every T5 attention divides q·kᵀ by sqrt(d_kv), as BERT, GPT-2 and LLaMA do; the position bias is added unscaled.

    The queries are scaled on their way out of the q projection, the same as dividing q·kᵀ. What T5 would be if
    every transformer scaled its scores alike.
    """
    scale = model.config.d_kv ** -0.5

    def post(module, args, kwargs, output):
        return output * scale

    with hooks.attached(*(module.q for module in _attention_modules(model)), post=post):
        yield model


@counterfeit("t5_labels_shifted_twice", applies=kinds(ENCODER_DECODER))
def t5_labels_shifted_twice(model):
    """T5's returned loss scores each position's logits against the next label, as a causal LM's loss does.

    What T5 would be if its loss shifted the labels like GPT-2's, on top of the shift already made to build
    decoder_input_ids: each position is asked for the token after the one it must write.
    """
    def post(module, args, kwargs, output):
        labels = kwargs.get("labels")
        if labels is not None:
            output.loss = torch.nn.functional.cross_entropy(output.logits[:, :-1].flatten(0, 1),
                                                            labels[:, 1:].flatten(), ignore_index=-100)
        return output

    with hooks.attached(model.model, post=post):
        yield model


# ---- P8.6 the head (owner: lead) ----

def _tied(model):
    return None if model.config.tie_word_embeddings else f"{model.anatomy.name}'s head has its own weights already"


@counterfeit("lm_head_untied", applies=_tied)
def lm_head_untied(model):
    """The language-model head scores with a copy of the word-embedding matrix instead of the matrix itself.

    What a tied model would be if tying copied the weights once: equal now, apart after the first update.
    """
    head = model.model.get_submodule(model.anatomy.lm_head)
    tied = head.weight
    head.weight = torch.nn.Parameter(tied.detach().clone())
    try:
        yield model
    finally:
        head.weight = tied
