"""The zoo's domain-vocabulary member: a protein BERT with ProtBert's 30-token vocabulary, trained a little.

Its vocabulary is neither Chinese nor English (every example sentence of both
languages is mostly [UNK]), so the spec runs on sentences spelled with the
vocabulary's own letters (bertspec.models.inputs.vocabulary_texts). The head is trained,
not random, so what it predicts means something:

  vocabulary  ProtBert's: [PAD] [UNK] [CLS] [SEP] [MASK], the 20 standard residues
              by frequency, then X U B Z O; uppercase, do_lower_case False, one
              space between residues (as ProtBert's users write sequences)
  corpus      seeded synthetic proteins: each starts with M; each next residue
              is its predecessor's fixed successor (a permutation, SUCCESSOR)
              with probability FOLLOW, else drawn from a skewed background; so a
              masked residue is predictable from its neighbours, not from the
              residue counts alone
  shape       4 layers, hidden 128, 4 heads of 32, FFN 512, 512 positions, two
              token types (ProtBert's type_vocab_size); BertForMaskedLM
  training    STEPS AdamW steps of MLM (15%, 80/10/10: default_model.mask_tokens),
              seeded and single-threaded (default_model.reproducible), so a
              rebuild gives byte-identical files

What it learned (``python -m bertspec zoo`` prints it): on 383 masked residues
of 128 held-out sequences the head is right 61.4% of the time, against 9.1% for
always guessing the most frequent residue and 72.6% for the corpus's own rule
(the successor of the true left neighbour).

Why this size: four layers leave several layers for the claims that compare
them, and at width 128 the whole spec runs on it and it trains within CI's
budget; a real protein BERT (ProtBert: 30
layers x 1024) would show the mechanisms no differently.
"""

import random
from pathlib import Path

import torch

NAME = "protein-4l-mlm"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
RESIDUES = "LAGVESIKRDTPNQFYMHCW"  # the 20 standard amino acids, in ProtBert's vocabulary order (most frequent first)
RARE = "XUBZO"  # unknown, selenocysteine, ambiguous N/D, ambiguous Q/E, pyrrolysine: in the vocabulary, not the corpus
VOCAB = SPECIALS + list(RESIDUES) + list(RARE)
REAL_IDS = range(len(SPECIALS), len(VOCAB))  # what masking may pick and a random replacement may draw

SHAPE = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
             max_position_embeddings=512, type_vocab_size=2, pad_token_id=0)
FOLLOW = 0.7  # the share of residues that are their predecessor's successor: the structure the head can learn
# Each residue's successor is the one 7 places on in RESIDUES: 7 is prime to 20, so the successors run through all 20
# residues in one cycle, and no short loop (K N K N ...) repeats within a sequence.
SUCCESSOR = {a: RESIDUES[(i + 7) % len(RESIDUES)] for i, a in enumerate(RESIDUES)}
BACKGROUND = [1 / (i + 4) for i in range(len(RESIDUES))]  # skewed like real proteins': L about 13%, W about 2%
LENGTHS = (8, 32)  # residues per sequence: varied, so batches are padded; short, so the training stays quick
TRAIN_SEQUENCES, HELD_OUT_SEQUENCES = 2048, 128
STEPS, BATCH_SIZE, LR = 400, 24, 2e-3  # 300 x 32 learned less (0.60), and lr 3e-3 much less (0.38)
SEED, HELD_OUT_SEED, EVAL_SEED = 0, 1, 2


def sequence(rng: random.Random) -> str:
    """One synthetic protein, residues one space apart: M, then each residue its predecessor's successor or background."""
    residues = ["M"]
    for _ in range(rng.randint(*LENGTHS) - 1):
        follows = rng.random() < FOLLOW
        residues.append(SUCCESSOR[residues[-1]] if follows else rng.choices(RESIDUES, BACKGROUND)[0])
    return " ".join(residues)


def corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [sequence(rng) for _ in range(n)]


def write_tokenizer(out: Path):
    from transformers import BertTokenizer

    # transformers 5 doesn't write vocab.txt, but 4.x's slow BertTokenizer needs it.
    vocab_path = out / "vocab.txt"
    vocab_path.write_text("".join(token + "\n" for token in VOCAB), encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab_path), do_lower_case=False, model_max_length=SHAPE["max_position_embeddings"])
    if len(tokenizer) != len(VOCAB):
        raise ValueError(f"{vocab_path}: the tokenizer holds {len(tokenizer)} tokens, not {len(VOCAB)}")
    tokenizer.save_pretrained(out)
    return tokenizer


