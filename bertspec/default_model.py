"""Builder of the bundled default model: a tiny Chinese BERT in fixtures/default-model.

    python -m bertspec build-default-model [OUT_DIR]      # default: fixtures/default-model

How it is made: the vocabulary is bert-base-chinese's special-id layout ([PAD]=0,
[unused1..99], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103) followed by the sorted
characters of fixtures/corpus.zh.txt plus common punctuation, digits and a-z (490
tokens). A BertForPreTraining (hidden 64, 3 layers, 4 heads, FFN 100, 64 positions) is
trained for 1200 AdamW steps of BERT's pre-training on sentence pairs: MLM (15% of real
tokens, 80/10/10) plus next-sentence prediction (half the pairs consecutive lines of the
corpus, label 0; half with a random second sentence, label 1). Seeded and single-threaded,
so rebuilding gives byte-identical files (about 50 s on a 2-core CPU; built with
transformers 5, since 4.57 trains to slightly different weights). The folder holds the
encoder, the pooler, the MLM head and the NSP head, as a pre-trained BERT checkpoint does,
and loads with from_pretrained under transformers 4.57 and 5.x, eager or sdpa, into
BertForMaskedLM (dropping the pooler and NSP head as unused) or BertForPreTraining.

Why the weights are not degenerate: plain training from BERT's init leaves attention
nearly uniform (mean head entropy 2.18-2.32 vs log(11) = 2.40) and the decoder bias
near zero (|b| < 0.34; zeroing it changes 3 of 259 masked predictions). So query/key
weights start at std 0.2 and the decoder bias at the corpus log-unigram prior. NSP is
learned only late: after 400 or 800 steps its head still gives every pair p = 0.5.
Measured on the shipped model:
  - 北京是中国的首[MASK]。 -> 都 (p = 0.882; next 边 0.039, 京 0.014)
  - mean attention entropy per layer 0.83 / 1.05 / 1.06 (every head <= 1.38) vs 2.40
  - dropping the padding mask (4 [PAD] appended) moves real tokens' last hidden state
    by up to 0.78 (hidden values up to 2.8); with the mask the change is < 1e-6
  - on the first 60 corpus lines with 15% of their characters masked (75 positions),
    zeroing cls.predictions.bias changes 19 predictions, removing the head transform 40,
    zeroing position embeddings 56
  - zeroing token_type_ids on a sentence pair moves logits by up to 5.58
  - in every LayerNorm max|weight - 1| >= 0.071 (mean >= 0.022) and max|bias| >= 0.059
  - NSP over the corpus' 203 consecutive pairs and 202 random ones: mean p(B follows A)
    0.82 vs 0.22 (89% right)
"""

import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import BertConfig, BertForPreTraining, BertTokenizer

from bertspec import DEFAULT_MODEL_DIR, FIXTURES

CORPUS = FIXTURES / "corpus.zh.txt"
OUT_DIR = DEFAULT_MODEL_DIR

# bert-base-chinese's layout, so spec code can rely on the well-known ids
# [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103.
SPECIALS = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FIRST_REAL_ID = len(SPECIALS)
EXTRA_CHARS = "，。？！：；、0123456789abcdefghijklmnopqrstuvwxyz"

CONFIG = dict(
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=100,
    max_position_embeddings=64,
    type_vocab_size=2,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    pad_token_id=0,
)

SEED = 1234
STEPS = 1200  # NSP is learned only after ~1000 steps (at 800 p(B follows A) is still 0.5 for every pair)
BATCH_SIZE = 32
LR = 2e-3
MASK_PROB = 0.15
QK_INIT_STD = 0.2


def bert_config(vocab_size):
    return BertConfig(vocab_size=vocab_size, **CONFIG)


def read_corpus(path=CORPUS):
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_vocab(corpus_lines):
    chars = set("".join(corpus_lines)) | set(EXTRA_CHARS)
    return SPECIALS + sorted(c for c in chars if not c.isspace())


