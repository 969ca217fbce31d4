"""Counterfeit BERTs: the model under test with one mechanism broken.

A claim that stays green on a counterfeit proves nothing about the mechanism
the counterfeit breaks. A claim names the counterfeits it must fail on with
``@pytest.mark.counterfeits("mask_dropped", ...)``; bertspec.proof.teeth adds
one test item per pair that runs the claim on the counterfeit and must fail. Each counterfeit is registered here under
its name: a context manager that takes a ModelUnderTest, yields one, and leaves
the shared model as it found it (a deep copy is changed, or a hook is added and
removed again). Several embody a common misconception (bertspec.handbook.knowledge):
were the misconception true, BERT would behave like the counterfeit.
"""

import copy
import dataclasses
import inspect
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from bertspec.models import anatomy
from bertspec.tracing import hooks, masks
from bertspec.models.loading import ModelUnderTest
from bertspec.proof.reference import additive_mask

REGISTRY = {}
APPLIES = {}  # name -> (model -> the reason it cannot be built for this model's family, or None)


def counterfeit(name: str, applies=None):
    """Register a context-manager function under ``name``; ``applies`` says why a family cannot have it, if it cannot."""
    def register(function):
        REGISTRY[name] = contextmanager(function)
        APPLIES[name] = applies or (lambda bert: None)
        return REGISTRY[name]
    return register


def why_not(name: str, bert: ModelUnderTest) -> str | None:
    """Why counterfeit ``name`` cannot be made of this model, or None when it can."""
    return APPLIES[name](bert)


def _only(*families):
    def applies(bert):
        if bert.anatomy.family not in families:
            return f"a mechanism of {', '.join(families)} only, not of {bert.anatomy.name}"
        return None
    return applies


def described() -> dict[str, str]:
    """name -> the first paragraph of its docstring, for the handbook."""
    return {name: inspect.getdoc(cm).split("\n\n")[0].replace("\n", " ") for name, cm in REGISTRY.items()}


# ---- the mask ----

@counterfeit("mask_dropped")
def mask_dropped(bert: ModelUnderTest):
    """Every layer receives no padding mask (None, or a mask that hides nothing where its attention needs one), as a bug in mask routing would make it.

    Also what BERT would be if padding_idx alone hid padding, or if padding
    could not change a prediction.
    """
    with masks.layer_mask_replaced(bert.model, lambda mask, hidden: None):
        yield bert


def _weakened(value: float):
    def replace(mask, hidden):
        if mask is None:
            return None
        hidden_keys = ~mask if mask.dtype == torch.bool else mask < 0
        dtype = mask.dtype if mask.is_floating_point() else hidden.dtype
        return torch.zeros(hidden_keys.shape, dtype=dtype, device=hidden_keys.device).masked_fill(hidden_keys, value)
    return replace


def _additive_mask_reaches_attention(bert: ModelUnderTest) -> str | None:
    if bert.anatomy.receives_mask(bert.attn_implementation).hides_keys_itself:
        return "its attention hides keys with masked_fill(finfo.min) itself: no other mask value can reach it"
    return None


@counterfeit("mask_value_minus_one", applies=_additive_mask_reaches_attention)
def mask_value_minus_one(bert: ModelUnderTest):
    """Every layer's mask adds -1.0 at hidden keys instead of finfo.min: a [PAD] key keeps e^-1 of its weight.

    What BERT would be if "any negative number" were enough to hide padding.
    """
    with masks.layer_mask_replaced(bert.model, _weakened(-1.0)):
        yield bert


@counterfeit("mask_value_minus_infinity", applies=_additive_mask_reaches_attention)
def mask_value_minus_infinity(bert: ModelUnderTest):
    """Every layer's mask adds -inf at hidden keys instead of finfo.min: a row with no visible key becomes NaN.

    What BERT would be if the mask were "minus infinity", as it is often described.
    """
    with masks.layer_mask_replaced(bert.model, _weakened(float("-inf"))):
        yield bert


