"""Builder of the bundled models: a tiny Chinese BERT in fixtures/default-model, and its siblings
in the other BERT-family architectures in fixtures/family/<family>.

    python -m bertspec build-default-model [OUT_DIR] [--family FAMILY]
      # FAMILY: bert (default, into fixtures/default-model), roberta, distilbert, albert, electra,
      # modernbert (into fixtures/family/<family>), or all (each; into OUT_DIR/<family> if given)

How it is made: the vocabulary is bert-base-chinese's special-id layout ([PAD]=0,
[unused1..99], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103) followed by the sorted
characters of fixtures/corpus.zh.txt plus common punctuation, digits and a-z (490
tokens). A BertForPreTraining (hidden 64, 3 layers, 4 heads, FFN 100, 64 positions) is
trained for 1200 AdamW steps of BERT's pre-training on sentence pairs: MLM (15% of real
tokens, 80/10/10) plus next-sentence prediction (half the pairs consecutive lines of the
corpus, label 0; half with a random second sentence, label 1). Seeded and single-threaded,
so rebuilding gives byte-identical files (built with
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

The family models (FAMILIES: a config function and a few fields each) share the corpus, the
characters, BERT's character WordPiece tokenizer (as Chinese RoBERTa, ALBERT and ELECTRA checkpoints
do), the sizes (hidden 64, 3 layers, 4 heads, FFN 100, 64 positions, dropout 0.1), the init above
and the BERT build's sentence-pair batches and masking, trained with MLM alone for 400 steps (token
type 1 on segment B only where the family has token types):
  roberta     RobertaForMaskedLM; <s>=0, <pad>=1, </s>=2, <unk>=3, the characters, <mask>=390 (391
              tokens); pad 1, bos 0, eos 2, type_vocab_size 1, 66 positions (numbered from pad + 1);
              pairs <s> A </s> B </s>, no token_type_ids
  distilbert  DistilBertForMaskedLM; BERT's vocabulary; no token_type_ids
  albert      AlbertForMaskedLM; BERT's vocabulary; embedding_size 32 -> hidden 64, one layer shared
              by the 3 passes, gelu_new; bos/eos = [CLS]/[SEP]
  electra     ElectraForMaskedLM (a generator); BERT's vocabulary; embedding_size 32, embeddings_project
  modernbert  ModernBertForMaskedLM; BERT's vocabulary and tokenizer.json (transformers 5 loads
              ModernBERT's tokenizer from it alone); pad/cls/sep/bos/eos 0/101/102/101/102; head_dim 16;
              layer 0 global, layers 1-2 sliding with local_attention 8 (|i - j| <= 4, 9 tokens, less
              than a corpus sentence pair, about 20); GeGLU, intermediate_size 100 (Wi 64 -> 2 x 100);
              pre-LN, no biases but the decoder's; dropout 0.1 (ModernBERT's own default is 0)
Query/key weights (DistilBERT's q_lin/k_lin, ALBERT's shared query/key, the q and k thirds of
ModernBERT's Wqkv) start at std 0.2, the decoder bias (lm_head.bias, vocab_projector.bias,
predictions.bias, generator_lm_head.bias, decoder.bias) at the log-unigram prior, and ALBERT's and
ELECTRA's 32 -> 64 projection at std 0.2 as well. Each folder is 229-591 KB and builds
reproducibly (built with transformers 5: 4.57 trains ModernBERT to other weights, and its slow
tokenizer writes no tokenizer.json). Each loads with AutoTokenizer and <Family>ForMaskedLM under 4.57
and 5.x, eager or sdpa (ELECTRA on 4.57: eager only), with the decoder tied to the word embeddings and
identical logits on both versions. Measured, the same on both, on 北京是中国的首[MASK]。 (<mask> for
RoBERTa; 11 tokens, log 11 = 2.40), with 4 pads appended for the mask:
                 [MASK] ->           attention entropy   every head   mask dropped:    zero decoder bias:
                                     per layer           <=           max |d hidden|   changed of 75
  roberta     都 0.41 (京 0.10)      0.93 / 0.85 / 1.13  1.29         0.34             22
  distilbert  都 0.46 (京 0.08)      1.04 / 0.96 / 1.01  1.23         0.55             24
  albert      都 0.19 (的 0.09)      0.27 / 0.89 / 0.97  1.19         0.68             21
  electra     都 0.20 (的 0.08)      0.50 / 0.86 / 1.04  1.23         0.68             23
  modernbert  都 0.52 (边 0.06)      1.05 / 0.52 / 0.54  1.22         1.06             23
(with the mask, the pads move real tokens by < 1e-6; "changed of 75": predictions at 15% masked
characters of the first 60 corpus lines that zeroing the bias changes). With ALBERT's and ELECTRA's
projection at 0.02, layer 0 attended almost uniformly (2.35, 2.36). Making every ModernBERT layer
global moves a sentence pair's logits by up to 7.7. Under transformers 5's sdpa, a ModernBERT pad
more than 4 positions past the last real token has no key in its window, and its output differs from
eager's and 4.57's; at real tokens they agree.
"""

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Callable

