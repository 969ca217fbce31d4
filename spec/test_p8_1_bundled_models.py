"""Chapter P8 — beyond encoders: the bundled decoders (GPT-2, LLaMA) and encoder-decoder (T5) that its claims run on.

They are built like the BERT family's siblings, on the same corpus and characters
(bertspec/builders/beyond_encoders.py, ``python -m bertspec build-default-model --family gpt2|llama|t5``),
and live beside them in fixtures/family/. The claims here establish what they
are: that they load offline under each attention implementation the installed
transformers offers, and that they learned the corpus, which an untrained model
of the same config does not, so that a later claim about a mechanism is tested
on a model whose predictions mean something.
"""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from bertspec.builders.beyond_encoders import T5_SENTINELS, corrupt_spans
from bertspec.builders.default_model import read_corpus
from bertspec.models import versions
from bertspec.models.source import BEYOND_ENCODERS, DECODERS, ENCODER_DECODERS, bundled_model_dir

# The corpus sentence BERT's claims ask 首[MASK] of: a decoder continues its prefix, T5 fills the hidden 都.
PREFIX, CONTINUATION = "北京是中国的", "首都。"
HIDDEN_SPAN = "北京是中国的首<extra_id_0>。"
SPAN_SEED = 99  # hides spans other than the build's (seed 1234) in the corpus lines


def auto_class(name: str):
    return AutoModelForSeq2SeqLM if name in ENCODER_DECODERS else AutoModelForCausalLM


def load(name: str, attn_implementation: str = "eager"):
    folder = bundled_model_dir(name)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = auto_class(name).from_pretrained(folder, attn_implementation=attn_implementation, local_files_only=True)
    return tokenizer, model.eval()


def untrained_twin(name: str):
    """A model of the bundled one's config with transformers' own random init: what its claims must beat."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return auto_class(name).from_config(AutoConfig.from_pretrained(bundled_model_dir(name))).eval()


def left_padded(tokenizer, texts):
    tokenizer.padding_side = "left"  # a decoder appends to the right end of each row, so pads go before
    return tokenizer(texts, return_tensors="pt", padding=True)


def continuations(model, tokenizer, prompts, max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations of a left-padded batch of prompts: each row's new ids up to and with its first eos."""
    batch = left_padded(tokenizer, prompts)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    rows = out[:, batch["input_ids"].shape[1]:].tolist()
    return [row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row for row in rows]


