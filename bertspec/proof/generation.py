"""What chapter P8's claims ask of a decoder or T5: greedy continuations, the untrained twin a claim must beat.

The examples are the corpus sentence BERT's claims ask 首[MASK] of: a decoder
continues its prefix, T5 fills the hidden 都.
"""

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

from bertspec.models import generative

PREFIX, CONTINUATION = "北京是中国的", "首都。"
HIDDEN_SPAN = "北京是中国的首<extra_id_0>。"


def auto_class(model):
    return AutoModelForSeq2SeqLM if model.anatomy.kind == generative.ENCODER_DECODER else AutoModelForCausalLM


def untrained_twin(model):
    """A model of the bundled one's config with transformers' own random init: what its claims must beat."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return auto_class(model).from_config(AutoConfig.from_pretrained(model.origin.folder)).eval()


def one_per_length(texts: list[str]) -> list[str]:
    """The first text of each length, shortest first: a batch in which every row but the last is padded."""
    first = {}
    for text in texts:
        first.setdefault(len(text), text)
    return [first[n] for n in sorted(first)]


def continuations(model, tokenizer, prompts, max_new_tokens: int, padding_side: str = "left") -> list[list[int]]:
    """Greedy continuations of a batch of prompts, padded on the left unless told: each row's new ids up to and with
    its first eos."""
    tokenizer.padding_side = padding_side  # a decoder appends to the right end of each row, so pads go before
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    rows = out[:, batch["input_ids"].shape[1]:].tolist()
    return [row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row for row in rows]


def ending(tokenizer, text: str) -> list[int]:
    """What a decoder trained on the corpus writes after a prompt to finish ``text``: its ids, then eos."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