@counterfeit("mask_inverted")
def mask_inverted(bert: ModelUnderTest):
    """Every layer hides the keys its mask allows and shows the ones it hides: 0 read as "masked out".

    What BERT would be if the additive 0 of the "all-zero" mask meant "hidden".
    """
    def invert(mask, hidden):
        if mask is None:
            b, t = hidden.shape[:2]
            return torch.full((b, 1, t, t), torch.finfo(hidden.dtype).min, dtype=hidden.dtype, device=hidden.device)
        if mask.dtype == torch.bool:
            return ~mask
        return torch.where(mask == 0, torch.finfo(mask.dtype).min, 0.0).to(mask.dtype)

    with masks.layer_mask_replaced(bert.model, invert):
        yield bert


@counterfeit("mask_token_hidden")
def mask_token_hidden(bert: ModelUnderTest):
    """Every [MASK] position gets attention_mask 0, as if [MASK] were padding.

    What BERT would be if the MLM's [MASK] and the attention mask were the same thing.
    """
    mask_id = bert.tokenizer.mask_token_id

    def pre(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return args, kwargs
        attention = kwargs.get("attention_mask")
        attention = torch.ones_like(ids) if attention is None else attention
        return args, {**kwargs, "attention_mask": attention.masked_fill(ids == mask_id, 0)}

    with hooks.attached(bert.encoder, pre=pre):
        yield bert


# ---- positions and token types ----

def _default_positions(bert: ModelUnderTest, positions):
    """Hand the base model ``positions(input_ids)`` when the caller passed no position ids."""
    def pre(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if kwargs.get("position_ids") is not None or ids is None:
            return args, kwargs
        return args, {**kwargs, "position_ids": positions(ids)}
    return hooks.attached(bert.encoder, pre=pre)


def _positions_from_zero(bert: ModelUnderTest) -> str | None:
    from bertspec.proof import scope

    if bert.anatomy.positions != "learned from 0":
        return f"{bert.anatomy.name}'s positions are {bert.anatomy.positions}"
    if not scope.takes_position_ids(bert):
        return f"{type(bert.encoder).__name__} takes no position_ids in this transformers version"
    return None


@counterfeit("positions_counted_from_one", applies=_positions_from_zero)
def positions_counted_from_one(bert: ModelUnderTest):
    """Default position ids 1..T instead of 0..T-1, an off-by-one; position ids the caller passes are left alone."""
    with _default_positions(bert, lambda ids: torch.arange(1, ids.shape[1] + 1, device=ids.device)[None]):
        yield bert


@counterfeit("positions_from_mask", applies=_positions_from_zero)
def positions_from_mask(bert: ModelUnderTest):
    """Default position ids counted over real tokens only (cumsum of attention_mask), so left padding is harmless.

    What BERT would be if it derived positions from the mask by itself.
    """
    def pre(module, args, kwargs):
        attention = kwargs.get("attention_mask")
        if kwargs.get("position_ids") is not None or attention is None:
            return args, kwargs
        return args, {**kwargs, "position_ids": (attention.cumsum(-1) - 1).clamp(min=0)}

    with hooks.attached(bert.encoder, pre=pre):
        yield bert


@counterfeit("roberta_positions_from_zero", applies=_only("roberta"))
def roberta_positions_from_zero(bert: ModelUnderTest):
    """RoBERTa with BERT's default positions 0..T-1 instead of counting real tokens from padding_idx + 1."""
    with _default_positions(bert, lambda ids: torch.arange(ids.shape[1], device=ids.device)[None]):
        yield bert


@counterfeit("token_types_ignored")
def token_types_ignored(bert: ModelUnderTest):
    """Every token gets type 0, whatever token_type_ids says."""
    def pre(module, args, kwargs):
        if kwargs.get("token_type_ids") is None:
            return args, kwargs
        return args, {**kwargs, "token_type_ids": torch.zeros_like(kwargs["token_type_ids"])}

    with hooks.attached(bert.module(bert.anatomy.embeddings), pre=pre):
        yield bert


# ---- the head ----

@counterfeit("untied_decoder")
def untied_decoder(bert: ModelUnderTest):
    """A deep copy whose decoder weight is its own exact clone of the word-embedding matrix.

    Every forward pass is unchanged: only identity (the same storage), or what
    training does to the two matrices, can tell it from the real thing.
    """
    yield _untied(bert, 0.0)


@counterfeit("untied_decoder_perturbed")
def untied_decoder_perturbed(bert: ModelUnderTest):
    """A deep copy whose decoder weight is a clone of the word-embedding matrix plus noise of 1e-3."""
    yield _untied(bert, 1e-3)


def _untied(bert: ModelUnderTest, perturbation: float) -> ModelUnderTest:
    model = copy.deepcopy(bert.model)
    decoder = model.get_submodule(bert.anatomy.decoder)
    clone = decoder.weight.detach().clone()
    if perturbation:
        noise = torch.randn(clone.shape, generator=torch.Generator().manual_seed(0))
        clone += perturbation * noise.to(clone.device)
    decoder.weight = torch.nn.Parameter(clone)
    return dataclasses.replace(bert, model=model)


def _has_separate_bias(bert):
    if bert.anatomy.decoder_bias == f"{bert.anatomy.decoder}.bias":
        return f"{bert.anatomy.name}'s decoder bias is the decoder's own parameter: there is nothing to untie"
    return None


@counterfeit("decoder_bias_untied", applies=_has_separate_bias)
def decoder_bias_untied(bert: ModelUnderTest):
    """A deep copy whose decoder uses its own copy of the head's bias (cls.predictions.bias in BERT), never trained.

    The logits are unchanged; only a gradient check can tell (the bias tying
    transformers restores in tie_weights).
    """
    model = copy.deepcopy(bert.model)
    decoder = model.get_submodule(bert.anatomy.decoder)
    decoder.bias = torch.nn.Parameter(decoder.bias.detach().clone())
    yield dataclasses.replace(bert, model=model)


def _head_keeps_the_width(bert):
    if getattr(bert.config, "embedding_size", bert.config.hidden_size) != bert.config.hidden_size:
        return f"{bert.anatomy.name}'s head maps the hidden size down to the embedding size: it cannot be skipped"
    return None


@counterfeit("head_without_transform", applies=_head_keeps_the_width)
def head_without_transform(bert: ModelUnderTest):
    """The MLM head skips its transform: the decoder scores sequence_output as it is.

    The transform's modules still run (a tracer still sees them), but the
    decoder is handed what the transform received instead of what it made.
    """
    seen = {}

    def remember(module, args, kwargs):
        seen["sequence_output"] = args[0]

    def replace(module, args, kwargs):
        return (seen["sequence_output"], *args[1:]), kwargs

    with hooks.attached(bert.module(bert.anatomy.head_dense), pre=remember), hooks.attached(bert.decoder, pre=replace):
        yield bert


@counterfeit("pooler_without_tanh")
def pooler_without_tanh(bert: ModelUnderTest):
    """Every pooler returns its dense layer's output without the tanh, in any model built from the checkpoint.

    A global module hook (torch's register_module_forward_hook), active only
    inside the context, so it reaches the BertModel a claim loads itself. It
    makes every nn.Tanh module the identity: in the BERT family the pooler's
    activation is the only one (BERT's, RoBERTa's and ALBERT's poolers alike).
    """
    def hook(module, args, output):
        return args[0] if isinstance(module, torch.nn.Tanh) else None

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield bert
    finally:
        handle.remove()


@counterfeit("logits_softmaxed")
def logits_softmaxed(bert: ModelUnderTest):
    """The model returns softmax probabilities where BertForMaskedLM returns logits.

    What BERT would be if prediction_scores were probabilities.
    """
    def post(module, args, kwargs, output):
        output.logits = output.logits.softmax(-1)
        return output

    with hooks.attached(bert.model, post=post):
        yield bert


# ---- mechanisms of one family ----

@counterfeit("albert_layers_untied", applies=_only("albert"))
def albert_layers_untied(bert: ModelUnderTest):
    """ALBERT whose layers after the first run their own weights (the shared layer's, perturbed), as if untied.

    The shared layer's call k ≥ 1 is answered by a copy of it with every
    weight moved by 1 %: what ALBERT would be if its num_hidden_layers layers
    had weights of their own.
    """
    shared = bert.module(bert.anatomy.layers)
    copies = [copy.deepcopy(shared) for _ in range(bert.config.num_hidden_layers)]  # before any hook is added
    with torch.no_grad():
        for k, layer in enumerate(copies):
            generator = torch.Generator().manual_seed(k)
            for p in layer.parameters():
                p.mul_(1 + 0.01 * torch.randn(p.shape, generator=generator).to(p))
    calls = []

    def pre(module, args, kwargs):
        calls.append(None)

    def post(module, args, kwargs, output):
        k = len(calls) - 1
        return None if k == 0 else copies[k](*args, **kwargs)

    def restart(module, args, kwargs):
        calls.clear()

    with hooks.attached(bert.model, pre=restart), hooks.attached(shared, pre=pre, post=post):
        yield bert


def _local_layers(bert: ModelUnderTest) -> str | None:
    if not any(anatomy.is_local(module) for _, module in bert.anatomy.self_attention_modules(bert.model)):
        return f"{bert.anatomy.name} has no local-attention layers"
    return None


@counterfeit("modernbert_all_global", applies=_local_layers)
def modernbert_all_global(bert: ModelUnderTest):
    """ModernBERT whose local layers attend globally: each gets the padding mask alone, without its window.

    What ModernBERT would be if every layer were a global one (or if its
    sliding window were ignored).
    """
    seen = {}

    def remember(module, args, kwargs):
        seen["mask"] = kwargs.get("attention_mask")

    def global_mask(mask, hidden):
        b, t = hidden.shape[:2]
        padding = seen["mask"] if seen["mask"] is not None else torch.ones(b, t, device=hidden.device)
        return additive_mask(padding, hidden.dtype).expand(b, 1, t, t)

    local = [module for _, module in bert.anatomy.self_attention_modules(bert.model) if anatomy.is_local(module)]
    with hooks.attached(bert.encoder, pre=remember), masks.layer_mask_replaced(bert.model, global_mask, only=local):
        yield bert


# ---- the loss and its gradient ----

def loss_over_every_position(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The classic bug: -100 clamped to a valid id (0, [PAD]) and every position averaged."""
    return F.cross_entropy(logits.flatten(0, 1), labels.clamp(min=0).flatten())


@counterfeit("loss_counting_ignored_positions")
def loss_counting_ignored_positions(bert: ModelUnderTest):
    """The returned loss also counts the positions labelled -100 (clamped to id 0) and averages over all of them."""
    def post(module, args, kwargs, output):
        labels = kwargs.get("labels")
        if labels is not None:
            output.loss = loss_over_every_position(output.logits, labels)
        return output

    with hooks.attached(bert.model, post=post):
        yield bert


@counterfeit("gradient_only_at_labels")
def gradient_only_at_labels(bert: ModelUnderTest):
    """Gradient reaches the input embeddings of labelled positions only (the others are detached after the embeddings).

    What BERT would be if only the [MASK] positions' embeddings learned.
    """
    seen = {}

    def remember(module, args, kwargs):
        seen["labels"] = kwargs.get("labels")

    def post(module, args, kwargs, output):
        labels = seen.get("labels")
        if labels is None:
            return output
        return torch.where((labels != -100)[..., None], output, output.detach())

    with hooks.attached(bert.model, pre=remember), hooks.attached(bert.module(bert.anatomy.embeddings), post=post):
        yield bert

# Decoders and encoder-decoders: the counterfeits of chapter P8 register in the same registry.
from bertspec.proof import counterfeits_generative  # noqa: E402, F401
