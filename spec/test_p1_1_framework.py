"""Chapter P1.1 — the framework's model under test: a tokenizer that gives every special token
its own id, example texts in its vocabulary's language, and a bundled model trained enough that
every mechanism the spec is about visibly matters.
"""

import pytest
import torch

from bertspec.models.inputs import CHINESE, ENGLISH, MAX_UNKNOWN_SHARE, VOCABULARY, texts_for, unknown_share
from bertspec.proof import counterfeits, teeth
from bertspec.tracing.masks import layer_mask_replaced

BERT_BASE_CHINESE_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
# BERT's names for the five roles; RoBERTa's tokenizers write them <pad>, <unk>, <s>, </s>, <mask>.
SPECIAL_TOKEN_ROLES = {"[PAD]": "pad_token", "[UNK]": "unk_token", "[CLS]": "cls_token", "[SEP]": "sep_token",
                       "[MASK]": "mask_token"}


def test_the_tokenizer_wraps_every_text_in_cls_and_sep_and_gives_each_special_token_its_own_id(tokenizer, evidence):
    """The tokenizer opens every text with [CLS] and closes it with [SEP], keeps a typed [MASK] as one token, and gives each special token its own id.

    The five special tokens ([PAD], [UNK], [CLS], [SEP], [MASK]) are entries of
    the checkpoint's vocabulary like any other; the spec reads their ids from
    the tokenizer rather than assuming them. bert-base-chinese and
    bert-base-uncased both put them at 0, 100, 101, 102, 103 (after the
    [unused] rows), which the evidence compares with this checkpoint's;
    RoBERTa-style tokenizers name the same roles <s>, </s>, <pad>, <unk> and
    <mask>. A mask token written in the text is recognised whole, not split
    into "[", "mask" and "]".

    Claim ID: P1.1
    Question: What are the special tokens and their ids in my checkpoint?
    问题：我的 checkpoint 里有哪些特殊 token，id 各是多少？
    中文：分词器给每段文本加上开头的 [CLS] 与结尾的 [SEP]，把文本中的 [MASK] 保留为一个 token，并给每个特殊 token 各自的 id。
    原因：五个特殊 token（[PAD]、[UNK]、[CLS]、[SEP]、[MASK]）与其他词一样是 checkpoint 词表中的条目；spec 从分词器读取它们的 id，
    而不是假定。bert-base-chinese 与 bert-base-uncased 都把它们放在 0、100、101、102、103（在 [unused] 行之后），证据把它们与本
    checkpoint 的 id 比较；RoBERTa 风格的分词器把同样的角色写作 <s>、</s>、<pad>、<unk>、<mask>。写在文本中的 mask token 被整体识别，不会被拆成 “[”、“mask”、“]”。
    """
    texts = texts_for(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(texts.sentence)["input_ids"])
    written = {bert_name: getattr(tokenizer, role) for bert_name, role in SPECIAL_TOKEN_ROLES.items()}
    specials = {t: tokenizer.convert_tokens_to_ids(t) for t in written.values()}
    evidence.table(texts.sentence, ["position", "token"], list(enumerate(tokens)))
    evidence.table("special tokens", ["role", "token in this checkpoint", "its id", "id in bert-base-chinese"],
                   [(role, t, specials[t], BERT_BASE_CHINESE_IDS[role]) for role, t in written.items()])
    assert tokens[0] == tokenizer.cls_token and tokens[-1] == tokenizer.sep_token
    assert tokens.count(tokenizer.mask_token) == texts.sentence.count(tokenizer.mask_token) == 1
    assert len(set(specials.values())) == len(specials) == len(SPECIAL_TOKEN_ROLES)
    assert all(tokenizer.convert_ids_to_tokens(i) == t for t, i in specials.items()), "a special token is not in the vocabulary"


