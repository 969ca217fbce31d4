"""A checkpoint zoo: folders unlike the bundled model, to show the spec holds on checkpoints it has never seen.

    python -m bertspec zoo OUT_DIR

Each folder is what save_pretrained writes (config.json, model.safetensors,
tokenizer files with vocab.txt), so ``pytest spec/ --bert-model FOLDER`` loads it
exactly like a downloaded checkpoint. Together they leave every habit of the
bundled model (Chinese, 3 layers, 64 wide, 64 positions, two token types, an
MLM head) behind:

  english-6l-encoder-only  English uncased WordPiece, 6 layers, max_pos 128,
                           type_vocab 1, BertModel without pooler or MLM head
  english-12l-mlm          English uncased WordPiece, 12 layers, max_pos 512,
                           type_vocab 2, MLM head
  chinese-12l-mlm          the bundled Chinese vocabulary, 12 layers, max_pos 128,
                           type_vocab 1, MLM head
  protein-4l-mlm           a domain vocabulary, neither Chinese nor English:
                           ProtBert's 30 tokens (specials, 25 uppercase residue
                           letters), 4 layers x 128, max_pos 512, type_vocab 2,
                           an MLM head trained 400 steps on seeded synthetic
                           proteins (bertspec/builders/zoo_protein.py); the
                           command prints its held-out masked-residue accuracy
  chinese-3l-trained-magnitude
                           the bundled Chinese vocabulary, 3 layers x 64 (4 heads
                           of 16, FFN 256), max_pos 128, type_vocab 2, MLM head;
                           every weight matrix but the embeddings drawn with std
                           0.5 (TRAINED_MAGNITUDE_STD), so attention scores reach
                           tens and the residual stream before each LayerNorm is
                           large, as in trained bert-base: the checkpoint on which
                           tolerances fitted to small activations fail
                           (bertspec/proof/tolerances.py derives them from a bound);
                           ~1 MiB, the whole spec runs on it in about the
                           bundled model's time

The others are hidden 384, 12 heads of 32, FFN 1536. The English vocabulary keeps
bert-base-uncased's special ids ([PAD]=0, [unused0..98]=1..99, [UNK]=100,
[CLS]=101, [SEP]=102, [MASK]=103) and is built from fixtures/corpus.en.txt.

Every member is seeded (rebuilding gives byte-identical files). The others
are untrained, but scaled where scale is what a claim can see, as in trained
checkpoints:
  - query/key weights at std 0.16 instead of 0.02: the largest |q.k/sqrt(d)|
    on a padded corpus batch is 35-60 at real and at padded keys (the command
    prints it) instead of 0.75, where softmax is almost uniform and a missing
    mask or scaling hardly shows;
  - every LayerNorm's weight and bias drawn around 1 and 0 (std 0.1), so a
    LayerNorm that skipped its affine step would show;
  - the decoder bias at the corpus's log-unigram prior, the role it has after
    training.
"""

import re
import string
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from bertspec import FIXTURES
from bertspec.models.source import DEFAULT_MODEL_DIR

CORPORA = {"en": FIXTURES / "corpus.en.txt", "zh": FIXTURES / "corpus.zh.txt"}

# bert-base-uncased's layout: its [unused] run starts at 0, bert-base-chinese's at 1.
SPECIALS_UNCASED = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FIRST_REAL_ID = len(SPECIALS_UNCASED)
# Common English endings as continuation pieces, beside one per character.
SUFFIXES = ("es", "ed", "ing", "ly", "er", "ers", "est", "al", "ion", "ian")
MIN_WORD_COUNT = 2  # rarer corpus words are left to the pieces

SHAPE = dict(hidden_size=384, num_attention_heads=12, intermediate_size=1536, pad_token_id=0)
QK_INIT_STD = 0.16
LAYERNORM_STD = 0.1
SEED = 0


@dataclass(frozen=True)
class Member:
    name: str
    language: str  # "en": the English uncased vocabulary; "zh": the bundled Chinese one
    mlm_head: bool
    num_hidden_layers: int
    max_position_embeddings: int
    type_vocab_size: int


ZOO = (
    Member("english-6l-encoder-only", "en", False, 6, 128, 1),
    Member("english-12l-mlm", "en", True, 12, 512, 2),
    Member("chinese-12l-mlm", "zh", True, 12, 128, 1),
)


