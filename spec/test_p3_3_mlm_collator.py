"""Chapter P3.3 — the masking that makes MLM training data: DataCollatorForLanguageModeling
selects about 15 % of ordinary tokens, labels only those and never a special token, turns them
80 / 10 / 10 into [MASK], a random token or themselves, and masks reproducibly under a seed.
Counted on the bundled corpus, each fraction within the binomial bound of
bertspec.proof.compare.
"""

from dataclasses import dataclass

import torch
import transformers
from torch import nn

from bertspec.models import versions
from bertspec.models.inputs import texts_for
from bertspec.proof.compare import within_binomial_bound
from bertspec.proof.reference import IGNORE_INDEX

REPEATS = 8  # the corpus (204 lines, ~1750 ordinary characters) 8 times: ~14000 positions, ~2100 selected
COLLATOR_SEED = 1234


@dataclass
class Collated:
    original: torch.Tensor  # (N, T) the ids before masking, right-padded
    inputs: torch.Tensor  # (N, T) what the model is fed
    labels: torch.Tensor  # (N, T)
    special: torch.Tensor  # (N, T) [CLS], [SEP], [PAD] (any special id)


def collate(tokenizer, examples, seed) -> Collated:
    collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
    batch = collator([list(e) for e in examples])
    original = nn.utils.rnn.pad_sequence([torch.tensor(e) for e in examples], batch_first=True, padding_value=tokenizer.pad_token_id)
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    return Collated(original, batch["input_ids"], batch["labels"], special)


def corpus_examples(tokenizer, repeats=REPEATS) -> list[list[int]]:
    """The corpus of the example texts (fixtures/corpus.zh.txt or .en.txt, or lines spelled with the vocabulary's own
    tokens), tokenized, ``repeats`` times."""
    return tokenizer(texts_for(tokenizer).corpus())["input_ids"] * repeats


def test_the_collator_selects_about_15_percent_of_ordinary_tokens_labels_only_those_and_never_a_special_token(tokenizer, evidence):
    """DataCollatorForLanguageModeling selects ~15% of ordinary tokens, labels exactly those with their original id, and never selects [CLS], [SEP] or [PAD].

    Each non-special position is selected independently with probability
    mlm_probability = 0.15. Fed token ids alone, as here, the collator builds
    the special-tokens mask itself from every special id of the tokenizer, so
    [CLS], [SEP], [PAD], and also [UNK] and a typed [MASK], have probability 0;
    a mask the tokenizer supplies marks fewer (the next claim). Selected
    positions are labelled with the original id, every other position -100,
    and unselected inputs are left as they were. Over ~14,000 positions of the
    corpus in the vocabulary's language (fixtures/corpus.zh.txt, or .en.txt, or
    lines spelled with a domain vocabulary's own tokens), with a fixed seed,
    the fraction stays within 5 binomial standard deviations of 0.15.

    Claim ID: P3.3c
    Question: Which tokens does DataCollatorForLanguageModeling pick for masking?
    问题：DataCollatorForLanguageModeling 会挑哪些 token 来遮盖？
    中文：DataCollatorForLanguageModeling 选中约 15% 的普通 token，只为它们打上原始 id 作为标签，从不选中 [CLS]、[SEP]、[PAD]。
    原因：每个非特殊位置以 mlm_probability=0.15 的概率独立被选中。像这里这样只给 token id 时，数据整理器用分词器的全部特殊 id
    自己构造特殊 token mask，所以 [CLS]、[SEP]、[PAD]，还有 [UNK] 与文本中的 [MASK]，被选中的概率都为 0；由分词器提供的 mask
    标记得更少（见下一条断言）。被选中的位置以原始 id 为标签，其余位置为 -100，未被选中的输入保持不变。在与词表同语言的语料
    （fixtures/corpus.zh.txt 或 .en.txt，或用领域词表自身 token 拼成的行）约 14000 个位置上（固定种子），比例落在 0.15 的 5 个二项标准差之内。
    """
    c = collate(tokenizer, corpus_examples(tokenizer), COLLATOR_SEED)
    selected = c.labels != IGNORE_INDEX
    ordinary = ~c.special
    fraction, half_width = within_binomial_bound(int(selected[ordinary].sum()), int(ordinary.sum()), 0.15)
    evidence.table("selection", ["ordinary positions", "selected", "fraction", "allowed (5 sigma)", "special positions", "selected among them"],
                   [(int(ordinary.sum()), int(selected.sum()), fraction, f"0.15 ± {half_width:.4f}", int(c.special.sum()), int(selected[c.special].sum()))])
    assert abs(fraction - 0.15) <= half_width
    assert not bool(selected[c.special].any())
    assert torch.equal(c.labels[selected], c.original[selected])
    assert torch.equal(c.inputs[~selected], c.original[~selected])