def test_the_example_texts_are_in_the_vocabularys_language_so_the_claims_see_real_tokens(tokenizer, evidence):
    """The claims' example sentences are chosen in the language of the checkpoint's vocabulary, or spelled with its own tokens, so that they see real tokens, not [UNK]s.

    A claim run on a sentence the vocabulary cannot read would pass on a row
    of identical [UNK]s that differ only by position: true, and nearly empty.
    bertspec.models.inputs holds the same sentences in Chinese (the plan's) and in
    English and picks, per checkpoint, the set with the fewest [UNK]
    (bertspec.models.inputs.texts_for). When even that set has more than 10% [UNK]
    (MAX_UNKNOWN_SHARE), the vocabulary is neither language's — a protein's,
    a chemistry's, a code's — and the sentences are spelled with its own
    ordinary tokens, one space apart, drawn by a seeded generator. Every
    [MASK] stands for one token of the filled-in sentence, and at most 10% of
    the tokens of whichever set is chosen may be [UNK].

    Claim ID: P1.1
    Question: Do the claims run on text my checkpoint's vocabulary can read?
    问题：结论是在我的 checkpoint 词表能读懂的文本上运行的吗？
    中文：结论的例句按 checkpoint 词表的语言选择，或用词表自身的 token 拼成，因此它们看到的是真实的 token，而不是 [UNK]。
    原因：在词表读不懂的句子上运行的结论，会在一排只有位置不同的 [UNK] 上通过：为真，却几乎是空的。bertspec.models.inputs 保存了
    中文（计划中的）与英文两套相同的例句，并为每个 checkpoint 选择 [UNK] 最少的一套（bertspec.models.inputs.texts_for）。若这一套的
    [UNK] 仍超过 10%（MAX_UNKNOWN_SHARE），词表就不属于这两种语言——如蛋白质、化学或代码词表——例句改由它自己的普通 token
    以空格相隔拼成，由固定种子的生成器抽取。每个 [MASK] 对应填好的句子中的一个 token，无论选中哪一套，其 token 中 [UNK] 最多只能占 10%。
    """
    texts = texts_for(tokenizer)
    tokens = [t for text in texts.all() for t in tokenizer.tokenize(text)]
    unknown = sum(t == tokenizer.unk_token for t in tokens)
    evidence.table(f"example texts chosen: {texts.language}", ["text", "tokens"],
                   [(text, " ".join(tokenizer.tokenize(text))) for text in texts.all()])
    evidence.table("unknown tokens", ["[UNK]", "tokens", "share", "allowed"],
                   [(unknown, len(tokens), unknown / len(tokens), MAX_UNKNOWN_SHARE)])
    assert unknown / len(tokens) <= MAX_UNKNOWN_SHARE
    for masked, filled in zip(texts.masked, texts.filled):
        assert len(tokenizer.tokenize(masked)) == len(tokenizer.tokenize(filled)), (masked, filled)


