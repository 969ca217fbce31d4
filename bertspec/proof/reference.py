"""A from-scratch reference BertForMaskedLM in plain torch.

It reads nothing but a state dict (plus the handful of sizes in a config) and
spells out every step of BERT's forward pass, so that the spec can hold
transformers' BertForMaskedLM against it, piece by piece and end to end.

The module tree mirrors the checkpoint: every parameter name in
`ReferenceBertForMaskedLM.state_dict()` is the transformers key of the same
tensor (`bert.encoder.layer.3.attention.self.query.weight`, ...). The MLM
decoder has no key of its own: its weight is the word-embedding matrix and
its bias is `cls.predictions.bias`, exactly the tying transformers does.

Semantics are those of `model.eval()`: there is no dropout, so the reference
is deterministic. Dropout (embeddings, attention probabilities, the two
residual branches) is the only train-time difference; gradients are otherwise
the same (the pad row of the word embeddings gets no gradient from the lookup,
as in transformers, because `padding_idx` is kept).

Public API:
    ReferenceConfig.from_bert_config(bert_config)
    from_state_dict(state_dict, config) -> ReferenceBertForMaskedLM
    from_model(hf_model) -> ReferenceBertForMaskedLM
    additive_mask(attention_mask, dtype) -> (B, 1, 1, T) additive bias
    token_nll(logits, labels) -> (B, T) per-position negative log-likelihood
    mlm_loss(logits, labels) -> scalar
    ReferenceBertForMaskedLM(config)(input_ids, attention_mask=None,
        token_type_ids=None, position_ids=None, labels=None) -> ReferenceMaskedLMOutput
"""

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
from torch.nn import functional as F

IGNORE_INDEX = -100  # label value that CrossEntropyLoss(ignore_index=-100) skips

# Activations by their transformers `hidden_act` name.
ACTIVATIONS = {
    "gelu": F.gelu,  # exact GELU, x * Phi(x), via erf
    "gelu_new": lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0)))),
    # ^ the tanh approximation (Google's BERT repository after its release, GPT-2, ALBERT) written out as transformers' NewGELUActivation writes it:
    #   the same function as the next, rounded differently
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),  # the same approximation
    "relu": F.relu,
}

# State-dict keys that transformers emits but that carry no information of their own.
TIED_KEYS = {  # tied copy -> the key the reference keeps
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
BUFFER_KEYS = (  # non-persistent buffers: recomputed (arange / zeros), present only in old checkpoints
    "bert.embeddings.position_ids",
    "bert.embeddings.token_type_ids",
)


@dataclass
class ReferenceConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    pad_token_id: int | None = None

    def __post_init__(self):
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"hidden_act={self.hidden_act!r} is not supported by the reference; "
                f"supported: {sorted(ACTIVATIONS)}"
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of "
                f"num_attention_heads={self.num_attention_heads}"
            )

    @classmethod
    def from_bert_config(cls, config):
        """Read the sizes from a transformers BertConfig (4.x or 5.x)."""
        # The reference implements absolute positions and bidirectional attention only.
        position_embedding_type = getattr(config, "position_embedding_type", "absolute")
        if position_embedding_type != "absolute":
            raise ValueError(f"position_embedding_type={position_embedding_type!r} is not supported")
        if getattr(config, "is_decoder", False):
            raise ValueError("is_decoder=True (causal attention) is not supported")
        return cls(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size,
            layer_norm_eps=config.layer_norm_eps,
            hidden_act=config.hidden_act,
            pad_token_id=config.pad_token_id,
        )


def additive_mask(attention_mask, dtype):
    """(B, T) mask, 1 = real token, 0 = padding -> (B, 1, 1, T) bias added to the scores.

    Kept keys add 0; padded keys add the dtype's most negative finite value, so
    after softmax they get (numerically) zero weight. The mask is over keys only:
    a padded query position still attends to the real tokens.
    """
    keep = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T), broadcast over heads and queries
    return (1.0 - keep) * torch.finfo(dtype).min  # (B, 1, 1, T)