import torch
from transformers import (
    AlbertConfig,
    AlbertForMaskedLM,
    BertConfig,
    BertForPreTraining,
    BertTokenizer,
    DistilBertConfig,
    DistilBertForMaskedLM,
    ElectraConfig,
    ElectraForMaskedLM,
    ModernBertConfig,
    ModernBertForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

from bertspec import FIXTURES
from bertspec.models.source import FAMILIES as FAMILY_NAMES, bundled_model_dir

CORPUS = FIXTURES / "corpus.zh.txt"

# bert-base-chinese's layout, so spec code can rely on the well-known ids
# [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103.
SPECIALS = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_SPECIALS = (SPECIALS, [])  # (before the characters, after them)
# roberta-base's layout: <s>=0, <pad>=1, </s>=2, <unk>=3 first, <mask> last.
ROBERTA_SPECIALS = (["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"])
ROBERTA_TOKENS = dict(cls_token="<s>", bos_token="<s>", sep_token="</s>", eos_token="</s>", pad_token="<pad>",
                      unk_token="<unk>", mask_token="<mask>")
EXTRA_CHARS = "，。？！：；、0123456789abcdefghijklmnopqrstuvwxyz"
# Families without token types: a tokenizer that emitted token_type_ids would break RoBERTa's
# one-row type embedding and 4.57's DistilBERT, and be silently ignored by ModernBERT.
NO_TOKEN_TYPES = dict(model_input_names=["input_ids", "attention_mask"])

MAX_LENGTH = 64
HIDDEN, LAYERS, HEADS, FFN, DROPOUT = 64, 3, 4, 100, 0.1
ENCODER = dict(
    hidden_size=HIDDEN,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    intermediate_size=FFN,
    hidden_dropout_prob=DROPOUT,
    attention_probs_dropout_prob=DROPOUT,
)
CONFIG = dict(
    **ENCODER,
    max_position_embeddings=MAX_LENGTH,
    type_vocab_size=2,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    pad_token_id=0,
)
EMBEDDING_SIZE = 32  # ALBERT's and ELECTRA's factorised embeddings, narrower than the hidden 64
# ModernBERT's own ratio (every third layer global, from layer 0), with a window of |i - j| <= 4:
# layers 1 and 2 see 9 tokens, less than a corpus sentence pair (about 20), in one step.
GLOBAL_ATTN_EVERY_N_LAYERS = 3
LOCAL_ATTENTION = 8

SEED = 1234
STEPS = 1200  # NSP is learned only after ~1000 steps (at 800 p(B follows A) is still 0.5 for every pair)
MLM_STEPS = 400  # the families trained with MLM alone, as the bundled BERT was before it had an NSP head
BATCH_SIZE = 32
LR = 2e-3
MASK_PROB = 0.15
QK_INIT_STD = 0.2


def bert_config(tokenizer):
    return BertConfig(vocab_size=len(tokenizer), **CONFIG)


def roberta_config(tokenizer):
    # RoBERTa numbers positions from padding_idx + 1, so MAX_LENGTH tokens need pad + 1 more rows (roberta-base: 514).
    positions = MAX_LENGTH + tokenizer.pad_token_id + 1
    return RobertaConfig(vocab_size=len(tokenizer), **ENCODER, max_position_embeddings=positions, type_vocab_size=1,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                         eos_token_id=tokenizer.sep_token_id)


def distilbert_config(tokenizer):
    return DistilBertConfig(vocab_size=len(tokenizer), dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                            dropout=DROPOUT, attention_dropout=DROPOUT, max_position_embeddings=MAX_LENGTH,
                            pad_token_id=tokenizer.pad_token_id)


def albert_config(tokenizer):
    # ALBERT's default bos/eos ids (2, 3) point into its SentencePiece layout; here they are [CLS] and [SEP].
    return AlbertConfig(vocab_size=len(tokenizer), embedding_size=EMBEDDING_SIZE, **ENCODER,
                        max_position_embeddings=MAX_LENGTH, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)


def electra_config(tokenizer):
    return ElectraConfig(vocab_size=len(tokenizer), embedding_size=EMBEDDING_SIZE, **ENCODER,
                         max_position_embeddings=MAX_LENGTH, pad_token_id=tokenizer.pad_token_id)


def modernbert_config(tokenizer):
    # ModernBERT's default special ids (50281-50283) lie outside a small vocabulary; every one is set here.
    special_ids = dict(pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
                       sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                       eos_token_id=tokenizer.sep_token_id)
    # intermediate_size is the GeGLU width: Wi maps 64 -> 2 x 100 (input and gate), Wo 100 -> 64.
    return ModernBertConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=MAX_LENGTH,
                            embedding_dropout=DROPOUT, attention_dropout=DROPOUT, mlp_dropout=DROPOUT,
                            global_attn_every_n_layers=GLOBAL_ATTN_EVERY_N_LAYERS, local_attention=LOCAL_ATTENTION,
                            **special_ids)


