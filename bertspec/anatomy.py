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

from dataclasses import dataclass

import torch


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
    masking_op: str = "add"  # how eager attention applies the mask: "add" a float, or "masked_fill" (DistilBERT 4.57)

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

    def module(self, model: torch.nn.Module, path: str) -> torch.nn.Module:
        return model.get_submodule(path)

    def encoder(self, model: torch.nn.Module) -> torch.nn.Module:
        """The base model (BertModel, RobertaModel, ...): embeddings and layers, no head."""
        return model.get_submodule(self.base)

    def word_embedding_matrix(self, model) -> torch.nn.Parameter:
        return model.get_submodule(self.word_embeddings).weight

    def self_attention_modules(self, model) -> list[tuple[str, torch.nn.Module]]:
        """(path, module) of every self-attention module, in layer order (one, for a shared layer)."""
        count = 1 if self.shared_layer else model.config.num_hidden_layers
        return [(self.attention(i), model.get_submodule(self.attention(i))) for i in range(count)]

    def is_self_attention_path(self, path: str) -> bool:
        if self.shared_layer:
            return path == self.attention(0)
        prefix, _, rest = path.partition(f"{self.layers}.")
        index, _, role = rest.partition(".")
        return prefix == "" and index.isdigit() and role == self.self_attention

    def has_head_bias_parameter(self) -> bool:
        return True

    @property
    def base_prefix(self) -> str:
        return f"{self.base}."


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
        decoder=decoder, decoder_bias=decoder_bias, norm_order="post-LN", positions="learned from 0",
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
                     embedding_projection="electra.embeddings_project",
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
    decoder_bias="predictions.bias", norm_order="post-LN", positions="learned from 0",
)
MODERNBERT = Anatomy(
    family="modernbert", name="ModernBERT", model_type="modernbert", mlm_class="ModernBertForMaskedLM", base="model",
    embeddings="model.embeddings", word_embeddings="model.embeddings.tok_embeddings", position_embeddings=None,
    token_type_embeddings=None, embedding_norm="model.embeddings.norm", embedding_projection=None, layers="model.layers",
    shared_layer=False, self_attention="attn", query=None, key=None, value=None, fused_qkv="Wqkv",
    attention_output="attn.Wo", attention_norm="attn_norm", ffn_in="mlp.Wi", ffn_activation="mlp.act", ffn_out="mlp.Wo",
    output_norm="mlp_norm", final_norm="model.final_norm", head_dense="head.dense", head_activation="head.act",
    head_norm="head.norm", decoder="decoder", decoder_bias="decoder.bias", norm_order="pre-LN", positions="rotary",
)

FAMILIES = {a.family: a for a in (BERT, ROBERTA, DISTILBERT, ALBERT, ELECTRA, MODERNBERT)}
BY_MODEL_TYPE = {a.model_type: a for a in FAMILIES.values()}


def of_model_type(model_type: str) -> Anatomy | None:
    return BY_MODEL_TYPE.get(model_type)


def of_model(model: torch.nn.Module) -> Anatomy:
    return BY_MODEL_TYPE[model.config.model_type]