def read_lines(path) -> list[str]:
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def basic_tokens(line: str) -> list[str]:
    """Lower-cased words, digits runs and single punctuation marks, as BERT's basic tokenizer splits English."""
    return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", line.lower())


def english_vocab(lines) -> list[str]:
    """Specials, single characters, the corpus's repeated words by frequency, then ## pieces."""
    counts = Counter(token for line in lines for token in basic_tokens(line))
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= MIN_WORD_COUNT and w not in chars]
    # One continuation piece per character, as in real WordPiece vocabularies, so an
    # unseen word always splits into pieces and only an unseen character becomes [UNK].
    pieces = [f"##{c}" for c in string.ascii_lowercase + string.digits] + [f"##{s}" for s in SUFFIXES]
    return SPECIALS_UNCASED + chars + words + pieces


def vocab_for(member: Member) -> tuple[list[str], list[str]]:
    """(vocabulary, corpus lines for its unigram prior)."""
    lines = read_lines(CORPORA[member.language])
    if member.language == "zh":
        return read_lines(DEFAULT_MODEL_DIR / "vocab.txt"), lines
    return english_vocab(lines), lines


def check_wordpiece(tokenizer) -> None:
    """The English vocabulary must split an unseen word into ## pieces and map Chinese to [UNK], as bert-base-uncased does."""
    pieces = tokenizer.tokenize("Unbelievably")
    if len(pieces) < 2 or not all(p.startswith("##") for p in pieces[1:]):
        raise ValueError(f"an unseen word should split into WordPiece pieces, got {pieces}")
    if set(tokenizer.tokenize("北京")) != {tokenizer.unk_token}:
        raise ValueError("Chinese characters should be [UNK] in the English vocabulary")


def write_tokenizer(out: Path, vocab: list[str], max_positions: int):
    # transformers 5 doesn't write vocab.txt, but 4.x's slow BertTokenizer needs it.
    vocab_path = out / "vocab.txt"
    vocab_path.write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(str(vocab_path), do_lower_case=True, model_max_length=max_positions)
    if len(tokenizer) != len(vocab):
        raise ValueError(f"{vocab_path}: the tokenizer holds {len(tokenizer)} tokens, not {len(vocab)}")
    tokenizer.save_pretrained(out)
    return tokenizer


def scale_like_trained(model, tokenizer, lines) -> None:
    """Query/key weights at QK_INIT_STD, LayerNorms off the identity, the decoder bias at the log-unigram prior of ``lines``."""
    for layer in model.bert.encoder.layer:
        for proj in (layer.attention.self.query, layer.attention.self.key):
            torch.nn.init.normal_(proj.weight, std=QK_INIT_STD)
    for name, module in model.named_modules():
        if name.endswith("LayerNorm"):
            torch.nn.init.normal_(module.weight, mean=1.0, std=LAYERNORM_STD)
            torch.nn.init.normal_(module.bias, std=LAYERNORM_STD)
    ids = [i for row in tokenizer(lines, add_special_tokens=False)["input_ids"] for i in row]
    log_freq = torch.bincount(torch.tensor(ids), minlength=model.config.vocab_size).float().log1p()
    with torch.no_grad():
        model.cls.predictions.bias.copy_(log_freq - log_freq[FIRST_REAL_ID:].mean())