def weights(layers, *paths):
    """The weights at ``paths`` of every layer, layer by layer."""
    return [attrgetter(path)(layer) for layer in layers for path in paths]


BERT_QUERY_KEY = ("attention.self.query.weight", "attention.self.key.weight")


@dataclass(frozen=True)
class Family:
    """What one architecture changes in the build; corpus, sizes, masking and optimiser are shared."""

    model_class: type
    config: Callable  # tokenizer -> config, its special ids read from the tokenizer
    query_key: Callable  # model -> the query and key weights to start at QK_INIT_STD
    projection: Callable = lambda model: []  # model -> the E -> H projection of factorised embeddings, if any
    specials: tuple = BERT_SPECIALS  # the special tokens before and after the characters
    tokenizer_kwargs: dict = field(default_factory=dict)
    steps: int = MLM_STEPS
    nsp: bool = False  # trained with next-sentence prediction as well as MLM


FAMILIES = {
    "bert": Family(BertForPreTraining, bert_config, lambda m: weights(m.bert.encoder.layer, *BERT_QUERY_KEY),
                   steps=STEPS, nsp=True),
    "roberta": Family(RobertaForMaskedLM, roberta_config, lambda m: weights(m.roberta.encoder.layer, *BERT_QUERY_KEY),
                      specials=ROBERTA_SPECIALS, tokenizer_kwargs={**ROBERTA_TOKENS, **NO_TOKEN_TYPES}),
    "distilbert": Family(DistilBertForMaskedLM, distilbert_config,
                         lambda m: weights(m.distilbert.transformer.layer, "attention.q_lin.weight",
                                           "attention.k_lin.weight"),
                         tokenizer_kwargs=NO_TOKEN_TYPES),
    # ALBERT's one layer, shared by all three passes (its default num_hidden_groups = inner_group_num = 1).
    "albert": Family(AlbertForMaskedLM, albert_config, lambda m: weights(
        m.albert.encoder.albert_layer_groups[0].albert_layers, "attention.query.weight", "attention.key.weight"),
        projection=lambda m: [m.albert.encoder.embedding_hidden_mapping_in.weight]),
    "electra": Family(ElectraForMaskedLM, electra_config, lambda m: weights(m.electra.encoder.layer, *BERT_QUERY_KEY),
                      projection=lambda m: [m.electra.embeddings_project.weight]),
    # ModernBERT fuses the projections into Wqkv, whose output rows are q, k, v: the first two thirds are q and k.
    "modernbert": Family(ModernBertForMaskedLM, modernbert_config,
                         lambda m: [layer.attn.Wqkv.weight[: 2 * HIDDEN] for layer in m.model.layers],
                         tokenizer_kwargs=NO_TOKEN_TYPES),
}
assert tuple(FAMILIES) == FAMILY_NAMES, "every family of the anatomy has a builder"


def read_corpus(path=CORPUS):
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_vocab(corpus_lines, specials=BERT_SPECIALS):
    before, after = specials
    chars = set("".join(corpus_lines)) | set(EXTRA_CHARS)
    return before + sorted(c for c in chars if not c.isspace()) + after


def init_weights(model, family, tokenizer, corpus_lines, chars):
    # From BERT's default init (std 0.02) a few hundred steps leave every head
    # attending almost uniformly; large query/key weights make heads selective.
    for weight in family.query_key(model):
        torch.nn.init.normal_(weight, std=QK_INIT_STD)
    # Factorised embeddings (width 32) reach layer 0 through a projection that, at std 0.02, leaves them
    # a tenth of a hidden state's scale, and layer 0 attending uniformly (entropy 0.98 log T); at std 0.2
    # its output has about unit scale, as BERT's LayerNorm-ed embeddings do.
    for weight in family.projection(model):
        torch.nn.init.normal_(weight, std=QK_INIT_STD)
    # Training barely moves the decoder bias from zero; starting it at the corpus
    # log-unigram prior gives it the token-frequency role it has in real checkpoints.
    ids = [i for line in tokenizer(corpus_lines, add_special_tokens=False)["input_ids"] for i in line]
    log_freq = torch.bincount(torch.tensor(ids), minlength=model.config.vocab_size).float().log1p()
    with torch.no_grad():
        model.get_output_embeddings().bias.copy_(log_freq - log_freq[chars].mean())
    return model


