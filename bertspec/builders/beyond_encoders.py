"""Builder of chapter P8's bundled models: two decoders and an encoder-decoder beside the BERT family, in
fixtures/family/<name>, trained on the same corpus and the same characters.

    python -m bertspec build-default-model [OUT_DIR] --family gpt2|llama|t5

Their names are source.BEYOND_ENCODERS (DECODERS, ENCODER_DECODERS), kept out of anatomy.FAMILIES so that
the encoder claims of P1-P7 do not run on them. Shared with the BERT family (default_model.py): the corpus,
its characters (one token each, lowercased, spaces dropped; a tokenizer.json read as PreTrainedTokenizerFast
by transformers 4.57 and 5.x), hidden 64, 4 heads, FFN 100, 64 positions, dropout 0.1 where the family has
dropout, batches of 32 lines, AdamW at 2e-3 decaying linearly, seed 1234, one thread: rebuilding gives
byte-identical files (built with transformers 5.25). Each family keeps its own conventions:
  gpt2   GPT2LMHeadModel, 3 layers; learned absolute positions, pre-LN, GELU MLP, fused q/k/v (Conv1D),
         tied output layer. <|endoftext|> after the characters (387 tokens) is bos, eos, unk and pad, as
         GPT-2 has no other special token and its recipes pad with eos: padding is then told from a real
         eos only by attention_mask, and labels must be -100 where the mask is 0, not where the id is pad's.
         The tokenizer adds nothing and pads on the right (GPT-2's default).
  llama  LlamaForCausalLM, 3 layers; rotary positions, RMSNorm, SwiGLU MLP (100), grouped-query attention:
         4 query heads share 2 key/value heads; untied output layer, no biases, no dropout. <unk>=0, <s>=1,
         </s>=2 (LLaMA 1-2's layout) and <pad>=3 of its own, so pad differs from eos and padding shows in
         input_ids as well (390 tokens). The tokenizer prepends <s> and pads on the left (LlamaTokenizer's
         default). LLaMA rather than Qwen2: transformers builds Qwen2 from LLaMA's modules (modular_qwen2.py)
         adding only biases on q/k/v, so what is shown on LLaMA holds for Qwen2 and Mistral too; and LLaMA's
         tokenizer poses the pad question (no pad token, bos prepended) that Qwen2's does not.
  t5     T5ForConditionalGeneration, 2 encoder + 2 decoder layers; relative position buckets (16, max distance
         32: distances 0-3 exact, 4-31 log-spaced, per direction in the encoder), RMS-style LayerNorm, ReLU
         FFN, scores not divided by sqrt(d_kv), tied embeddings. <pad>=0 (the decoder's start), </s>=1,
         <unk>=2, the characters, <extra_id_9> .. <extra_id_0> last (399 tokens), as t5-small's layout; the
         tokenizer appends </s>. Trained by span corruption: about 15% of a line's characters in spans of
         about 3, each replaced by the next sentinel; the target is each sentinel and the span it hides, then
         </s> (the text may end with kept characters, where T5 always ends on a span: every line ends in 。).
No BART: what it does otherwise than T5 is shown elsewhere, on the model that has it. Its learned absolute
positions (offset by 2) are GPT-2's and BERT's question; its scores are divided by sqrt(d_head), as BERT's; its
decoder starts from </s> rather than <pad>, a value the shift claim reads from config.decoder_start_token_id
rather than assumes; its cross-attention mask is built from the encoder's padding by the same helper as T5's
(masking_utils.create_bidirectional_mask in transformers 5).
The decoders train 1000 steps as causal LMs on single lines each followed by eos (right-padded, labels -100
on padding); T5 2000 steps (see T5_STEPS). Query/key weights of the decoders start at std 0.2, as the BERT
family's: from the default 0.02, after training, mean attention entropy per layer over the corpus was
0.98 / 1.02 / 0.97 (GPT-2) and 1.60 / 1.48 / 1.57 (LLaMA, all but uniform) against a uniform 1.66 / 1.74
(mean log of each causal row's key count). T5 keeps its own init, whose smaller query weights stand in for
the missing score scaling. 492 KB (gpt2), 600 KB (llama), 724 KB (t5); each built in 40-120 s here.
Measured on the shipped models, against an untrained model of the same config (in brackets):
                    next-token accuracy   second half of each   attention entropy   北京是中国的 ->
                    (teacher-forced)      line, greedy, exact   per layer
  gpt2 (118,572)    0.934 (0.006)         190 / 204 (0)         0.56 / 0.65 / 0.54  首都。<|endoftext|>
  llama (144,832)   0.850 (0.004)         190 / 204 (0)         0.59 / 0.80 / 0.72  首都。</s>
(LLaMA's accuracy counts the first character after <s>, which GPT-2, with no bos, is never asked.)
我喜欢 -> 喝茶。 (gpt2), 读书。 (llama), both corpus lines. A batch of 北京是中国的 / 东京 / 巴黎是法国 padded on
the left continues each row as it continues alone; padded on the right, GPT-2 writes 巴黎是法国首都。 and
stops 东京 at once, LLaMA writes 东京一个小时有六.
  t5 (175,936): the corpus lines with spans hidden by another seed (99): targets written exactly 104 / 204
  (0), teacher-forced target accuracy 0.842 (0.015); 北京是中国的首<extra_id_0>。 -> <extra_id_0>都,
  巴黎是<extra_id_0>的首都。 -> 国 (法国 hidden), <extra_id_0>是日本的首都。 -> 京 (东京): it prefers
  one-character spans. Attention entropy: encoder 0.64 / 0.76 (uniform over 11 tokens 2.40),
  cross-attention 1.70 / 1.66.
Under transformers 4.57 and 5.25, eager and sdpa, all load with from_pretrained (local_files_only) and give
identical logits at real tokens (eager: equal bit for bit across versions; sdpa within 3e-6), except that
4.57's T5 has no sdpa (from_pretrained raises ValueError). At the query rows of left padding, where every key
is hidden, eager and sdpa (and 4.57's and 5's eager for GPT-2) return different values, up to 11.6 apart.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from bertspec.builders.default_model import (
    BATCH_SIZE, DROPOUT, FFN, HEADS, HIDDEN, LR, MAX_LENGTH, NO_TOKEN_TYPES, QK_INIT_STD, SEED, build_vocab,
    read_corpus, reproducible,
)
from bertspec.models.source import BEYOND_ENCODERS, bundled_model_dir

DECODER_LAYERS = 3  # as the BERT family's encoders
T5_LAYERS = 2  # encoder and decoder each: 4 blocks in all, about the encoders' 3 in weights
KV_HEADS = 2  # LLaMA's grouped-query attention: 4 query heads share 2 key/value heads, 2 each
# T5's relative position buckets, small for sentences of about 10 characters: 8 per direction in the encoder,
# distances 0-3 each their own, 4-31 in log-spaced buckets; the decoder's 16 look back only (0-7 exact).
RELATIVE_BUCKETS, RELATIVE_MAX_DISTANCE = 16, 32
SENTINELS = 10  # <extra_id_0> .. <extra_id_9>: a corpus line of at most 16 characters has at most 2 spans
NOISE_DENSITY, MEAN_SPAN = 0.15, 3  # T5's span corruption: 15% of the characters, in spans of 3 on average
STEPS = 1000  # the decoders: each line is ~10 characters to predict
# T5 predicts only the hidden ~15% of a line (about 2 characters), so it learns from fewer targets per step:
# after 1000 steps greedy decoding filled the spans of 72 of the 204 corpus lines (hidden with another seed)
# exactly, after 2000 steps of 104.
T5_STEPS = 2000

# GPT-2's one special token, <|endoftext|>, after its vocabulary: bos, eos and unk alike (as gpt2's own
# tokenizer_config.json), and pad too, as every GPT-2 fine-tuning recipe sets it: GPT-2 has no pad token.
ENDOFTEXT = "<|endoftext|>"
GPT2_SPECIALS = ([], [ENDOFTEXT])
GPT2_TOKENS = dict(bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT, pad_token=ENDOFTEXT)
# LLaMA (1 and 2)'s SentencePiece layout <unk>=0, <s>=1, </s>=2, plus a <pad> of its own (LLaMA has none), so that
# pad differs from eos: padding is then visible in input_ids too, where GPT-2's is told only by attention_mask.
LLAMA_SPECIALS = (["<unk>", "<s>", "</s>", "<pad>"], [])
LLAMA_TOKENS = dict(unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
# T5's layout: <pad>=0 (also the decoder's start token), </s>=1, <unk>=2, the pieces, then the sentinels
# from <extra_id_N-1> down to <extra_id_0>, the last id, as t5-small's 32099.
T5_SENTINELS = [f"<extra_id_{i}>" for i in reversed(range(SENTINELS))]
T5_SPECIALS = (["<pad>", "</s>", "<unk>"], T5_SENTINELS)
T5_TOKENS = dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def character_tokenizer(vocab, specials, tokens: dict, template: str | None,
                        padding_side: str) -> PreTrainedTokenizerFast:
    """One token per character, as the BERT family's vocabulary (lowercased, spaces dropped); ``template`` adds the
    family's special tokens around a text ($A), as its own tokenizer does.

    GPT-2 and LLaMA split text into byte-level BPE and SentencePiece pieces; with the BERT family's characters as
    the pieces, a prediction here is a character there, and the corpus is the one the encoders learned.
    """
    ids = {token: i for i, token in enumerate(vocab)}
    backend = Tokenizer(models.WordLevel(ids, unk_token=tokens["unk_token"]))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Split(Regex("."), behavior="isolated")])
    backend.decoder = decoders.Fuse()
    # Typed in a text, a special token is that token, not its characters (<extra_id_0> in a text to fill).
    before, after = specials
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in [*before, *after]])
    if template:
        specials = [(token, ids[token]) for token in template.split() if token != "$A"]
        backend.post_processor = processors.TemplateProcessing(single=template, special_tokens=specials)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=MAX_LENGTH,
                                        padding_side=padding_side, **NO_TOKEN_TYPES, **tokens)
    assert len(tokenizer) == len(vocab), "a special token is missing from the vocabulary"
    return tokenizer


def gpt2_config(tokenizer):
    return GPT2Config(vocab_size=len(tokenizer), n_embd=HIDDEN, n_layer=DECODER_LAYERS, n_head=HEADS, n_inner=FFN,
                      n_positions=MAX_LENGTH, resid_pdrop=DROPOUT, embd_pdrop=DROPOUT, attn_pdrop=DROPOUT,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)


def llama_config(tokenizer):
    # LLaMA has no dropout and unties its output layer (lm_head) from the embeddings, as LLaMA 1-3.1 do.
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=DECODER_LAYERS,
                       num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, intermediate_size=FFN,
                       max_position_embeddings=MAX_LENGTH, tie_word_embeddings=False,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


def t5_config(tokenizer):
    # The original T5 (t5-small): ReLU feed-forward, tied embeddings, decoding starts from <pad>.
    return T5Config(vocab_size=len(tokenizer), d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=FFN, num_heads=HEADS,
                    num_layers=T5_LAYERS, num_decoder_layers=T5_LAYERS, dropout_rate=DROPOUT,
                    relative_attention_num_buckets=RELATIVE_BUCKETS,
                    relative_attention_max_distance=RELATIVE_MAX_DISTANCE, feed_forward_proj="relu",
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                    decoder_start_token_id=tokenizer.pad_token_id)


def gpt2_query_key(model):
    # GPT-2 fuses q, k and v into one Conv1D, weight [in, 3 x out]: the first two thirds of its columns are q and k.
    return [block.attn.c_attn.weight[:, : 2 * HIDDEN] for block in model.transformer.h]


def llama_query_key(model):
    return [w for layer in model.model.layers for w in (layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight)]


def causal_lm_batch(tokenizer, lines):
    """Each line, then eos, right-padded; labels -100 where attention_mask is 0 (not where the id is pad's: GPT-2's
    pad is its eos, which the model must learn to emit). The model shifts the labels itself."""
    rows = [ids + [tokenizer.eos_token_id] for ids in tokenizer(lines)["input_ids"]]
    batch = tokenizer.pad({"input_ids": rows}, padding_side="right", return_tensors="pt")
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return batch


def random_segmentation(total: int, parts: int, generator) -> list[int]:
    """``total`` split at random into ``parts`` positive lengths (T5's random_segmentation)."""
    cuts = sorted((torch.randperm(total - 1, generator=generator)[: parts - 1] + 1).tolist())
    return [b - a for a, b in zip([0, *cuts], [*cuts, total])]


def corrupt_spans(ids: list[int], sentinel_ids: list[int], generator) -> tuple[list[int], list[int]]:
    """T5's span corruption of one line: about 15% of its characters in spans of about 3, each span replaced by the
    next sentinel in the input; the target lists each sentinel followed by the span it hides.

    T5 always ends a text with a span; a corpus line always ends with its full stop, so here the text may begin and
    end with kept characters (the kept lengths before the first and after the last span may be 0).
    """
    noise = max(1, round(len(ids) * NOISE_DENSITY))
    spans = max(1, round(noise / MEAN_SPAN))
    span_lengths = random_segmentation(noise, spans, generator)
    kept = random_segmentation(len(ids) - noise + 2, spans + 1, generator)
    kept[0], kept[-1] = kept[0] - 1, kept[-1] - 1
    inputs, targets, at = [], [], 0
    for sentinel, before, length in zip(sentinel_ids, kept, span_lengths):
        inputs += ids[at: at + before] + [sentinel]
        targets += [sentinel] + ids[at + before: at + before + length]
        at += before + length
    return inputs + ids[at:], targets


def span_corruption_batch(tokenizer, lines, generator):
    """Corrupted lines as the encoder's input (then </s>, as T5's tokenizer adds), their spans as labels (then </s>);
    the model shifts the labels right behind <pad> into decoder_input_ids itself."""
    sentinel_ids = tokenizer.convert_tokens_to_ids(T5_SENTINELS[::-1])
    pairs = [corrupt_spans(ids, sentinel_ids, generator)
             for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]]
    eos = [tokenizer.eos_token_id]
    batch = tokenizer.pad({"input_ids": [inputs + eos for inputs, _ in pairs]}, return_tensors="pt")
    labels = tokenizer.pad({"input_ids": [targets + eos for _, targets in pairs]}, return_tensors="pt")
    batch["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
    return batch


@dataclass(frozen=True)
class Architecture:
    """What one decoder or encoder-decoder changes in the build; corpus, characters, sizes, optimiser are shared."""

    model_class: type
    config: Callable  # tokenizer -> config
    specials: tuple  # the special tokens before and after the characters
    tokens: dict  # the tokenizer's special tokens
    template: str | None  # the special tokens the tokenizer adds around a text
    padding_side: str  # the tokenizer's default, as the family's own tokenizer
    batch: Callable  # (tokenizer, lines, generator) -> one training batch
    query_key: Callable = lambda model: []  # model -> the query and key weights to start at QK_INIT_STD
    steps: int = STEPS


ARCHITECTURES = {
    # GPT-2's tokenizer adds nothing and pads on the right by default.
    "gpt2": Architecture(GPT2LMHeadModel, gpt2_config, GPT2_SPECIALS, GPT2_TOKENS, None, "right",
                         lambda tokenizer, lines, generator: causal_lm_batch(tokenizer, lines), gpt2_query_key),
    # LLaMA's tokenizer prepends <s> and pads on the left (LlamaTokenizer.padding_side).
    "llama": Architecture(LlamaForCausalLM, llama_config, LLAMA_SPECIALS, LLAMA_TOKENS, "<s> $A", "left",
                          lambda tokenizer, lines, generator: causal_lm_batch(tokenizer, lines), llama_query_key),
    # T5's tokenizer appends </s>. T5 keeps its own init: scores are not divided by sqrt(d_kv), so its query
    # weights start at std (d_model x d_kv)^-0.5 instead, smaller by that factor.
    "t5": Architecture(T5ForConditionalGeneration, t5_config, T5_SPECIALS, T5_TOKENS, "$A </s>", "right",
                       span_corruption_batch, steps=T5_STEPS),
}
assert tuple(ARCHITECTURES) == BEYOND_ENCODERS, "every bundled decoder and encoder-decoder has a builder"


def generation_config(config) -> GenerationConfig:
    """Greedy decoding with the model's own special ids, so that generate() needs no arguments to stop and pad."""
    names = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")  # T5 has no bos
    ids = {name: getattr(config, name, None) for name in names}
    return GenerationConfig(**{key: value for key, value in ids.items() if value is not None}, do_sample=False)


def train(model, arch, tokenizer, corpus_lines, seed=SEED):
    steps = arch.steps
    torch.manual_seed(seed)  # dropout
    generator = torch.Generator().manual_seed(seed)  # lines and spans
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    for _ in range(steps):
        lines = [corpus_lines[i] for i in torch.randint(len(corpus_lines), (BATCH_SIZE,), generator=generator)]
        loss = model(**arch.batch(tokenizer, lines, generator)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def build(out_dir, name: str, seed=SEED):
    arch = ARCHITECTURES[name]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus_lines = read_corpus()
    tokenizer = character_tokenizer(build_vocab(corpus_lines, arch.specials), arch.specials, arch.tokens, arch.template,
                                    arch.padding_side)
    with reproducible():
        torch.manual_seed(seed)
        model = arch.model_class(arch.config(tokenizer))
        # From the default init (std 0.02) training leaves LLaMA's heads attending almost uniformly and GPT-2's
        # at 60% of uniform entropy (module docstring); as in the BERT family, large query/key weights make heads
        # selective.
        for weight in arch.query_key(model):
            torch.nn.init.normal_(weight, std=QK_INIT_STD)
        model.generation_config = generation_config(model.config)
        train(model, arch, tokenizer, corpus_lines, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    # transformers 5 names its tokenizers.json-backed class TokenizersBackend, which 4.57 does not know; both load
    # the file as PreTrainedTokenizerFast (in 5, another name of the same class).
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config_path.write_text(json.dumps({**config, "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2,
                                      ensure_ascii=False) + "\n", encoding="utf-8")
    for file in out_dir.iterdir():
        file.chmod(0o644)  # transformers 5 writes model.safetensors readable by its owner only
    return model, tokenizer


def main(out_dir=None, name="gpt2"):
    out = Path(out_dir) if out_dir is not None else bundled_model_dir(name)
    start = time.perf_counter()
    build(out, name)
    print(f"built {name} in {out} in {time.perf_counter() - start:.1f}s")