def test_a_vocabulary_of_neither_language_gets_example_sentences_spelled_with_its_own_tokens(tmp_path, evidence):
    """A vocabulary that is neither Chinese nor English, such as ProtBert's 25 residue letters, gets example sentences spelled with its own tokens: no [UNK], each [MASK] one token, the same on every call.

    Protein, chemistry and code BERTs have such vocabularies: both example
    sets are then mostly [UNK] (ProtBert's makes every English and Chinese
    word [UNK]: 45 of the 48 English tokens, the other 3 being the [MASK]s),
    over the 10% MAX_UNKNOWN_SHARE, so
    bertspec.models.inputs.texts_for spells the same fields (a sentence with a
    [MASK], a shorter one, a pair, masked and filled sentences, text around an
    unknown character, a pre-split sentence, lines of running text) with the
    vocabulary's own ordinary tokens, one space apart, drawn by a seeded
    generator. Shown on ProtBert's vocabulary (bertspec/builders/zoo_protein.py), so
    the default run checks what a domain checkpoint would get.

    Claim ID: P1.1
    Question: What example text do the claims use when my vocabulary is neither Chinese nor English?
    问题：我的词表既不是中文也不是英文时，结论用什么例句？
    中文：既非中文也非英文的词表（如 ProtBert 的 25 个氨基酸字母）得到用它自己的 token 拼成的例句：没有 [UNK]，每个 [MASK] 是一个 token，每次调用都相同。
    原因：蛋白质、化学与代码 BERT 就有这样的词表：两套例句都大多是 [UNK]（ProtBert 的词表把每个英文词与中文字都变成 [UNK]：48 个英文 token 中的 45 个，
    其余 3 个是 [MASK]），超过 10% 的 MAX_UNKNOWN_SHARE，于是 bertspec.models.inputs.texts_for 用词表自己的普通 token（以空格相隔、由固定种子的
    生成器抽取）拼出同样的各项（带一个 [MASK] 的句子、较短的句子、句子对、遮盖与填好的句子、未知字符两侧的文本、预先切好的句子、
    成行的文本）。这里在 ProtBert 的词表（bertspec/builders/zoo_protein.py）上展示，默认运行因此检查了领域 checkpoint 会得到的例句。
    """
    from transformers import BertTokenizer

    from bertspec.builders.zoo_protein import VOCAB

    (tmp_path / "vocab.txt").write_text("".join(token + "\n" for token in VOCAB), encoding="utf-8")
    tokenizer = BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=False)
    shares = {texts.language: unknown_share(tokenizer, texts) for texts in (CHINESE, ENGLISH)}
    texts = texts_for(tokenizer)
    evidence.table("[UNK] share of the example sets in ProtBert's vocabulary", ["example set", "[UNK] share", "allowed"],
                   [(language, share, MAX_UNKNOWN_SHARE) for language, share in shares.items()])
    evidence.table(f"example texts chosen: {texts.language}", ["text", "tokens"],
                   [(text, " ".join(tokenizer.tokenize(text))) for text in texts.all()])
    assert min(shares.values()) > MAX_UNKNOWN_SHARE
    assert texts.language == VOCABULARY and texts == texts_for(tokenizer)
    assert unknown_share(tokenizer, texts) == 0 and not texts.natural and texts.corpus()
    for masked, filled in zip(texts.masked, texts.filled):
        assert len(tokenizer.tokenize(masked)) == len(tokenizer.tokenize(filled)) == len(filled.split()), (masked, filled)
    assert [tokenizer.tokenize(word) for word in texts.words] == [[word] for word in texts.words], "one letter, one token"


def test_the_tokenizer_splits_chinese_text_into_single_characters(tokenizer, evidence):
    """Chinese text becomes one token per character: the character itself where the vocabulary has it, [UNK] where it has not.

    BERT's basic tokenizer puts spaces around every CJK character
    (``tokenize_chinese_chars``, on by default), so WordPiece never sees a
    Chinese word, only single characters; the vocabulary decides whether each
    is itself or [UNK]. bert-base-chinese has some 21,000 characters; an
    English vocabulary has none, and every character becomes its own [UNK].

    Claim ID: P1.1
    Question: How does the tokenizer split Chinese text?
    问题：分词器怎样切分中文文本？
    中文：中文文本被切成每个汉字一个 token：词表中有的字就是它自己，没有的字是 [UNK]。
    原因：BERT 的基础分词器在每个 CJK 字符两侧加空格（tokenize_chinese_chars，默认开启），所以 WordPiece 从不会看到中文词，
    只会看到单个汉字；由词表决定每个字是它自己还是 [UNK]。bert-base-chinese 有约 21000 个汉字；英文词表一个也没有，
    每个汉字都变成各自的 [UNK]。
    """
    if getattr(tokenizer, "tokenize_chinese_chars", True) is False:
        pytest.skip("this tokenizer is configured with tokenize_chinese_chars=False")
    text = CHINESE.pair[0]
    tokens = tokenizer.tokenize(text)
    vocab = tokenizer.get_vocab()
    expected = [c if c in vocab else tokenizer.unk_token for c in text]
    evidence.table(text, ["character", "token", "in the vocabulary"],
                   [(c, t, c in vocab) for c, t in zip(text, tokens)])
    assert tokens == expected


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of each attention row, in nats (0 * log 0 taken as 0)."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