def token_nll(logits, labels):
    """(B, T) negative log-likelihood of each position's label; 0.0 where the label is -100."""
    logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
    labelled = labels != IGNORE_INDEX  # (B, T)
    index = labels.masked_fill(~labelled, 0)  # gather needs a valid index even where ignored
    nll = -logp.gather(-1, index.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return nll.masked_fill(~labelled, 0.0)  # (B, T)


def mlm_loss(logits, labels):
    """Mean negative log-likelihood of `labels` over positions whose label != -100.

    This is CrossEntropyLoss(ignore_index=-100) written out. With no labelled
    position it is 0 / 0 = NaN, exactly like torch.
    """
    labelled = labels != IGNORE_INDEX  # (B, T)
    return token_nll(logits, labels)[labelled].sum() / labelled.sum()  # () mean over the labelled positions only


class Embeddings(nn.Module):
    """word + token_type + position embeddings, then LayerNorm."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, token_type_ids=None, position_ids=None):
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)[None, :]  # (1, T) absolute positions 0..T-1
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # (B, T) everything is segment A
        # Summed in transformers' order (word, token type, position) so float rounding matches too.
        x = self.word_embeddings(input_ids)  # (B, T, C)
        x = x + self.token_type_embeddings(token_type_ids)  # (B, T, C)
        x = x + self.position_embeddings(position_ids)  # (B, T, C)
        return self.LayerNorm(x)  # (B, T, C)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention, written out."""

    def __init__(self, config):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x, mask):
        B, T, C = x.shape
        nh, hs = self.n_head, self.head_size
        # Project, then split the channels into nh independent heads.
        q = self.query(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        # Similarity of every query with every key; 1/sqrt(hs) keeps the logits' scale independent of hs.
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, T)
        # Padded keys get the dtype's minimum, i.e. zero weight after softmax.
        scores = scores + mask  # (B, nh, T, T)
        probs = F.softmax(scores, dim=-1)  # (B, nh, T, T) each query's weights over keys sum to 1
        y = probs @ v  # (B, nh, T, hs) weighted average of the values
        # Merge the heads back side by side.
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return y, probs


class SelfOutput(nn.Module):
    """Project the attention result, add the residual, then normalise (post-LN)."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, y, residual):
        return self.LayerNorm(self.dense(y) + residual)  # (B, T, C) normalised AFTER the residual sum


class Attention(nn.Module):
    """Self-attention sublayer: attention, then dense + residual + LayerNorm."""

    def __init__(self, config):
        super().__init__()
        self.self = SelfAttention(config)  # the checkpoint's name: attention.self.*
        self.output = SelfOutput(config)

    def forward(self, x, mask):
        y, probs = self.self(x, mask)  # (B, T, C), (B, nh, T, T)
        return self.output(y, x), probs  # (B, T, C), (B, nh, T, T)


class Intermediate(nn.Module):
    """First half of the feed-forward: widen to intermediate_size, then the non-linearity."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))  # (B, T, I)


class Output(nn.Module):
    """Second half of the feed-forward: back to hidden_size, add the residual, then normalise (post-LN)."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h, residual):
        return self.LayerNorm(self.dense(h) + residual)  # (B, T, C) normalised AFTER the residual sum


class Layer(nn.Module):
    """One encoder block: attention sublayer, then feed-forward sublayer."""

    def __init__(self, config):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Output(config)

    def forward(self, x, mask):
        a, probs = self.attention(x, mask)  # (B, T, C), (B, nh, T, T)
        x = self.output(self.intermediate(a), a)  # (B, T, C) residual is the attention sublayer's output
        return x, probs


class Encoder(nn.Module):
    """The stack of encoder blocks."""

    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([Layer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x, mask):
        attentions = []
        for block in self.layer:
            x, probs = block(x, mask)  # (B, T, C), (B, nh, T, T)
            attentions.append(probs)
        return x, tuple(attentions)


class BertModel(nn.Module):
    """Embeddings + encoder (BertForMaskedLM's `bert`, which has no pooler)."""

    def __init__(self, config):
        super().__init__()
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, C)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)  # (B, T) no padding: every key is kept
        mask = additive_mask(attention_mask, x.dtype)  # (B, 1, 1, T)
        return self.encoder(x, mask)  # (B, T, C), nl x (B, nh, T, T)


