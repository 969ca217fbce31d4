"""One small object per BERT-family architecture: where each role lives, and the conventions that differ.

The claims speak of roles — the embeddings, layer i's self-attention and where
its mask arrives, the head's transform, the decoder and its bias — and read the
module path of each role here, so that the same claim runs on BERT, RoBERTa,
DistilBERT, ALBERT, ELECTRA's generator and ModernBERT. Paths are those of the
family's MLM class (``model.named_modules()``), the same on transformers 4.57
and 5.x (read in each version's modeling files and checked on tiny models).
Where a family's mechanism differs (pre-LN, rotary positions, one shared layer,
factorised embeddings), the difference is stated here and shown by its own claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is not imported at run time, so that checking a folder's model_type stays fast
    import torch


def submodule(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    """The module at a dotted path (``bert.encoder.layer.0``), or None where the model has none.

    It follows each module's own table of children: a tracer resolves some 200
    paths per forward, and walking every module (``named_modules``) or
    ``get_submodule``'s checks for each of them cost more than the path itself.
    """
    module = model
    for name in path.split("."):
        module = module._modules.get(name)
        if module is None:
            return None
    return module


def is_local(module: torch.nn.Module) -> bool:
    """Whether a self-attention module attends within a window (ModernBERT's local layers): 4.57 keeps
    ``local_attention = (w/2, w/2)`` ((-1, -1) when global), 5.x ``sliding_window`` (None when global)."""
    return getattr(module, "local_attention", (-1, -1)) != (-1, -1) or getattr(module, "sliding_window", None) is not None


@dataclass(frozen=True)
class MaskRoute:
    """How a family's self-attention module receives its mask, on one transformers version and implementation.

    Read in each version's modeling file and observed on 4.57.6 and 5.25 (hooks on every self-attention module of
    each bundled family model); the tracer, the mask replacements, the counterfeits and the claims read it here.
    """

    argument: str | int = "attention_mask"  # the keyword the mask comes under, or its position (ALBERT: second)
    local_argument: str | None = None  # where a local layer's own mask comes instead (ModernBERT 4.57)
    hides_keys_itself: bool = False  # the user's 0/1 [B, T] mask arrives and the module hides keys with masked_fill
    forms: tuple[tuple[str, str], ...] = ()  # ("padded" | "unpadded", form) where the first layer's differs from BERT's

    def key(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> str | int | None:
        """Where the module's effective mask is in one call: a keyword, a position, or None (not passed)."""
        if self.local_argument is not None and is_local(module):
            return self.local_argument
        if isinstance(self.argument, int):
            return self.argument if len(args) > self.argument else None
        return self.argument if self.argument in kwargs else None

    def mask(self, module: torch.nn.Module, args: tuple, kwargs: dict):
        """The mask the module was called with, as its attention uses it."""
        key = self.key(module, args, kwargs)
        return None if key is None else kwargs[key] if isinstance(key, str) else args[key]