def train(model, tokenizer, lines: list[str]) -> None:
    """STEPS steps of MLM on random batches of ``lines``; batches, masking and dropout seeded."""
    from bertspec.builders.default_model import mask_tokens

    encoded = tokenizer(lines)["input_ids"]
    torch.manual_seed(SEED)  # dropout
    generator = torch.Generator().manual_seed(SEED)  # batches and masking
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / STEPS)
    model.train()
    for _ in range(STEPS):
        picked = torch.randint(len(encoded), (BATCH_SIZE,), generator=generator).tolist()
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in picked]}, return_tensors="pt")
        inputs, labels = mask_tokens(batch["input_ids"], REAL_IDS, tokenizer.mask_token_id, generator)
        loss = model(input_ids=inputs, attention_mask=batch["attention_mask"], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()


def write_member(out_dir) -> Path:
    """Build, train and save_pretrained the member into ``out_dir``/NAME."""
    from transformers import BertConfig, BertForMaskedLM

    from bertspec.builders.default_model import reproducible

    out = Path(out_dir) / NAME
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(out)
    with reproducible():
        torch.manual_seed(SEED)
        model = BertForMaskedLM(BertConfig(vocab_size=len(VOCAB), **SHAPE))
        train(model, tokenizer, corpus(TRAIN_SEQUENCES, SEED))
    model.save_pretrained(out)
    return out


def held_out_accuracy(folder) -> dict[str, float]:
    """Masked-residue accuracy on held-out sequences (15% of residues, each replaced by [MASK], seeded), beside two
    guesses that need no model: always the training corpus's most frequent residue (the majority baseline), and
    the corpus's own rule, the successor of the true left neighbour (M after [CLS]): a yardstick of what the structure
    allows (a learner that also reads the right neighbour may do a little better)."""
    from transformers import AutoTokenizer, BertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertForMaskedLM.from_pretrained(folder).eval()
    batch = tokenizer(corpus(HELD_OUT_SEQUENCES, HELD_OUT_SEED), padding=True, return_tensors="pt")
    ids = batch["input_ids"]
    real = (ids >= REAL_IDS.start) & (ids < REAL_IDS.stop)
    chosen = real & (torch.rand(ids.shape, generator=torch.Generator().manual_seed(EVAL_SEED)) < 0.15)
    with torch.no_grad():
        logits = model(input_ids=ids.masked_fill(chosen, tokenizer.mask_token_id), attention_mask=batch["attention_mask"]).logits
    truth = ids[chosen]
    return {"masked residues": int(chosen.sum()), "model": (logits.argmax(-1)[chosen] == truth).float().mean().item(),
            "majority baseline": (truth == majority_residue(tokenizer)).float().mean().item(),
            "corpus rule": (rule_guess(tokenizer, ids)[chosen] == ids[chosen]).float().mean().item()}


def rule_guess(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """At every position after the first, the generating rule's guess from the true left neighbour: M after [CLS],
    else its SUCCESSOR ([PAD] elsewhere)."""
    successor = torch.full((len(VOCAB),), tokenizer.pad_token_id)
    successor[tokenizer.cls_token_id] = tokenizer.convert_tokens_to_ids("M")
    for a, b in SUCCESSOR.items():
        successor[tokenizer.convert_tokens_to_ids(a)] = tokenizer.convert_tokens_to_ids(b)
    return torch.cat([torch.full_like(ids[:, :1], tokenizer.pad_token_id), successor[ids[:, :-1]]], dim=1)


def majority_residue(tokenizer) -> int:
    """The most frequent residue id of the training corpus."""
    ids = [i for row in tokenizer(corpus(TRAIN_SEQUENCES, SEED), add_special_tokens=False)["input_ids"] for i in row]
    return int(torch.bincount(torch.tensor(ids)).argmax())


def learned(folder) -> str:
    """What the zoo command prints to show the head learned."""
    a = held_out_accuracy(folder)
    return (f"masked-residue accuracy on {a['masked residues']} held-out positions {a['model']:.3f}, vs "
            f"{a['majority baseline']:.3f} always guessing the most frequent residue and {a['corpus rule']:.3f} "
            "for the corpus's own rule")


def sample_texts() -> list[str]:
    """A long and a short held-out sequence, so the batch has padded keys."""
    lines = corpus(HELD_OUT_SEQUENCES, HELD_OUT_SEED)
    return [max(lines, key=len), min(lines, key=len)]