def test_whether_unk_and_a_typed_mask_can_be_selected_depends_on_who_builds_the_special_tokens_mask(tokenizer, evidence):
    """Whether the collator may select [UNK] and a [MASK] typed in the text depends on who builds the special-tokens mask: the collator excludes them, a tokenizer-supplied mask does not.

    DataCollatorForLanguageModeling skips the positions its special-tokens
    mask marks. Given token ids alone, it builds that mask itself with
    ``get_special_tokens_mask(already_has_special_tokens=True)``, which marks
    every special id: [CLS], [SEP], [PAD], [UNK] and [MASK]. Given the
    tokenizer's own mask (``return_special_tokens_mask=True``, as transformers'
    run_mlm example passes it), it uses that one, which marks only the
    [CLS]/[SEP] the tokenizer added (and padding): an [UNK] or a literal
    [MASK] in the text is then an ordinary position that can be selected and
    labelled. Shown with mlm_probability = 1.0, so every eligible position is
    selected and nothing depends on chance.

    Claim ID: P3.3c
    Question: Can the MLM collator choose [UNK] or a [MASK] that is already in my text?
    问题：MLM 数据整理器会选中 [UNK] 或文本里本来就有的 [MASK] 吗？
    中文：数据整理器能否选中 [UNK] 与文本中手写的 [MASK]，取决于谁构造特殊 token mask：整理器自己构造时排除它们，分词器提供的 mask 则不排除。
    原因：DataCollatorForLanguageModeling 跳过其特殊 token mask 标记的位置。只给 token id 时，它用
    get_special_tokens_mask(already_has_special_tokens=True) 自己构造这个 mask，标记所有特殊 id：[CLS]、[SEP]、[PAD]、[UNK] 与 [MASK]。
    给出分词器自己的 mask（return_special_tokens_mask=True，transformers 的 run_mlm 示例就这样传）时，它使用那个 mask，而那个 mask
    只标记分词器添加的 [CLS]/[SEP]（以及 padding）：文本中的 [UNK] 或手写的 [MASK] 就成了可以被选中并打标签的普通位置。
    这里用 mlm_probability = 1.0 展示，每个可选位置都会被选中，与随机性无关。
    """
    texts = texts_for(tokenizer)
    text = texts.around_unknown[0] + chr(0x20000) + texts.around_unknown[1] + f" {tokenizer.mask_token}"
    encoded = tokenizer([text, texts.short], return_special_tokens_mask=True)
    features = [{key: encoded[key][i] for key in encoded} for i in range(2)]
    ids = features[0]["input_ids"]
    where = {t: ids.index(getattr(tokenizer, f"{t}_token_id")) for t in ("unk", "mask")}
    selected = {}
    for built_by, given in (("the collator (token ids alone)", [{"input_ids": f["input_ids"]} for f in features]),
                            ("the tokenizer (return_special_tokens_mask=True)", features)):
        with torch.random.fork_rng():  # the collator draws from the global generator
            labels = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=1.0)(given)["labels"][0]
        selected[built_by] = {t: bool(labels[i] != IGNORE_INDEX) for t, i in where.items()}
    evidence.table(f"{text!r} with mlm_probability = 1.0", ["special-tokens mask built by", "[UNK] selected", "[MASK] selected"],
                   [(by, s["unk"], s["mask"]) for by, s in selected.items()])
    assert selected["the collator (token ids alone)"] == {"unk": False, "mask": False}
    assert selected["the tokenizer (return_special_tokens_mask=True)"] == {"unk": True, "mask": True}