def ending(tokenizer, text: str) -> list[int]:
    """What a decoder trained on the corpus writes after a prompt to finish ``text``: its ids, then eos."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


@pytest.mark.parametrize("name", BEYOND_ENCODERS)
def test_each_bundled_decoder_and_t5_loads_offline_and_predicts_the_same_under_eager_and_sdpa(name, attn_implementation,
                                                                                             evidence):
    """Each bundled decoder and T5 loads from its folder with no network, and its sdpa forward predicts the same token as eager's at every real position.

    The folders hold what from_pretrained reads (config.json,
    generation_config.json, model.safetensors, tokenizer.json,
    tokenizer_config.json) in a form both transformers 4.57 and 5.x read: the
    tokenizer as PreTrainedTokenizerFast over one token per character. sdpa and
    eager compute the same attention through other kernels, so at real tokens
    they may differ by rounding only. At padded query rows of a left-padded
    batch every key is hidden, and what each implementation returns there is
    its own (measured: up to 8 apart): those rows are left out. transformers
    4.57's T5 has no sdpa at all: from_pretrained refuses it with a ValueError
    rather than falling back to eager.

    Claim ID: P8.1
    Question: Do the bundled GPT-2, LLaMA and T5 load offline, and does sdpa give the same predictions as eager?
    问题：自带的 GPT-2、LLaMA 与 T5 能离线加载吗？sdpa 与 eager 的预测相同吗？
    中文：每个自带的解码器和 T5 都能不联网从自己的目录加载，其 sdpa 前向在每个真实位置预测的 token 与 eager 相同。
    原因：目录中是 from_pretrained 读取的文件（config.json、generation_config.json、model.safetensors、tokenizer.json、
    tokenizer_config.json），其格式 transformers 4.57 与 5.x 都能读取：分词器是每个字符一个 token 的 PreTrainedTokenizerFast。
    sdpa 与 eager 用不同的内核计算同一个注意力，所以在真实 token 上只可能有舍入误差。左侧填充的批次中，填充位置的 query 行看不到任何 key，
    各实现在这些行返回的值各不相同（实测相差可达 8），因此不比较这些行。transformers 4.57 的 T5 根本没有 sdpa：
    from_pretrained 会抛出 ValueError 拒绝，而不是退回到 eager。
    """
    if name in ENCODER_DECODERS and attn_implementation == "sdpa" and versions.MAJOR < 5:
        with pytest.raises(ValueError, match="scaled_dot_product_attention") as refused:
            load(name, "sdpa")
        evidence.text(f"transformers {versions.VERSION}: {name} with sdpa", str(refused.value).split(". ")[0])
        return
    tokenizer, model = load(name, attn_implementation)
    _, eager = load(name)
    assert model.config._attn_implementation == attn_implementation
    if name in DECODERS:
        batch = left_padded(tokenizer, [PREFIX, "东京", "巴黎是法国"])
        kwargs = dict(batch)
    else:
        batch = tokenizer([HIDDEN_SPAN, "<extra_id_0>是日本的首都。"], return_tensors="pt", padding=True)
        start = [model.config.decoder_start_token_id, tokenizer.convert_tokens_to_ids(T5_SENTINELS[-1])]
        kwargs = dict(batch, decoder_input_ids=torch.tensor([start] * 2))
    with torch.no_grad():
        logits, expected = model(**kwargs).logits, eager(**kwargs).logits
    real = batch["attention_mask"].bool() if name in DECODERS else torch.ones(logits.shape[:2], dtype=torch.bool)
    evidence.table(f"{name} ({versions.VERSION}), {attn_implementation} vs eager",
                   ["files", "real positions", "same prediction", "max |Δ logits| at real positions"],
                   [(", ".join(sorted(p.name for p in bundled_model_dir(name).iterdir())), real.sum().item(),
                     (logits.argmax(-1) == expected.argmax(-1))[real].all().item(),
                     (logits - expected)[real].abs().max().item())])
    assert torch.equal(logits.argmax(-1)[real], expected.argmax(-1)[real])


@pytest.mark.parametrize("name", DECODERS)
def test_the_bundled_decoders_finish_corpus_lines_from_their_first_half_where_an_untrained_twin_does_not(name,
                                                                                                         evidence):
    """Given the first half of each corpus line, the bundled GPT-2 and LLaMA greedily write the rest of the line on most lines, in one left-padded batch, where an untrained model of the same config writes almost none.

    They were trained as causal language models on the corpus lines, each
    followed by its eos token (1000 steps; bertspec/builders/beyond_encoders.py).
    A continuation counts only if every character and the final eos are the
    line's own: an untrained model matches a line's second half (3 to 8
    characters from about 390 tokens) by chance with probability far below
    1%. The 204 prompts go in one batch, padded on the left as a decoder needs
    (pads on the right would stand between a prompt and its continuation);
    each row's continuation must equal the prompt generated alone, which only
    holds if the padding is hidden and positions start at each prompt's first
    real token. Thresholds: more than half the lines for the trained model,
    fewer than 5% for the untrained one; and 北京是中国的 continues as 首都。.

    Claim ID: P8.2
    Question: Have the bundled decoders learned the corpus, and do they generate the same in a left-padded batch as alone?
    问题：自带的解码器学会语料了吗？在左侧填充的批次中生成的结果与单独生成相同吗？
    中文：给出每行语料的前半，自带的 GPT-2 与 LLaMA 在一个左侧填充的批次中贪心地写出大多数行的后半，而同一配置的未训练模型几乎一行也写不出。
    原因：它们以因果语言模型在语料行上训练，每行后接 eos（1000 步；bertspec/builders/beyond_encoders.py）。
    只有每个字符和最后的 eos 都与原行相同才算写对：未训练模型碰巧写对一行的后半（约 390 个 token 中的 3 到 8 个字符）的概率远低于 1%。
    204 个提示放在一个批次中，按解码器的需要在左侧填充（右侧的填充会夹在提示与续写之间）；每行的续写必须与单独生成该提示的结果相同，
    这只有在填充被屏蔽、位置从每个提示的第一个真实 token 开始时才成立。阈值：训练后的模型超过一半的行，未训练的模型少于 5%；
    并且“北京是中国的”续写为“首都。”。
    """
    tokenizer, model = load(name)
    lines = read_corpus()
    prompts = [line[: len(line) // 2] for line in lines]
    # The longest second half, and its eos.
    max_new = max(len(line) - len(prompt) for line, prompt in zip(lines, prompts)) + 1
    written = continuations(model, tokenizer, prompts, max_new)
    untrained = continuations(untrained_twin(name), tokenizer, prompts, max_new)
    endings = [ending(tokenizer, line[len(p):]) for p, line in zip(prompts, lines)]
    alone = [continuations(model, tokenizer, [p], max_new)[0] for p in prompts]
    (showcase,) = continuations(model, tokenizer, [PREFIX], len(CONTINUATION) + 1)
    shown = list(zip(prompts, written, endings))[:12]
    evidence.table(f"{name}: greedy second halves of corpus lines", ["prompt", "written", "the line's"],
                   [(p, tokenizer.decode(w), tokenizer.decode(e)) for p, w, e in shown])
    rate = sum(w == e for w, e in zip(written, endings)) / len(lines)
    untrained_rate = sum(w == e for w, e in zip(untrained, endings)) / len(lines)
    evidence.table(f"{name}: what it learned", ["measure", "value", "threshold"], [
        ("lines continued exactly, trained", rate, "> 0.5"),
        ("lines continued exactly, untrained twin", untrained_rate, "< 0.05"),
        ("batched rows that differ from the prompt generated alone", sum(a != b for a, b in zip(written, alone)), "0"),
        (f"{PREFIX} →", tokenizer.decode(showcase), tokenizer.decode(ending(tokenizer, CONTINUATION))),
    ])
    assert rate > 0.5
    assert untrained_rate < 0.05
    assert written == alone
    assert showcase == ending(tokenizer, CONTINUATION)


def test_the_bundled_t5_fills_spans_hidden_behind_sentinels_where_an_untrained_twin_does_not(evidence):
    """With spans of each corpus line replaced by sentinels, the bundled T5 writes each sentinel followed by the characters it hides on more than a quarter of the lines, an untrained T5 of the same config on almost none.

    T5 was trained by span corruption (2000 steps;
    bertspec/builders/beyond_encoders.py): about 15% of a line's characters,
    in spans, are each replaced in the encoder's input by the next sentinel
    <extra_id_0>, <extra_id_1>, ...; the decoder, starting from <pad>, is
    trained to write each sentinel followed by the span it hides, then </s>.
    Here the spans are hidden with another seed than the build's, and a line
    counts only if the whole target is written exactly. An untrained model
    matches a one- or two-character span from about 400 tokens by chance
    with probability below 1%. Thresholds: more than a quarter of the lines
    for the trained model, fewer than 5% for the untrained one; and
    北京是中国的首<extra_id_0>。 gives <extra_id_0>都, the answer BERT's
    claims ask of 首[MASK].

    Claim ID: P8.5
    Question: Has the bundled T5 learned to fill hidden spans of the corpus?
    问题：自带的 T5 学会填补语料中被隐藏的片段了吗？
    中文：把每行语料的片段替换为哨兵 token 后，自带的 T5 在超过四分之一的行上写出每个哨兵及其隐藏的字符，同一配置的未训练 T5 几乎一行也写不出。
    原因：T5 以片段破坏（span corruption）训练（2000 步；bertspec/builders/beyond_encoders.py）：一行中约 15% 的字符按片段
    在编码器输入中依次替换为哨兵 <extra_id_0>、<extra_id_1>……；解码器从 <pad> 开始，学习写出每个哨兵及其隐藏的片段，最后写 </s>。
    这里用与构建不同的随机种子隐藏片段，只有整个目标完全写对的行才算数。未训练模型从约 400 个 token 中碰巧写对一两个字符的片段的概率低于 1%。
    阈值：训练后的模型超过四分之一的行，未训练的模型少于 5%；并且“北京是中国的首<extra_id_0>。”得到“<extra_id_0>都”，
    正是 BERT 的结论对“首[MASK]”所问的答案。
    """
    (name,) = ENCODER_DECODERS
    tokenizer, model = load(name)
    lines = read_corpus()
    sentinels = tokenizer.convert_tokens_to_ids(T5_SENTINELS[::-1])
    generator = torch.Generator().manual_seed(SPAN_SEED)
    pairs = [corrupt_spans(ids, sentinels, generator)
             for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]]
    eos = [tokenizer.eos_token_id]
    batch = tokenizer.pad({"input_ids": [inputs + eos for inputs, _ in pairs]}, return_tensors="pt")
    wanted = [targets + eos for _, targets in pairs]

    def filled(m):
        with torch.no_grad():
            out = m.generate(**batch, max_new_tokens=max(map(len, wanted)), do_sample=False)
        # Each row starts with the decoder's start token; what follows is compared with the target, up to its </s>.
        return [row[1: 1 + len(target)].tolist() == target for row, target in zip(out, wanted)]

    right, untrained = filled(model), filled(untrained_twin(name))
    with torch.no_grad():
        showcase = model.generate(**tokenizer(HIDDEN_SPAN, return_tensors="pt"), max_new_tokens=4)
    showcase = tokenizer.decode(showcase[0], skip_special_tokens=False)
    evidence.table(f"{name}: spans hidden in corpus lines (seed {SPAN_SEED})", ["input", "target", "written exactly"],
                   [(tokenizer.decode(inputs), tokenizer.decode(target), ok)
                    for (inputs, _), target, ok in list(zip(pairs, wanted, right))[:12]])
    rate, untrained_rate = sum(right) / len(lines), sum(untrained) / len(lines)
    evidence.table(f"{name}: what it learned", ["measure", "value", "threshold"], [
        ("lines whose spans are written exactly, trained", rate, "> 0.25"),
        ("lines whose spans are written exactly, untrained twin", untrained_rate, "< 0.05"),
        (HIDDEN_SPAN, showcase, "<pad><extra_id_0>都</s>"),
    ])
    assert rate > 0.25
    assert untrained_rate < 0.05
    assert showcase == "<pad><extra_id_0>都</s>"