class PredictionHeadTransform(nn.Module):
    """dense -> activation -> LayerNorm, applied to each position before the vocabulary projection."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))  # (B, T, C)


class LMPredictionHead(nn.Module):
    """Transform, then score every vocabulary entry with the (tied) word-embedding matrix plus a bias."""

    def __init__(self, config, word_embeddings):
        super().__init__()
        self.transform = PredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        # The decoder weight IS the word-embedding matrix. It is held in a plain tuple, not as a
        # submodule, so that it appears once in state_dict, under bert.embeddings.
        self.tied_word_embeddings = (word_embeddings,)

    def forward(self, x):
        W = self.tied_word_embeddings[0].weight  # (V, C)
        h = self.transform(x)  # (B, T, C)
        return h @ W.T + self.bias  # (B, T, V)


class OnlyMLMHead(nn.Module):
    """BertForMaskedLM's `cls`: just the MLM prediction head."""

    def __init__(self, config, word_embeddings):
        super().__init__()
        self.predictions = LMPredictionHead(config, word_embeddings)

    def forward(self, x):
        return self.predictions(x)  # (B, T, V)


@dataclass
class ReferenceMaskedLMOutput:
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None  # () or None without labels
    hidden_states: torch.Tensor  # (B, T, C) the final encoder output ("sequence_output")
    attentions: tuple  # num_hidden_layers x (B, nh, T, T) attention probabilities


class ReferenceBertForMaskedLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = OnlyMLMHead(config, self.bert.embeddings.word_embeddings)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None):
        h, attentions = self.bert(input_ids, attention_mask, token_type_ids, position_ids)  # (B, T, C)
        logits = self.cls(h)  # (B, T, V)
        loss = None if labels is None else mlm_loss(logits, labels)
        return ReferenceMaskedLMOutput(logits=logits, loss=loss, hidden_states=h, attentions=attentions)

    @classmethod
    def from_state_dict(cls, state_dict, config):
        """Build the reference from a BertForMaskedLM state dict (transformers 4.x or 5.x).

        Only the documented differences are normalised; every other key must match exactly
        (load_state_dict(strict=True)):
          - cls.predictions.decoder.{weight,bias}: transformers' tied copies of the word
            embeddings and of cls.predictions.bias. Dropped after checking they are equal
            (a model with untied decoder weights is not a standard BERT and is refused).
          - bert.embeddings.{position_ids,token_type_ids}: non-persistent buffers (arange and
            zeros) that only old checkpoints contain. Dropped; the reference recomputes them.
        """
        if not isinstance(config, ReferenceConfig):
            config = ReferenceConfig.from_bert_config(config)
        state_dict = dict(state_dict)
        for tied, kept in TIED_KEYS.items():
            tied_value = state_dict.pop(tied, None)
            if tied_value is not None and kept in state_dict and not torch.equal(tied_value, state_dict[kept]):
                raise ValueError(f"{tied} is not tied to {kept}: their values differ")
        for key in BUFFER_KEYS:
            state_dict.pop(key, None)
        W = state_dict["bert.embeddings.word_embeddings.weight"]
        model = cls(config).to(device=W.device, dtype=W.dtype)  # load without casting or moving
        model.load_state_dict(state_dict, strict=True)
        return model


def from_state_dict(state_dict, config):
    """ReferenceBertForMaskedLM from a state dict and a BertConfig (or ReferenceConfig)."""
    return ReferenceBertForMaskedLM.from_state_dict(state_dict, config)


def from_model(hf_model):
    """ReferenceBertForMaskedLM with the weights of a transformers BertForMaskedLM."""
    return ReferenceBertForMaskedLM.from_state_dict(hf_model.state_dict(), hf_model.config)