def sample_batch(tokenizer, corpus_lines, generator):
    # Sentence pairs, as BERT was pre-trained: half consecutive (next_sentence_label 0, B follows A), half with
    # a random second sentence (label 1), so segment B (token_type 1), the pooler and the NSP head are trained.
    # Families without NSP drop the label; without token types their tokenizer emits none.
    n = len(corpus_lines)
    starts = torch.randint(n - 1, (BATCH_SIZE,), generator=generator).tolist()
    random_second = (torch.rand(BATCH_SIZE, generator=generator) < 0.5).tolist()
    others = torch.randint(n, (BATCH_SIZE,), generator=generator).tolist()
    encoded = [tokenizer(corpus_lines[i], corpus_lines[(j if j != i + 1 else j + 1) % n] if rand else corpus_lines[i + 1])
               for i, rand, j in zip(starts, random_second, others)]
    batch = tokenizer.pad(encoded, return_tensors="pt")
    batch["next_sentence_label"] = torch.tensor(random_second, dtype=torch.long)
    return batch


def mask_tokens(input_ids, chars, mask_id, generator):
    # BERT's recipe: pick 15% of real tokens (ids in chars); of those 80% -> [MASK], 10% -> random, 10% kept.
    is_char = (input_ids >= chars.start) & (input_ids < chars.stop)
    chosen = (torch.rand(input_ids.shape, generator=generator) < MASK_PROB) & is_char
    labels = torch.where(chosen, input_ids, -100)
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(chars.start, chars.stop, input_ids.shape, generator=generator)
    masked = torch.where(chosen & (action < 0.8), mask_id, input_ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, labels


def train(model, family, tokenizer, corpus_lines, chars, seed=SEED):
    torch.manual_seed(seed)  # dropout
    generator = torch.Generator().manual_seed(seed)  # batches and masking
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / family.steps)
    model.train()
    for _ in range(family.steps):
        batch = sample_batch(tokenizer, corpus_lines, generator)
        if not family.nsp:
            del batch["next_sentence_label"]
        batch["input_ids"], batch["labels"] = mask_tokens(batch["input_ids"], chars, tokenizer.mask_token_id, generator)
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


def build(out_dir, family="bert", corpus_path=CORPUS, seed=SEED):
    spec = FAMILIES[family]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus_lines = read_corpus(corpus_path)
    vocab = build_vocab(corpus_lines, spec.specials)
    chars = range(len(spec.specials[0]), len(vocab) - len(spec.specials[1]))
    # transformers 5 doesn't write vocab.txt, but 4.x's slow BertTokenizer needs it.
    vocab_path = out_dir / "vocab.txt"
    vocab_path.write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    # Every family keeps BERT's character WordPiece tokenizer, as Chinese RoBERTa, ALBERT and ELECTRA
    # checkpoints do; transformers 5 also writes the tokenizer.json that it needs for ModernBERT.
    tokenizer = BertTokenizer(str(vocab_path), model_max_length=MAX_LENGTH, **spec.tokenizer_kwargs)
    assert len(tokenizer) == len(vocab), "tokenizer ignored vocab.txt"
    with reproducible():
        torch.manual_seed(seed)
        model = spec.model_class(spec.config(tokenizer))
        init_weights(model, spec, tokenizer, corpus_lines, chars)
        train(model, spec, tokenizer, corpus_lines, chars, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    for file in out_dir.iterdir():
        file.chmod(0o644)  # transformers 5 writes model.safetensors readable by its owner only
    return model, tokenizer


def destinations(out_dir, family):
    """{family: folder}: the fixture folders by default; out_dir, or for "all" out_dir/<family>, when given."""
    names = list(FAMILIES) if family == "all" else [family]
    if out_dir is None:
        return {name: bundled_model_dir(name) for name in names}
    return {name: Path(out_dir) / name if family == "all" else Path(out_dir) for name in names}


def main(out_dir=None, family="bert"):
    for name, out in destinations(out_dir, family).items():
        start = time.perf_counter()
        build(out, name)
        print(f"built {name} in {out} in {time.perf_counter() - start:.1f}s")
