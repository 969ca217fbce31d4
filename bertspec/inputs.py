"""Inputs the spec feeds BERT, and the length check transformers does not make."""

from dataclasses import dataclass

import torch

# The plan's own example: bert-base-chinese predicts 都 ("capital") here.
SENTENCE = "北京是中国的首[MASK]。"
SHORT_SENTENCE = "首都。"
PAIR = ("北京是中国的首都。", "东京是日本的首都。")


class InputTooLongError(ValueError):
    """An input needs more positions than the model has position embeddings."""


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), 1 = real token, 0 = padding
    token_type_ids: torch.Tensor  # (B, T)

    def as_kwargs(self) -> dict:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }

    def positions(self, token_id: int, row: int = 0) -> list[int]:
        """Where ``token_id`` sits in one row, e.g. every [MASK] or [SEP]."""
        return (self.input_ids[row] == token_id).nonzero().flatten().tolist()

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.token_type_ids)))


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

    return Batch(extend(batch.input_ids, pad_token_id), extend(batch.attention_mask, 0), extend(batch.token_type_ids, 0))
