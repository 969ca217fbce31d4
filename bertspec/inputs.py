"""Inputs the spec feeds BERT, and the length check transformers does not make."""

from dataclasses import dataclass, fields, replace

import torch

from bertspec.validate import InputTooLongError


@dataclass(frozen=True)
class Texts:
    """The example inputs of the claims, in one language; each [MASK] stands for one token of ``filled``."""

    language: str
    sentence: str  # one [MASK]: the plan's example
    short: str  # shorter than ``sentence``, so the two make a padded batch
    pair: tuple[str, str]
    masked: tuple[str, ...]  # three sentences, four [MASK]s
    filled: tuple[str, ...]  # the same sentences with every [MASK] filled in
    two_masks: str
    two_masks_truth: tuple[str, str]
    around_unknown: tuple[str, str]  # text to put before and after a character no vocabulary has
    words: tuple[str, ...]  # a pre-split sentence with words of several pieces, for token classification

    def all(self) -> list[str]:
        return [self.sentence, self.short, *self.pair, *self.filled, self.two_masks]


# The plan's own example first: bert-base-chinese predicts 都 ("capital") at 北京是中国的首[MASK]。
CHINESE = Texts(
    "zh", "北京是中国的首[MASK]。", "首都。", ("北京是中国的首都。", "东京是日本的首都。"),
    ("北京是中国的首[MASK]。", "巴[MASK]是法国的首[MASK]。", "首[MASK]。"), ("北京是中国的首都。", "巴黎是法国的首都。", "首都。"),
    "北京是中国的[MASK][MASK]。", ("首", "都"), ("北京", "。"), ("北京", "是", "中国", "的", "首都", "。"),
)
# The same sentences for a vocabulary without Chinese characters, such as bert-base-uncased's.
ENGLISH = Texts(
    "en", "the capital of france is [MASK] .", "the city .",
    ("paris is the capital of france .", "berlin is the capital of germany ."),
    ("the capital of france is [MASK] .", "[MASK] is the capital of [MASK] .", "the [MASK] ."),
    ("the capital of france is paris .", "rome is the capital of italy .", "the city ."),
    "the capital of [MASK] is [MASK] .", ("france", "paris"), ("paris ", " ."),
    ("the", "capital", "of", "france", "is", "unbelievably", "beautiful", "."),
)
SENTENCE, SHORT_SENTENCE, PAIR = CHINESE.sentence, CHINESE.short, CHINESE.pair


def corpus_lines(language: str) -> list[str]:
    """The non-empty lines of fixtures/corpus.<language>.txt: the bundled model's training text, or its English peer."""
    from bertspec import FIXTURES

    text = (FIXTURES / f"corpus.{language}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def texts_for(tokenizer) -> Texts:
    """The example texts this vocabulary knows best: the language whose sentences have the fewest [UNK],
    each [MASK] written as this tokenizer's mask token (RoBERTa's is ``<mask>``)."""
    def unknown_share(texts: Texts) -> float:
        tokens = [t for text in texts.all() for t in tokenizer.tokenize(text)]
        return sum(t == tokenizer.unk_token for t in tokens) / len(tokens)

    return with_mask_token(min((CHINESE, ENGLISH), key=unknown_share), tokenizer.mask_token)


def with_mask_token(texts: Texts, mask_token: str) -> Texts:
    def written(value):
        if isinstance(value, tuple):
            return tuple(written(v) for v in value)
        return value.replace("[MASK]", mask_token)

    return replace(texts, **{f.name: written(getattr(texts, f.name)) for f in fields(texts) if f.name != "language"})


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), 1 = real token, 0 = padding
    token_type_ids: torch.Tensor  # (B, T)
    typed: bool = True  # False: the model has no token types (DistilBERT, ModernBERT) and is not given any

    def as_kwargs(self) -> dict:
        kwargs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.typed:
            kwargs["token_type_ids"] = self.token_type_ids
        return kwargs

    def positions(self, token_id: int, row: int = 0) -> list[int]:
        """Where ``token_id`` sits in one row, e.g. every [MASK] or [SEP]."""
        return (self.input_ids[row] == token_id).nonzero().flatten().tolist()

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.token_type_ids)), self.typed)


def check_length(n_tokens: int, max_positions: int) -> None:
    """Fail with a message that says "too long" and what to do.

    transformers itself fails deep inside the embedding lookup with an error
    about tensor sizes or an index out of range, which never names the cause.
    """
    if n_tokens > max_positions:
        raise InputTooLongError(
            f"input is too long: {n_tokens} tokens (with [CLS]/[SEP]) but the model has "
            f"{max_positions} position embeddings; shorten the text or truncate "
            f"(tokenizer(..., truncation=True, max_length={max_positions}))"
        )


def encode(tokenizer, texts, max_positions: int, device="cpu", text_pairs=None, padding_side="right") -> Batch:
    """Tokenize a batch, padded (on the right unless told), after checking it fits the model."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if isinstance(text_pairs, str):
        text_pairs = [text_pairs]
    enc = tokenizer(texts, text_pairs, padding=True, padding_side=padding_side, return_tensors="pt", return_token_type_ids=True)
    check_length(enc["input_ids"].shape[1], max_positions)
    return Batch(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).to(device)


def pad_right(batch: Batch, n_pad: int, pad_token_id: int) -> Batch:
    """Append n_pad padding positions to every row (ids = [PAD], mask = 0)."""
    b = batch.input_ids.shape[0]
    device = batch.input_ids.device

    def extend(t, value):
        return torch.cat([t, torch.full((b, n_pad), value, dtype=t.dtype, device=device)], dim=1)

    return Batch(extend(batch.input_ids, pad_token_id), extend(batch.attention_mask, 0), extend(batch.token_type_ids, 0),
                 batch.typed)