def test_the_bundled_model_is_trained_enough_that_every_mechanism_visibly_matters(bert, evidence):
    """The bundled model is not degenerate: attention is peaked, the mask, the decoder bias and the LayerNorms all matter.

    With BERT's usual 0.02 initialisation a tiny model attends almost uniformly
    and keeps every bias at zero, so a claim about the mask or the bias would
    prove little on it. The bundled model starts query/key weights at std 0.2 and
    the decoder bias at the corpus's log unigram frequencies, then trains 1200
    steps of MLM plus next-sentence prediction (bertspec/builders/default_model.py); its
    siblings in the other families (--family) start the same way and train 400
    steps of MLM (ALBERT's and ELECTRA's embedding projection at std 0.2 too). Thresholds: mean attention entropy per
    layer under 60% of the uniform log T; dropping the mask moves real tokens by
    more than 0.1; removing the decoder bias changes some predictions on the training text; every
    LayerNorm differs from the identity; 首[MASK] is predicted as 都.

    Claim ID: P1.1
    Question: Is the bundled tiny model trained enough to show each mechanism at work?
    问题：自带的小模型训练得足够让每个机制都显现出作用吗？
    中文：自带模型不是退化的：注意力是尖锐的，mask、decoder 偏置与 LayerNorm 都确实起作用。
    原因：按 BERT 常用的 0.02 初始化，小模型的注意力几乎均匀、偏置全为 0，关于 mask 或偏置的断言几乎证明不了什么。
    自带模型把 query/key 权重初始化为标准差 0.2、decoder 偏置初始化为语料的对数词频，再训练 1200 步 MLM 加下一句预测
    （bertspec/builders/default_model.py）；其他家族的同类模型（--family）以同样方式起步，训练 400 步 MLM（ALBERT 与 ELECTRA 的嵌入投影也以标准差 0.2 初始化）。阈值：每层平均注意力熵低于均匀分布 log T 的 60%；去掉 mask 使真实 token 的输出变化超过 0.1；
    去掉 decoder 偏置会改变训练文本上的部分预测；每个 LayerNorm 都不同于恒等变换；首[MASK] 被预测为"都"。
    """
    if not bert.bundled:
        pytest.skip("a property of the bundled models; other checkpoints are what they are")
    batch = bert.example()
    trace, output = bert.trace(batch)
    real = batch.attention_mask.bool()
    t = real[0].sum().item()
    layer_entropy = [entropy(trace.tensor(s.name)[0]).mean().item() for s in trace.all("probs")]
    with torch.no_grad(), layer_mask_replaced(bert.model, lambda mask, hidden: None):
        unmasked = bert.model(**batch.as_kwargs()).logits
    mask_effect = (unmasked - output.logits)[real].abs().max().item()
    bias = bert.decoder_bias
    corpus = bert.encode(bert.texts.corpus()[:16])  # the training text: the bias is its prior
    with torch.no_grad():
        logits = bert.model(**corpus.as_kwargs()).logits
    changed_by_bias = ((logits - bias).argmax(-1) != logits.argmax(-1))[corpus.attention_mask.bool()].sum().item()
    layer_norms = {n: (m.weight - 1).abs().max().item() for n, m in bert.model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    (mask_pos,) = batch.positions(bert.tokenizer.mask_token_id)
    guess = bert.token(output.logits[0, mask_pos].argmax())
    evidence.table("what the bundled model shows", ["measure", "value", "threshold"], [
        *[(f"layer {i} mean attention entropy (nats)", h, f"< 0.6 · log {t} = {0.6 * torch.log(torch.tensor(float(t))).item():.3g}")
          for i, h in enumerate(layer_entropy)],
        ("max |Δ logits| at real tokens, mask dropped", mask_effect, "> 0.1"),
        ("predictions changed by removing the decoder bias (16 corpus lines)", changed_by_bias, "> 0"),
        ("smallest max|LayerNorm weight - 1|", min(layer_norms.values()), "> 0.01"),
        ("prediction at 首[MASK]", guess, "都"),
    ])
    assert all(h < 0.6 * torch.log(torch.tensor(float(t))).item() for h in layer_entropy)
    assert mask_effect > 0.1
    assert changed_by_bias > 0
    assert min(layer_norms.values()) > 0.01
    assert guess == "都"


@pytest.mark.meta
def test_each_claim_goes_red_on_the_counterfeits_declared_at_it(bert, request, evidence):
    """Each claim also runs on every counterfeit declared at it, as an item that must fail: the model under test with one mechanism broken.

    A counterfeit (bertspec/proof/counterfeits.py) is the model under test with
    one mechanism broken by a hook or on a deep copy: the mask dropped or
    inverted, the decoder untied, the loss counting -100 positions, ... A
    claim that stayed green on it would prove nothing about that mechanism.
    So collection (bertspec/proof/teeth.py) adds, for each counterfeit a
    claim declares and each model under test, one more item of that claim —
    ``…[eager-counterfeit=mask_dropped]`` — whose model fixture yields the
    counterfeit, marked as a strict expected failure on an AssertionError: it
    is green only when the claim goes red, and a claim that passed on its
    counterfeit fails the run. This claim checks that every pair declared in
    the collection has its item, strict, and that such an item's model really
    is broken (under mask_dropped a padded batch's real tokens change). The
    handbook gathers the runs and their outcomes into one table.

    Claim ID: P1.1
    Question: How do we know these claims could fail at all?
    问题：怎么知道这些结论真的可能失败？
    中文：每条结论还会在声明给它的每个反例上各运行一次，并且必须失败：反例就是破坏了一个机制的被测模型。
    原因：反例（bertspec/proof/counterfeits.py）是用 hook 或在深拷贝上破坏一个机制的被测模型：去掉或反转 mask、
    解开 decoder 的权重共享、loss 把 -100 位置也计入……在反例上仍然通过的结论对那个机制没有证明力。
    因此收集阶段（bertspec/proof/teeth.py）为每条结论声明的每个反例、每个被测模型再加一个该结论的测试项
    （…[eager-counterfeit=mask_dropped]），它的模型 fixture 给出反例，并标为严格的预期失败（AssertionError）：
    只有结论失败它才通过，结论在反例上通过则整个运行失败。本结论检查收集到的每一对声明都有其测试项且为严格模式，
    并检查这样的测试项拿到的模型确实被破坏（mask_dropped 下填充批次中真实 token 的输出改变）。报告把所有运行及结果汇成一张表。
    """
    def model_of(item) -> tuple:
        return item.originalname, item.callspec.params.get("attn_implementation"), item.callspec.params.get("family")

    collected = request.config.stash[teeth.COLLECTED]
    runs = [item for item in collected if teeth.counterfeit_of(item)]
    claims = {model_of(item) for item in collected if teeth.declared(item.obj) and not teeth.counterfeit_of(item)}
    declared = {(*claim, name) for claim in claims
                for name, _ in teeth.declared(next(i.obj for i in collected if i.originalname == claim[0]))}
    made = {(*model_of(run), teeth.counterfeit_of(run)) for run in runs}
    strict = [run for run in runs if (mark := run.get_closest_marker("xfail")) is not None
              and mark.kwargs.get("strict") and mark.kwargs.get("raises") is AssertionError]
    if not claims:
        pytest.skip("no claim that declares counterfeits was collected in this session")
    batch = bert.example()
    real = batch.attention_mask.bool()
    with counterfeits.REGISTRY["mask_dropped"](bert) as broken:
        dropped = broken.last_hidden(batch)
    moved = (dropped - bert.last_hidden(batch))[real].abs().max().item()
    evidence.table("this collection", ["", "count"], [
        ("claims × models that declare counterfeits", len(claims)),
        ("(claim, model, counterfeit) declared", len(declared)),
        ("counterfeit runs collected", len(made)),
        ("… strict expected failures on an AssertionError", len(strict)),
        ("max |Δ real-token output| under mask_dropped", f"{moved:.3g}"),
    ])
    assert declared and made == declared and len(runs) == len(made)
    assert len(strict) == len(runs)
    assert moved > 0