def init_weights(model, tokenizer, corpus_lines):
    # From BERT's default init (std 0.02) a few hundred steps leave every head
    # attending almost uniformly; large query/key weights make heads selective.
    for layer in model.bert.encoder.layer:
        for proj in (layer.attention.self.query, layer.attention.self.key):
            torch.nn.init.normal_(proj.weight, std=QK_INIT_STD)
    # Training barely moves the decoder bias from zero; starting it at the corpus
    # log-unigram prior gives it the token-frequency role it has in real checkpoints.
    ids = [i for line in tokenizer(corpus_lines, add_special_tokens=False)["input_ids"] for i in line]
    log_freq = torch.bincount(torch.tensor(ids), minlength=model.config.vocab_size).float().log1p()
    with torch.no_grad():
        model.cls.predictions.bias.copy_(log_freq - log_freq[FIRST_REAL_ID:].mean())
    return model


def sample_batch(tokenizer, corpus_lines, generator):
    # Sentence pairs, as BERT was pre-trained: half consecutive (next_sentence_label 0, B follows A), half with
    # a random second sentence (label 1), so segment B (token_type 1), the pooler and the NSP head are trained.
    n = len(corpus_lines)
    starts = torch.randint(n - 1, (BATCH_SIZE,), generator=generator).tolist()
    random_second = (torch.rand(BATCH_SIZE, generator=generator) < 0.5).tolist()
    others = torch.randint(n, (BATCH_SIZE,), generator=generator).tolist()
    encoded = [tokenizer(corpus_lines[i], corpus_lines[(j if j != i + 1 else j + 1) % n] if rand else corpus_lines[i + 1])
               for i, rand, j in zip(starts, random_second, others)]
    batch = tokenizer.pad(encoded, return_tensors="pt")
    batch["next_sentence_label"] = torch.tensor(random_second, dtype=torch.long)
    return batch


def mask_tokens(input_ids, vocab_size, generator):
    # BERT's recipe: pick 15% of real tokens; of those 80% -> [MASK], 10% -> random, 10% kept.
    chosen = (torch.rand(input_ids.shape, generator=generator) < MASK_PROB) & (input_ids >= FIRST_REAL_ID)
    labels = torch.where(chosen, input_ids, -100)
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(FIRST_REAL_ID, vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(chosen & (action < 0.8), SPECIALS.index("[MASK]"), input_ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, labels


def train(model, tokenizer, corpus_lines, seed=SEED):
    torch.manual_seed(seed)  # dropout
    generator = torch.Generator().manual_seed(seed)  # batches and masking
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / STEPS)
    model.train()
    for _ in range(STEPS):
        batch = sample_batch(tokenizer, corpus_lines, generator)
        batch["input_ids"], batch["labels"] = mask_tokens(batch["input_ids"], len(tokenizer), generator)
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@contextmanager
def reproducible():
    # The thread count changes float summation order and hence the trained weights;
    # one thread also keeps the build fast on a busy machine.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def build(out_dir=OUT_DIR, corpus_path=CORPUS, seed=SEED):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus_lines = read_corpus(corpus_path)
    vocab = build_vocab(corpus_lines)
    # transformers 5 doesn't write vocab.txt, but 4.x's slow BertTokenizer needs it.
    vocab_path = out_dir / "vocab.txt"
    vocab_path.write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab_path), model_max_length=CONFIG["max_position_embeddings"])
    assert len(tokenizer) == len(vocab), "tokenizer ignored vocab.txt"
    with reproducible():
        torch.manual_seed(seed)
        model = BertForPreTraining(bert_config(len(vocab)))
        init_weights(model, tokenizer, corpus_lines)
        train(model, tokenizer, corpus_lines, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    for file in out_dir.iterdir():
        file.chmod(0o644)  # transformers 5 writes model.safetensors readable by its owner only
    return model, tokenizer


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out_dir = Path(argv[0]) if argv else OUT_DIR
    start = time.perf_counter()
    build(out_dir)
    print(f"built {out_dir} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
