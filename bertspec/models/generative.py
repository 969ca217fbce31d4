"""Decoders and encoder-decoders: where each role lives in GPT-2, LLaMA and T5, and what differs from BERT.

Chapter P8 asks BERT's questions of the transformers learners meet next. A
decoder is one stack of layers whose self-attention is causal; T5 is two
stacks, a bidirectional encoder and a causal decoder whose layers also attend
to the encoder's output (cross-attention). The roles are read here, as
bertspec.models.anatomy reads them for the BERT family, so that the tracer, the
counterfeits and the claims ask for a role and not for a module path. Paths
are those of the language-model classes (GPT2LMHeadModel, LlamaForCausalLM,
T5ForConditionalGeneration), the same on transformers 4.57 and 5.x (read in
each version's modeling files, checked on the bundled models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bertspec.models.anatomy import MaskRoute, submodule

if TYPE_CHECKING:  # no torch at import: source.py names these architectures before a bad option is refused
    import torch

DECODER = "decoder"
ENCODER_DECODER = "encoder-decoder"

# Which attention a mask form is written for: a decoder's self-attention (GPT-2's, LLaMA's, T5's decoder's), T5's
# encoder's self-attention, T5's cross-attention (decoder queries, encoder keys).
CAUSAL_SELF, ENCODER_SELF, CROSS = "causal self-attention", "encoder self-attention", "cross-attention"

# The forms a mask arrives in (bertspec.tracing.masks.form, "[B, 1, T, T]": a query row per position), the
# decoder's causal flag beside it where the module hands it to the sdpa kernel instead of a mask.
ADDITIVE = "float [B, 1, T, T] {0.0, finfo.min}"  # 0 where a key may be seen, finfo.min where not
BOOLEAN = "bool [B, 1, T, T] {False, True}"  # True where a key may be seen
NO_MASK = "None"


def flagged(form: str) -> str:
    """A form beside the is_causal=True its module handed the sdpa kernel."""
    return f"{form} + is_causal"


FLAGGED = flagged(NO_MASK)  # no mask: scaled_dot_product_attention(..., is_causal=True) applies the triangle


@dataclass(frozen=True)
class Stack:
    """One stack of layers: a decoder's, or T5's encoder or decoder."""

    layers: str  # the ModuleList of layers
    self_attention: str  # relative to a layer
    projections: tuple[str, ...]  # relative to an attention module: q, k, v, or the one fused Linear (GPT-2's c_attn)
    causal: bool  # a query sees itself and the keys before it only
    cross_attention: str | None = None  # relative to a layer: attends to the encoder's output (T5's decoder)
    final_norm: str | None = None


@dataclass(frozen=True)
class GenerativeAnatomy:
    family: str  # "gpt2", "llama", "t5": the name --family and fixtures/family/ use
    name: str  # as people write it
    model_type: str  # config.json's model_type
    lm_class: str
    kind: str  # DECODER or ENCODER_DECODER
    stacks: tuple[Stack, ...]
    word_embeddings: str
    position_embeddings: str | None  # None: no position table (rotary positions, T5's relative bias)
    positions: str  # "learned from 0" | "rotary" | "relative bias"
    scales_scores: bool  # scores divided by sqrt(head dim); T5 folds the scale into its initialisation
    lm_head: str
    mask_route: MaskRoute = MaskRoute()  # self- and cross-attention receive their mask the same way
    # ((major, attn_implementation), ((role, "unpadded" | "padded", form), ...)): the mask each role's first layer
    # receives, read in that version's source; spec/test_p8_1_causal_mask.py observes it.
    mask_forms: tuple = ()
    own_triangle: str | None = None  # a boolean buffer of the self-attention holding a triangle it applies itself
    shared_layer: bool = False  # the tracer's question of ALBERT; no layer here runs twice

    def receives(self, major: int, attn_implementation: str) -> dict[tuple[str, str], str]:
        """(role, "unpadded" | "padded") -> the mask form read in that version's source; {} where none was read."""
        forms = dict(self.mask_forms).get((major, attn_implementation), ())
        return {(role, padding): form for role, padding, form in forms}

    def receives_mask(self, attn_implementation: str, major: int | None = None) -> MaskRoute:
        return self.mask_route

    def route_in(self, model: torch.nn.Module) -> MaskRoute:
        return self.mask_route

    def shared_prefix(self, model: torch.nn.Module) -> None:
        return None

    @property
    def decoder_stack(self) -> Stack:
        """The causal stack: the only one of a decoder, T5's second."""
        return self.stacks[-1]

    def layer(self, i: int, stack: Stack | None = None) -> str:
        return f"{(stack or self.decoder_stack).layers}.{i}"

    def attention(self, i: int, stack: Stack | None = None, cross: bool = False) -> str:
        stack = stack or self.decoder_stack
        return f"{self.layer(i, stack)}.{stack.cross_attention if cross else stack.self_attention}"

    def attention_modules(self, model: torch.nn.Module) -> list[tuple[str, str, torch.nn.Module]]:
        """(path, "self" | "cross", module) of every attention module, stack by stack, in layer order."""
        found = []
        for stack in self.stacks:
            for i in range(len(submodule(model, stack.layers))):
                found.append((self.attention(i, stack), "self", submodule(model, self.attention(i, stack))))
                if stack.cross_attention:
                    path = self.attention(i, stack, cross=True)
                    found.append((path, "cross", submodule(model, path)))
        return found

    def roles(self, model: torch.nn.Module) -> list[tuple[str, str, torch.nn.Module]]:
        """(path, CAUSAL_SELF | ENCODER_SELF | CROSS, module) of every attention module, in attention_modules' order."""
        return [(path, CROSS if kind == "cross" else CAUSAL_SELF if self.stack_of(path).causal else ENCODER_SELF,
                 module) for path, kind, module in self.attention_modules(model)]

    def stack_of(self, path: str) -> Stack:
        return next(stack for stack in self.stacks if path.startswith(stack.layers + "."))

    def traced(self, model: torch.nn.Module) -> list[tuple[str, str, torch.nn.Module]]:
        """(path, kind, module) of every module whose values are steps of a trace, as Anatomy.traced lists them:
        the embeddings, each attention module (self and cross) with its projections, the final norms, the head."""
        roles = [(self.word_embeddings, "output"), (self.position_embeddings, "output")]
        for path, _, _ in self.attention_modules(model):
            roles.append((path, "attention"))
            roles += [(f"{path}.{p}", "projection") for p in self.stack_of(path).projections]
        roles += [(stack.final_norm, "norm") for stack in self.stacks] + [(self.lm_head, "output")]
        found = ((p, k, submodule(model, p)) for p, k in roles if p is not None)
        return [(p, k, m) for p, k, m in found if m is not None]


