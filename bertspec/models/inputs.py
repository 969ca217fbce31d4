"""Inputs the spec feeds BERT, and the length check transformers does not make."""

import random
import re
from dataclasses import dataclass, fields, replace

import torch

from bertspec.models.validate import InputTooLongError


@dataclass(frozen=True)
class Texts:
    """The example inputs of the claims, in one language; each [MASK] stands for one token of ``filled``."""

    language: str  # "zh", "en", or VOCABULARY: sentences spelled with the checkpoint's own tokens
    sentence: str  # one [MASK]: the plan's example
    short: str  # shorter than ``sentence``, so the two make a padded batch
    pair: tuple[str, str]
    masked: tuple[str, ...]  # three sentences, four [MASK]s
    filled: tuple[str, ...]  # the same sentences with every [MASK] filled in
    two_masks: str
    two_masks_truth: tuple[str, str]
    around_unknown: tuple[str, str]  # text to put before and after a character no vocabulary has
    words: tuple[str, ...]  # a pre-split sentence with words of several pieces, for token classification

    generated: tuple[str, ...] = ()  # VOCABULARY's running text, drawn from the vocabulary; a language's is a fixture

    def all(self) -> list[str]:
        return [self.sentence, self.short, *self.pair, *self.filled, self.two_masks]

    @property
    def natural(self) -> bool:
        """A natural language, with a corpus of real running text (consecutive lines continue each other)."""
        return self.language != VOCABULARY

    def corpus(self) -> list[str]:
        """Running text in this language: fixtures/corpus.<language>.txt, or VOCABULARY's generated lines."""
        return corpus_lines(self.language) if self.natural else list(self.generated)


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


def corpus_lines(language: str) -> list[str]:
    """The non-empty lines of fixtures/corpus.<language>.txt: the bundled model's training text, or its English peer."""
    from bertspec import FIXTURES

    text = (FIXTURES / f"corpus.{language}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def unknown_share(tokenizer, texts: Texts) -> float:
    """The share of [UNK] among the tokens of ``texts.all()``, each [MASK] written as the tokenizer's own mask token
    (RoBERTa's tokenizer reads a literal [MASK] as three tokens, [UNK]s where its vocabulary lacks "[")."""
    tokens = [t for text in with_mask_token(texts, tokenizer.mask_token).all() for t in tokenizer.tokenize(text)]
    return sum(t == tokenizer.unk_token for t in tokens) / len(tokens)


def texts_for(tokenizer) -> Texts:
    """The example texts this vocabulary knows best, each [MASK] written as this tokenizer's mask token (RoBERTa's is
    ``<mask>``): the language whose sentences have the fewest [UNK], or, when even those have more than
    MAX_UNKNOWN_SHARE, sentences spelled with the vocabulary's own tokens (a protein, chemistry or code vocabulary)."""
    chosen = min((CHINESE, ENGLISH), key=lambda texts: unknown_share(tokenizer, texts))
    if unknown_share(tokenizer, chosen) > MAX_UNKNOWN_SHARE:
        chosen = vocabulary_texts(tokenizer) or chosen  # with no token to spell, the example-text claim says so
    return with_mask_token(chosen, tokenizer.mask_token)


VOCABULARY = "vocabulary"
# The example-text claim's bound on [UNK], decided here once. A language's sentences are kept while at most a tenth of
# their tokens are [UNK]: then they still read as that language, and the claims that need one (its corpus, a head that
# learned it) have it. Past that, the vocabulary's own tokens read better, with no [UNK] at all: ProtBert's vocabulary
# (25 letters) makes every English and Chinese word [UNK] (45 of the 48 English tokens; the other 3 are the [MASK]s).
MAX_UNKNOWN_SHARE = 0.1
# Reserved rows ([unused7], <extra_id_0>) are in the vocabulary but in no text.
RESERVED = re.compile(r"^(\[.*\]|<.*>)$")
MAX_WORDS = 20  # enough for varied sentences; the first tokens in id order, so a huge vocabulary is not scanned whole
VOCABULARY_SEED = 0
# 8-16 tokens a line, ~2400 in all: more than the Chinese corpus's ~1750 characters, which the collator claims count on.
GENERATED_LINES = 200


def vocabulary_words(tokenizer, limit: int = MAX_WORDS) -> list[str]:
    """Up to ``limit`` ordinary tokens of the vocabulary, in id order, that a text can spell on their own: not special,
    not reserved, not a continuation piece (##s), each tokenized back into itself."""
    special = set(tokenizer.all_special_tokens)
    words = []
    for token in sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get):
        if token in special or token.startswith("##") or RESERVED.match(token) or not token.strip():
            continue
        if tokenizer.tokenize(token) == [token]:
            words.append(token)
            if len(words) == limit:
                break
    return words


def two_piece_words(tokenizer, words: list[str]) -> list[str]:
    """Words the vocabulary splits in two, a word glued to a continuation piece (w + ##x → wx); none without ## pieces."""
    pieces = sorted((t for t in tokenizer.get_vocab() if t.startswith("##") and len(t) > 2), key=tokenizer.get_vocab().get)
    glued = (w + p[2:] for w, p in zip(words, pieces))
    return [g for g, w, p in zip(glued, words, pieces) if tokenizer.tokenize(g) == [w, p]]


def vocabulary_texts(tokenizer) -> Texts | None:
    """The example inputs spelled with the vocabulary's own tokens, one space between them, drawn by a seeded generator:
    the same fields as CHINESE and ENGLISH, with [MASK]s at fixed places, and generated running text for the corpus.
    None when the vocabulary has no ordinary token a text can spell."""
    vocab = vocabulary_words(tokenizer)
    if not vocab:
        return None
    rng = random.Random(VOCABULARY_SEED)

    def drawn(n: int) -> list[str]:
        return [rng.choice(vocab) for _ in range(n)]

    def masked(words: list[str], *at: int) -> str:
        return " ".join("[MASK]" if i in at else w for i, w in enumerate(words))

    sentence, second, short, pair_a, pair_b, two = drawn(12), drawn(10), drawn(3), drawn(10), drawn(9), drawn(8)
    split = two_piece_words(tokenizer, vocab)
    return Texts(
        VOCABULARY, masked(sentence, 8), " ".join(short), (" ".join(pair_a), " ".join(pair_b)),
        (masked(sentence, 8), masked(second, 2, 6), masked(short, 1)), (" ".join(sentence), " ".join(second), " ".join(short)),
        masked(two, 4, 5), (two[4], two[5]), (" ".join(vocab[:2]) + " ", " " + vocab[-1]),
        tuple(split[:2] + drawn(8 - len(split[:2]))),
        tuple(" ".join(drawn(rng.randint(8, 16))) for _ in range(GENERATED_LINES)),
    )


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
        raise InputTooLongError(n_tokens, max_positions,
                                f"truncate (tokenizer(..., truncation=True, max_length={max_positions}))")


def encode(tokenizer, texts, max_positions: int, device="cpu", text_pairs=None, padding_side="right",
           truncate=False) -> Batch:
    """Tokenize a batch, padded (on the right unless told), after checking it fits the model (``truncate``: cut to fit)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if isinstance(text_pairs, str):
        text_pairs = [text_pairs]
    cut = {"truncation": True, "max_length": max_positions} if truncate else {}
    enc = tokenizer(texts, text_pairs, padding=True, padding_side=padding_side, return_tensors="pt", return_token_type_ids=True,
                    **cut)
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