def write_member(out_dir, member: Member, seed: int = SEED) -> Path:
    """save_pretrained one member: BertForMaskedLM, or its encoder alone (BertModel without pooler)."""
    from transformers import BertConfig, BertForMaskedLM
    from transformers.utils.logging import disable_progress_bar

    disable_progress_bar()
    out = Path(out_dir) / member.name
    out.mkdir(parents=True, exist_ok=True)
    vocab, lines = vocab_for(member)
    tokenizer = write_tokenizer(out, vocab, member.max_position_embeddings)
    if member.language == "en":
        check_wordpiece(tokenizer)
    config = BertConfig(
        vocab_size=len(vocab), num_hidden_layers=member.num_hidden_layers,
        max_position_embeddings=member.max_position_embeddings, type_vocab_size=member.type_vocab_size, **SHAPE,
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(config)
    scale_like_trained(model, tokenizer, lines)
    # BertForMaskedLM's encoder is a BertModel built with add_pooling_layer=False.
    (model if member.mlm_head else model.bert).save_pretrained(out)
    return out


def attention_score_range(folder, texts) -> dict[str, float]:
    """Max |q.k/sqrt(d)| over layers and heads at real and at padded keys, real queries, eager path."""
    from bertspec.models import loading

    bert = loading.load(folder, "eager")
    batch = bert.encode(texts)
    trace, _ = bert.trace(batch)
    real = batch.attention_mask.bool()
    query_rows = real[:, None, :, None]
    peaks = {"real keys": 0.0, "padded keys": 0.0}
    for step in trace.all("scores"):
        scores = step.tensor.abs()
        for where, keys in (("real keys", real), ("padded keys", ~real)):
            picked = scores.masked_select(query_rows & keys[:, None, None, :])
            if picked.numel():
                peaks[where] = max(peaks[where], picked.max().item())
    return peaks


def sample_texts(member: Member) -> list[str]:
    """A long and a short sentence of the member's language, so the batch has padded keys."""
    lines = read_lines(CORPORA[member.language])
    return [max(lines, key=len), lines[0]]


# The trained-magnitude member: the bundled model's width, but weights as large as training makes them. With std 0.5
# a query or key element is ~sqrt(64)*0.5 = 4, a score ~sqrt(16)*4*4/4 = 16 (tens at the tail), and each sublayer adds
# O(10) to the residual stream: the sizes on which a float32 rounding error of a few ulps becomes 1e-5 and more.
TRAINED_MAGNITUDE = "chinese-3l-trained-magnitude"
TRAINED_MAGNITUDE_SHAPE = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
                               max_position_embeddings=128, type_vocab_size=2, pad_token_id=0)
TRAINED_MAGNITUDE_STD = 0.5


def write_trained_magnitude(out_dir, seed: int = SEED) -> Path:
    """save_pretrained the trained-magnitude member: BertForMaskedLM, every weight matrix but the embeddings at std 0.5."""
    from transformers import BertConfig, BertForMaskedLM
    from transformers.utils.logging import disable_progress_bar

    disable_progress_bar()
    out = Path(out_dir) / TRAINED_MAGNITUDE
    out.mkdir(parents=True, exist_ok=True)
    vocab = read_lines(DEFAULT_MODEL_DIR / "vocab.txt")
    write_tokenizer(out, vocab, TRAINED_MAGNITUDE_SHAPE["max_position_embeddings"])
    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig(vocab_size=len(vocab), **TRAINED_MAGNITUDE_SHAPE))
    for name, weight in model.named_parameters():  # the decoder is tied to the word embeddings: left as drawn
        if weight.dim() == 2 and ".embeddings." not in name:
            torch.nn.init.normal_(weight, std=TRAINED_MAGNITUDE_STD)
    model.save_pretrained(out)
    return out


def write_zoo(out_dir) -> list[Path]:
    """Write every member of the zoo under ``out_dir``; one folder each, ZOO's first, then the trained-magnitude and the protein member."""
    from bertspec.builders import zoo_protein

    return ([write_member(out_dir, member) for member in ZOO]
            + [write_trained_magnitude(out_dir), zoo_protein.write_member(out_dir)])


def summary(folder, texts) -> str:
    """A member's size and its largest attention scores on ``texts``."""
    peaks = attention_score_range(folder, texts)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    return (f"  {folder.name}: {size:.1f} MiB; max |attention score| "
            + ", ".join(f"at {where} {value:.1f}" for where, value in peaks.items()))


def main(out_dir) -> None:
    start = time.perf_counter()
    folders = write_zoo(out_dir)
    print(f"wrote {len(folders)} checkpoints under {out_dir} in {time.perf_counter() - start:.1f}s")
    for member, folder in zip(ZOO, folders):
        print(summary(folder, sample_texts(member)))
    print(summary(folders[len(ZOO)], sample_texts(ZOO[-1])))  # a Chinese member: Chinese sentences
    from bertspec.builders import zoo_protein

    print(summary(folders[-1], zoo_protein.sample_texts()) + "; " + zoo_protein.learned(folders[-1]))