def _both(role: str, unpadded: str, padded: str) -> tuple:
    return (role, "unpadded", unpadded), (role, "padded", padded)


# GPT-2 and LLaMA build their layers' mask with masking_utils.create_causal_mask on 4.57 and 5.x alike: eager gets
# the additive [B, 1, T, T] (eager_mask: the triangle, and padded keys, at finfo.min) even without padding; sdpa gets
# the boolean [B, 1, T, T] (sdpa_mask), or None where nothing is padded (_ignore_causal_mask_sdpa), and then the
# attention passes is_causal=True to the kernel (4.57 GPT2Attention.forward and sdpa_attention_forward; 5.x
# sdpa_attention_forward: `is_causal = q_length > 1 and attention_mask is None and is_causal`). 4.57 GPT-2's eager
# attention also applies its own triangle (the `bias` buffer, torch.where) before adding the sliced mask.
DECODER_MASKS = tuple(((major, impl), _both(CAUSAL_SELF, *forms)) for major in (4, 5) for impl, forms in
                      (("eager", (ADDITIVE, ADDITIVE)), ("sdpa", (FLAGGED, BOOLEAN))))

GPT2 = GenerativeAnatomy(
    family="gpt2", name="GPT-2", model_type="gpt2", lm_class="GPT2LMHeadModel", kind=DECODER,
    stacks=(Stack("transformer.h", "attn", ("c_attn",), causal=True, final_norm="transformer.ln_f"),),
    word_embeddings="transformer.wte", position_embeddings="transformer.wpe", positions="learned from 0",
    scales_scores=True, lm_head="lm_head", mask_forms=DECODER_MASKS,
    # 4.57's GPT2Attention registers `bias` (tril of ones, max_positions²) and its eager attention applies it with
    # torch.where before adding the mask it received; 5.x's has no such buffer.
    own_triangle="bias",
)
LLAMA = GenerativeAnatomy(
    family="llama", name="LLaMA", model_type="llama", lm_class="LlamaForCausalLM", kind=DECODER,
    stacks=(Stack("model.layers", "self_attn", ("q_proj", "k_proj", "v_proj"), causal=True, final_norm="model.norm"),),
    word_embeddings="model.embed_tokens", position_embeddings=None, positions="rotary", scales_scores=True,
    lm_head="lm_head", mask_forms=DECODER_MASKS,
)
T5 = GenerativeAnatomy(
    family="t5", name="T5", model_type="t5", lm_class="T5ForConditionalGeneration", kind=ENCODER_DECODER,
    stacks=(Stack("encoder.block", "layer.0.SelfAttention", ("q", "k", "v"), causal=False,
                  final_norm="encoder.final_layer_norm"),
            Stack("decoder.block", "layer.0.SelfAttention", ("q", "k", "v"), causal=True,
                  cross_attention="layer.1.EncDecAttention", final_norm="decoder.final_layer_norm")),
    word_embeddings="shared", position_embeddings=None, positions="relative bias", scales_scores=False,
    lm_head="lm_head",
    mask_route=MaskRoute("mask"),  # T5LayerSelfAttention and T5LayerCrossAttention call their attention with mask=
    mask_forms=(
        # 4.57 T5Stack.forward: the encoder's (1.0 - mask) * finfo.min as [B, 1, 1, T], the decoder's from its own
        # _update_causal_mask (additive, the triangle even unpadded), the cross-attention's invert_attention_mask;
        # T5 4.57 has no sdpa (_supports_sdpa is False).
        ((4, "eager"), (*_both(ENCODER_SELF, "float [B, 1, 1, T] {-0.0}", "float [B, 1, 1, T] {-0.0, finfo.min}"),
                        *_both(CAUSAL_SELF, ADDITIVE, ADDITIVE),
                        *_both(CROSS, "float [B, 1, 1, T] {-0.0}", "float [B, 1, 1, T] {-0.0, finfo.min}"))),
        # 5.x T5Stack.forward: create_causal_mask for the decoder, create_bidirectional_mask for the encoder and the
        # cross-attention (None where nothing is padded). On sdpa the decoder's unpadded None carries no kernel
        # flag: sdpa_attention_forward folds the triangle into the position bias (create_position_bias_mask, from
        # T5Attention.is_causal) and calls the kernel with that float mask and is_causal=False.
        ((5, "eager"), (*_both(ENCODER_SELF, NO_MASK, ADDITIVE), *_both(CAUSAL_SELF, ADDITIVE, ADDITIVE),
                        *_both(CROSS, NO_MASK, ADDITIVE))),
        ((5, "sdpa"), (*_both(ENCODER_SELF, NO_MASK, BOOLEAN), *_both(CAUSAL_SELF, NO_MASK, BOOLEAN),
                       *_both(CROSS, NO_MASK, BOOLEAN))),
    ),
)

ARCHITECTURES = {a.family: a for a in (GPT2, LLAMA, T5)}
BY_MODEL_TYPE = {a.model_type: a for a in ARCHITECTURES.values()}


def of_model_type(model_type: str) -> GenerativeAnatomy | None:
    return BY_MODEL_TYPE.get(model_type)