def test_the_collator_turns_80_percent_of_selected_tokens_into_mask_10_percent_into_random_tokens_and_keeps_10_percent(tokenizer, evidence):
    """Of the selected tokens the collator replaces ~80% with [MASK], ~10% with a random token and leaves ~10% unchanged.

    The model must predict the original at every selected position, yet it
    cannot know which ones were left as they were: so it must represent every
    token well, not only [MASK]. The random token is drawn uniformly from the
    whole vocabulary (len(tokenizer)), so it equals the original or [MASK] with
    probability 1/V each: the expected shares are 0.8 + 0.1/V ([MASK]),
    0.1 − 0.2/V (a random token that is neither) and 0.1 + 0.1/V (unchanged). Each observed share stays within 5 binomial standard deviations.

    Claim ID: P3.3c
    Question: What is the 80/10/10 rule in BERT's masking?
    问题：BERT 遮盖中的 80/10/10 规则是什么？
    中文：在被选中的 token 中，数据整理器把约 80% 替换为 [MASK]、约 10% 替换为随机 token、约 10% 保持不变。
    原因：模型必须在每个被选中位置预测原 token，却无法知道哪些位置没有被替换：因此它必须为每个 token 学好表示，而不只是 [MASK]。
    随机 token 从整个词表（len(tokenizer)）均匀抽取，分别以 1/V 的概率恰好等于原 token 或 [MASK]：期望比例为 0.8+0.1/V（[MASK]）、
    0.1−0.2/V（既非原 token 也非 [MASK] 的随机 token）与 0.1+0.1/V（不变）。每个观测比例都落在 5 个二项标准差之内。
    """
    c = collate(tokenizer, corpus_examples(tokenizer), COLLATOR_SEED)
    selected = c.labels != IGNORE_INDEX
    fed, original = c.inputs[selected], c.original[selected]
    n, v = len(fed), len(tokenizer)
    to_mask = fed == tokenizer.mask_token_id
    kept = fed == original
    shares = {"[MASK]": (to_mask, 0.8 + 0.1 / v), "random token": (~to_mask & ~kept, 0.1 - 0.2 / v), "unchanged": (kept, 0.1 + 0.1 / v)}
    rows = []
    for name, (hits, p) in shares.items():
        fraction, half_width = within_binomial_bound(int(hits.sum()), n, p)
        rows.append((name, int(hits.sum()), fraction, f"{p:.4f} ± {half_width:.4f}"))
        assert abs(fraction - p) <= half_width, name
    evidence.table(f"what the {n} selected positions are fed (V = {v})", ["became", "count", "share", "allowed (5 sigma)"], rows)


def test_a_seeded_collator_masks_reproducibly_and_seed_0_counts_as_a_seed_only_from_transformers_5(tokenizer, evidence):
    """A collator built with seed=N masks the same positions whatever the global RNG; in transformers 4.57 seed=0 silently means "unseeded".

    With a seed the collator draws from its own torch.Generator, created on the
    first call and advanced by every call (a second batch gets new masks; a new
    collator with the same seed starts over). Without one it draws from the
    global torch RNG (torch.manual_seed). transformers 4.57 creates the
    generator only ``if self.seed`` — false for 0 — so seed=0 masks differently
    under different global seeds; 5.x checks ``is not None``. The test observes
    which, per installed version.

    Claim ID: P3.3c
    Question: Does a seed make DataCollatorForLanguageModeling's masking reproducible?
    问题：给 DataCollatorForLanguageModeling 设种子后，遮盖结果可复现吗？
    中文：用 seed=N 构造的数据整理器无论全局随机数状态如何都遮盖相同位置；在 transformers 4.57 中 seed=0 会被悄悄当作"无种子"。
    原因：有种子时整理器从自己的 torch.Generator 抽样，它在第一次调用时创建、每次调用都会前进（第二个 batch 得到新的遮盖；同种子
    的新整理器从头开始）。没有种子时使用全局 torch 随机数（torch.manual_seed）。transformers 4.57 只在 `if self.seed` 为真时创建
    生成器——0 为假——所以 seed=0 在不同全局种子下遮盖不同；5.x 检查 `is not None`。测试按所装版本记录观察结果。
    """
    examples = corpus_examples(tokenizer, repeats=1)[:40]

    def masks_under_global_seed(global_seed, seed):
        with torch.random.fork_rng():
            torch.manual_seed(global_seed)
            return collate(tokenizer, examples, seed).labels

    def reproducible(seed):
        return torch.equal(masks_under_global_seed(1, seed), masks_under_global_seed(2, seed))

    collator = transformers.DataCollatorForLanguageModeling(tokenizer, seed=COLLATOR_SEED)
    first, second = collator(examples)["labels"], collator(examples)["labels"]
    observed = {"seed=1234": reproducible(COLLATOR_SEED), "seed=0": reproducible(0), "seed=None": reproducible(None)}
    evidence.table(f"same masks under global seeds 1 and 2? (transformers {transformers.__version__})", list(observed), [list(observed.values())])
    evidence.text("one seeded collator, called twice", f"same masks both calls: {torch.equal(first, second)}")
    evidence.table("does seed=0 seed the collator? (read in each version's data_collator.py)",
                   *versions.table(versions.SEED_ZERO_IS_A_SEED, ["transformers"], versions.MAJOR))
    assert observed["seed=1234"] and not observed["seed=None"]
    assert observed["seed=0"] == versions.SEED_ZERO_IS_A_SEED[versions.MAJOR]
    assert torch.equal(first, masks_under_global_seed(3, COLLATOR_SEED))
    assert not torch.equal(first, second)