@dataclass(frozen=True)
class Anatomy:
    family: str  # "bert", "roberta", ...
    name: str  # as people write it
    model_type: str  # config.json's model_type
    mlm_class: str
    base: str  # the encoder model inside the MLM class
    embeddings: str
    word_embeddings: str
    position_embeddings: str | None  # None: no position table (rotary positions)
    token_type_embeddings: str | None  # None: the family has no token types
    embedding_norm: str
    embedding_projection: str | None  # E -> H when embeddings are narrower than the layers
    layers: str  # the ModuleList of layers, or the one shared layer
    shared_layer: bool  # ALBERT: one layer's weights, run num_hidden_layers times
    self_attention: str  # relative to a layer: the module that receives the mask
    query: str | None  # relative to the self-attention module; None with a fused projection
    key: str | None
    value: str | None
    fused_qkv: str | None  # ModernBERT's Wqkv: q, k and v in one Linear, in that order
    attention_output: str  # relative to a layer
    attention_norm: str
    ffn_in: str
    ffn_activation: str
    ffn_out: str
    output_norm: str
    final_norm: str | None
    head_dense: str
    head_activation: str | None  # None: applied as a function, not a module (RoBERTa)
    head_norm: str
    decoder: str
    decoder_bias: str  # the parameter's name in the state dict
    norm_order: str  # "post-LN": LayerNorm(x + sublayer(x)); "pre-LN": x + sublayer(LayerNorm(x))
    positions: str  # "learned from 0" | "learned, after padding_idx" | "rotary"
    pooler: str | None = None  # relative to the base model: the dense layer of tanh(W h[CLS] + b); None: no pooler
    ffn_in_factor: int = 1  # ModernBERT's GeGLU makes 2 x intermediate features, gated down to intermediate
    mask_route: MaskRoute = MaskRoute()  # how each self-attention module receives its mask, on every version ...
    mask_routes: tuple[tuple[tuple[int, str], MaskRoute], ...] = ()  # ... but these (major, implementation)

    def receives_mask(self, attn_implementation: str, major: int | None = None) -> MaskRoute:
        """How this family's self-attention receives its mask under an implementation, on the installed
        transformers major version unless told."""
        if major is None:
            from bertspec.models.versions import MAJOR as major
        return dict(self.mask_routes).get((major, attn_implementation), self.mask_route)

    def route_in(self, model: torch.nn.Module) -> MaskRoute:
        """The mask route of a loaded model, under the implementation it was loaded with."""
        return self.receives_mask(model.config._attn_implementation)

    def unsupported(self, config) -> str | None:
        """Why this anatomy cannot describe a checkpoint of the family, or None. ALBERT's roles name one group of
        one shared layer, as albert-base/large/xlarge-v2 have; other groupings put their layers elsewhere."""
        if self.shared_layer and (config.num_hidden_groups, config.inner_group_num) != (1, 1):
            return (f"ALBERT with num_hidden_groups {config.num_hidden_groups} and inner_group_num "
                    f"{config.inner_group_num}: bertspec knows ALBERT's one shared layer (both 1, as albert-base-v2)")
        return None

    def class_name(self, task: str) -> str:
        """The family's class for a task: ``class_name("Model")`` is BertModel, ``("ForTokenClassification")`` ..."""
        return self.mlm_class.removesuffix("ForMaskedLM") + task

    # ---- paths of roles ----

    def layer(self, i: int) -> str:
        return self.layers if self.shared_layer else f"{self.layers}.{i}"

    def in_layer(self, i: int, role: str) -> str:
        return f"{self.layer(i)}.{role}"

    def attention(self, i: int) -> str:
        return self.in_layer(i, self.self_attention)

    def step(self, i: int, role: str, quantity: str | None = None) -> str:
        """A tracer step name: layer i's role, with ALBERT's occurrence index for its one shared layer."""
        path = self.in_layer(i, role)
        if self.shared_layer:
            path = f"{path}@{i}"
        return path if quantity is None else f"{path}:{quantity}"

    def attention_step(self, i: int, quantity: str | None = None) -> str:
        return self.step(i, self.self_attention, quantity)

    def projection_step(self, i: int, which: str) -> str:
        """Layer i's query, key or value projection; with a fused projection, the one Linear that makes all three."""
        return self.step(i, f"{self.self_attention}.{self.fused_qkv or getattr(self, which)}")

    @property
    def embedding_output(self) -> str:
        """What the first layer reads: the embeddings, or their projection to the layers' width (ALBERT, ELECTRA)."""
        return self.embedding_projection or self.embeddings

    def layer_output_step(self, i: int, num_layers: int) -> str:
        """The step holding layer i's output: its last LayerNorm (post-LN), or what the next norm reads (pre-LN)."""
        if self.norm_order == "post-LN":
            return self.step(i, self.output_norm)
        return self.step(i + 1, self.attention_norm, "input") if i + 1 < num_layers else f"{self.final_norm}:input"

    def sequence_output_step(self, num_layers: int) -> str:
        """The encoder's output (last_hidden_state): the last layer's, or the final norm after it (pre-LN)."""
        return self.final_norm or self.layer_output_step(num_layers - 1, num_layers)

    def default_position_ids(self, input_ids, padding_idx: int | None):
        """The position ids the family's embeddings use when none are passed, (1 or B, T)."""
        import torch

        if self.positions == "learned, after padding_idx":  # RoBERTa counts real tokens from padding_idx + 1
            real = (input_ids != padding_idx).int()
            return torch.cumsum(real, dim=1) * real + padding_idx
        return torch.arange(input_ids.shape[1], device=input_ids.device)[None]

    def head_steps(self) -> list[str]:
        return [p for p in (self.head_dense, self.head_activation, self.head_norm, self.decoder) if p is not None]

    @property
    def distinct_layers(self) -> int | None:
        """How many layers have weights of their own: 1 for a shared layer, None (the config's count) otherwise."""
        return 1 if self.shared_layer else None

    # ---- roles in a model: the MLM class, or its base model alone (BertModel traced by itself) ----

    def resolve(self, model: torch.nn.Module, path: str | None) -> str | None:
        """The path of a role in ``model``, or None where ``model`` has no such module (a head in a base model)."""
        found = self.locate(model, path)
        return None if found is None else found[0]

    def locate(self, model: torch.nn.Module, path: str | None) -> tuple[str, torch.nn.Module] | None:
        """(path, module) of a role in ``model``: at the MLM class's path, or without the base prefix in a base model."""
        if path is None:
            return None
        for candidate in (path, path.removeprefix(f"{self.base}.")):
            module = submodule(model, candidate)
            if module is not None:
                return candidate, module
        return None

    def encoder(self, model: torch.nn.Module) -> torch.nn.Module:
        """The base model (BertModel, RobertaModel, ...): embeddings and layers, no head."""
        return model.get_submodule(self.base)

    def self_attention_modules(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """(path, module) of every self-attention module with weights of its own, in layer order."""
        found = (self.locate(model, self.attention(i)) for i in range(self.distinct_layers or model.config.num_hidden_layers))
        return [f for f in found if f is not None]

    def traced(self, model: torch.nn.Module) -> list[tuple[str, str, torch.nn.Module]]:
        """(path, kind, module) of every module whose values are steps of a trace: "output", "norm" (input and
        output), "attention" (the mask it receives and what happens inside), "projection" (an output: q, k, v or
        the fused qkv, which a self-attention module computes before its scores), in the order listed here.

        A tracer is opened per batch, so the paths are resolved with :func:`submodule` (the tracer's benchmarks
        in spec/ measure what opening one costs).
        """
        roles = [(self.embeddings, "output"), (self.word_embeddings, "output"), (self.position_embeddings, "output"),
                 (self.token_type_embeddings, "output"), (self.embedding_norm, "norm"),
                 (self.embedding_projection, "output")]
        for i in range(self.distinct_layers or model.config.num_hidden_layers):
            roles.append((self.attention(i), "attention"))
            projections = [self.fused_qkv] if self.fused_qkv else [self.query, self.key, self.value]
            roles += [(f"{self.attention(i)}.{p}", "projection") for p in projections]
            roles += [(self.in_layer(i, self.attention_output), "output"), (self.in_layer(i, self.attention_norm), "norm"),
                      (self.in_layer(i, self.ffn_in), "output"), (self.in_layer(i, self.ffn_activation), "output"),
                      (self.in_layer(i, self.ffn_out), "output"), (self.in_layer(i, self.output_norm), "norm")]
        roles += [(self.final_norm, "norm"), (self.head_dense, "output"), (self.head_activation, "output"),
                  (self.head_norm, "norm"), (self.decoder, "output")]
        found = ((self.locate(model, p), k) for p, k in roles)
        return [(f[0], kind, f[1]) for f, kind in found if f is not None]

    def shared_prefix(self, model: torch.nn.Module) -> str | None:
        """The path under which modules run once per layer (their steps get an occurrence index), or None."""
        return self.resolve(model, self.layers) if self.shared_layer else None


def _bert_like(family, name, model_type, mlm_class, base, head, decoder, decoder_bias, **changes) -> Anatomy:
    """BERT's layout under another prefix (RoBERTa and ELECTRA keep BERT's layer)."""
    fields = dict(
        family=family, name=name, model_type=model_type, mlm_class=mlm_class, base=base,
        embeddings=f"{base}.embeddings", word_embeddings=f"{base}.embeddings.word_embeddings",
        position_embeddings=f"{base}.embeddings.position_embeddings",
        token_type_embeddings=f"{base}.embeddings.token_type_embeddings", embedding_norm=f"{base}.embeddings.LayerNorm",
        embedding_projection=None, layers=f"{base}.encoder.layer", shared_layer=False, self_attention="attention.self",
        query="query", key="key", value="value", fused_qkv=None,
        attention_output="attention.output.dense", attention_norm="attention.output.LayerNorm",
        ffn_in="intermediate.dense", ffn_activation="intermediate.intermediate_act_fn", ffn_out="output.dense",
        output_norm="output.LayerNorm", final_norm=None,
        head_dense=f"{head}.dense", head_activation=f"{head}.transform_act_fn", head_norm=f"{head}.LayerNorm",
        decoder=decoder, decoder_bias=decoder_bias, norm_order="post-LN", positions="learned from 0", pooler="pooler.dense",
    )
    fields.update(changes)
    return Anatomy(**fields)


BERT = _bert_like("bert", "BERT", "bert", "BertForMaskedLM", "bert", "cls.predictions.transform",
                  "cls.predictions.decoder", "cls.predictions.bias")
ROBERTA = _bert_like("roberta", "RoBERTa", "roberta", "RobertaForMaskedLM", "roberta", "lm_head",
                     "lm_head.decoder", "lm_head.bias", head_activation=None, head_norm="lm_head.layer_norm",
                     positions="learned, after padding_idx")
ELECTRA = _bert_like("electra", "ELECTRA (generator)", "electra", "ElectraForMaskedLM", "electra",
                     "generator_predictions", "generator_lm_head", "generator_lm_head.bias",
                     embedding_projection="electra.embeddings_project", pooler=None,
                     head_activation="generator_predictions.activation")
DISTILBERT = Anatomy(
    family="distilbert", name="DistilBERT", model_type="distilbert", mlm_class="DistilBertForMaskedLM", base="distilbert",
    embeddings="distilbert.embeddings", word_embeddings="distilbert.embeddings.word_embeddings",
    position_embeddings="distilbert.embeddings.position_embeddings", token_type_embeddings=None,
    embedding_norm="distilbert.embeddings.LayerNorm", embedding_projection=None, layers="distilbert.transformer.layer",
    shared_layer=False, self_attention="attention", query="q_lin", key="k_lin", value="v_lin", fused_qkv=None,
    attention_output="attention.out_lin", attention_norm="sa_layer_norm", ffn_in="ffn.lin1", ffn_activation="ffn.activation",
    ffn_out="ffn.lin2", output_norm="output_layer_norm", final_norm=None, head_dense="vocab_transform",
    head_activation="activation", head_norm="vocab_layer_norm", decoder="vocab_projector", decoder_bias="vocab_projector.bias",
    norm_order="post-LN", positions="learned from 0",
    # 4.57 (modeling_distilbert.py): MultiHeadSelfAttention takes the raw 2D mask as `mask=`; its eager form hides
    # padded keys itself with masked_fill(mask == 0, finfo.min), its sdpa class gets None or [B, 1, T, T].
    mask_routes=(((4, "eager"), MaskRoute("mask", hides_keys_itself=True,
                                          forms=(("unpadded", "int [B, T] {1}"), ("padded", "int [B, T] {0, 1}")))),
                 ((4, "sdpa"), MaskRoute("mask"))),
)
ALBERT = Anatomy(
    family="albert", name="ALBERT", model_type="albert", mlm_class="AlbertForMaskedLM", base="albert",
    embeddings="albert.embeddings", word_embeddings="albert.embeddings.word_embeddings",
    position_embeddings="albert.embeddings.position_embeddings", token_type_embeddings="albert.embeddings.token_type_embeddings",
    embedding_norm="albert.embeddings.LayerNorm", embedding_projection="albert.encoder.embedding_hidden_mapping_in",
    layers="albert.encoder.albert_layer_groups.0.albert_layers.0", shared_layer=True, self_attention="attention",
    query="query", key="key", value="value", fused_qkv=None, attention_output="attention.dense",
    attention_norm="attention.LayerNorm", ffn_in="ffn", ffn_activation="activation", ffn_out="ffn_output",
    output_norm="full_layer_layer_norm", final_norm=None, head_dense="predictions.dense",
    head_activation="predictions.activation", head_norm="predictions.LayerNorm", decoder="predictions.decoder",
    decoder_bias="predictions.bias", norm_order="post-LN", positions="learned from 0", pooler="pooler",
    mask_route=MaskRoute(argument=1),  # AlbertLayer calls its attention(hidden_states, attention_mask, ...)
)
MODERNBERT = Anatomy(
    family="modernbert", name="ModernBERT", model_type="modernbert", mlm_class="ModernBertForMaskedLM", base="model",
    embeddings="model.embeddings", word_embeddings="model.embeddings.tok_embeddings", position_embeddings=None,
    token_type_embeddings=None, embedding_norm="model.embeddings.norm", embedding_projection=None, layers="model.layers",
    shared_layer=False, self_attention="attn", query=None, key=None, value=None, fused_qkv="Wqkv",
    attention_output="attn.Wo", attention_norm="attn_norm", ffn_in="mlp.Wi", ffn_activation="mlp.act", ffn_out="mlp.Wo",
    output_norm="mlp_norm", final_norm="model.final_norm", head_dense="head.dense", head_activation="head.act",
    head_norm="head.norm", decoder="decoder", decoder_bias="decoder.bias", norm_order="pre-LN", positions="rotary",
    ffn_in_factor=2,
    # 4.57 (modeling_modernbert.py): _update_attention_mask always expands the 2D mask (never None), for eager and
    # sdpa alike, and hands every layer a separate sliding_window_mask too, which its local layers use.
    mask_routes=tuple(((4, impl), MaskRoute(local_argument="sliding_window_mask", forms=(
        ("unpadded", "float [B, 1, T, T] {0.0}"), ("padded", "float [B, 1, T, T] {0.0, finfo.min}"))))
        for impl in ("eager", "sdpa")),
)

FAMILIES = {a.family: a for a in (BERT, ROBERTA, DISTILBERT, ALBERT, ELECTRA, MODERNBERT)}
BY_MODEL_TYPE = {a.model_type: a for a in FAMILIES.values()}


def of_model_type(model_type: str) -> Anatomy | None:
    return BY_MODEL_TYPE.get(model_type)


def of_model(model: torch.nn.Module) -> Anatomy:
    """The anatomy of a model of the BERT family, from its config's model_type."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in BY_MODEL_TYPE:
        raise ValueError(f"model_type {model_type!r} is not in the BERT family bertspec knows: "
                         f"{', '.join(sorted(BY_MODEL_TYPE))}")
    return BY_MODEL_TYPE[model_type]
