"""Chapter P6.16–P6.20 — the rest of the questions about tokenization and inputs (P6.8–P6.15 are in
spec/test_p6_08_tokenization_and_inputs.py), each answered on the tokenizer or model under test with the tempting wrong
answer failing beside it: how words are added (never_split, the [unused] rows of vocab.txt), and how the special
tokens and max_length shape the input (token vectors without [CLS]/[SEP], max_length, pair truncation).
"""

import copy
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoTokenizer

from bertspec.models import versions
from bertspec.models.inputs import CHINESE, Texts, texts_for
from bertspec.proof.tolerances import model_tolerance

# ---- adding words: never_split and the [unused] rows ----

def python_wordpiece():
    """The Python WordPiece tokenizer class of the installed transformers (versions.PYTHON_WORDPIECE)."""
    return getattr(transformers, versions.PYTHON_WORDPIECE[versions.MAJOR])


def split_entry(tokenizer) -> str:
    """A vocabulary entry that is not a special token and that tokenizing its own text splits ([unused1] at its brackets)."""
    vocab, special = tokenizer.get_vocab(), set(tokenizer.all_special_tokens)
    for entry in sorted(vocab, key=vocab.get):
        if entry not in special and entry.startswith("[") and tokenizer.tokenize(entry) != [entry]:
            return entry
    pytest.skip("the vocabulary has no bracketed entry ([unusedN]) that tokenizing its text would split")


def test_never_split_keeps_a_token_whole_only_in_the_python_tokenizer_and_add_tokens_works_in_both(tokenizer, evidence):
    """never_split keeps a vocabulary entry such as [unused1] whole only in the Python WordPiece tokenizer, and only where it stands apart as a word; the Rust-backed tokenizer transformers loads by default accepts the keyword and ignores it, while add_tokens(..., special_tokens=True) keeps the entry whole in both, wherever it stands.

    never_split is read by the Python BasicTokenizer alone (fixed there in PR
    #4723), and it compares whole whitespace-separated words: glued to the
    punctuation after it, as in "[unused1]。", the entry is split again at its
    brackets (huggingface/sentence-transformers#1974). The Rust-backed
    tokenizer that AutoTokenizer loads — 4.57's BertTokenizerFast, 5.x's
    BertTokenizer — takes the keyword without a warning and splits the entry
    as it splits any punctuation. In 5.x the Python class is
    BertTokenizerLegacy (bertspec.models.versions.PYTHON_WORDPIECE).
    add_tokens with special_tokens=True makes the string an added token,
    matched in the raw text before anything else by both; an entry already in
    the vocabulary keeps its id and adds no row.

    Claim ID: P6.16
    Question: Why does never_split not keep my token whole?
    问题：为什么 never_split 没能让我的词保持完整？
    中文：never_split 只在 Python 的 WordPiece 分词器中、且只在词表条目（如 [unused1]）单独成词时让它保持完整；transformers 默认加载的 Rust 实现分词器接受这个参数却忽略它，而 add_tokens(..., special_tokens=True) 在两者中、在任何位置都能让它保持完整。
    原因：只有 Python 的 BasicTokenizer 读取 never_split（PR #4723 在那里修好了它），而且它比较的是按空白切开的整个词：条目后面紧跟标点时，
    如 “[unused1]。”，它又会在方括号处被拆开（huggingface/sentence-transformers#1974）。AutoTokenizer 加载的 Rust 实现分词器——4.57 的
    BertTokenizerFast、5.x 的 BertTokenizer——不声不响地接受这个参数，像拆开任何标点一样拆开这个条目。5.x 中 Python 类叫
    BertTokenizerLegacy（bertspec.models.versions.PYTHON_WORDPIECE）。add_tokens 加上 special_tokens=True 把字符串变成 added token，
    两者都先在原始文本中匹配它；已在词表中的条目保持原来的 id，不新增行。
    Asked in: huggingface/transformers#3518, huggingface/transformers#23459, huggingface/transformers#12223, huggingface/transformers#4723, huggingface/transformers#738, huggingface/transformers#1322, huggingface/sentence-transformers#1974, google-research/bert#404
    """
    entry = split_entry(tokenizer)
    if not (Path(tokenizer.name_or_path) / "vocab.txt").is_file():
        pytest.skip("the checkpoint has no vocab.txt: the Python WordPiece, the one tokenizer that reads never_split, "
                    "cannot be built from tokenizer.json alone")
    before, after = (part.strip() for part in texts_for(tokenizer).around_unknown)
    texts = {"apart": f"{before} {entry} {after}", "glued": f"{before} {entry}{after}"}
    added = copy.deepcopy(tokenizer)
    added.add_tokens([entry], special_tokens=True)
    routes = {
        f"{python_wordpiece().__name__}, never_split": python_wordpiece().from_pretrained(tokenizer.name_or_path,
                                                                                           never_split=[entry]),
        f"{type(tokenizer).__name__} (AutoTokenizer), never_split": AutoTokenizer.from_pretrained(tokenizer.name_or_path,
                                                                                                never_split=[entry]),
        f"{type(tokenizer).__name__}, add_tokens(special_tokens=True)": added,
        f"{type(tokenizer).__name__}, as loaded": tokenizer,
    }
    kept = {name: tuple(entry in t.tokenize(text) for text in texts.values()) for name, t in routes.items()}
    evidence.table(f"on transformers {versions.VERSION}", ["tokenizer and route", *texts.values()],
                   [(name, *(" ".join(t.tokenize(text)) for text in texts.values())) for name, t in routes.items()])
    assert list(kept.values()) == [(True, False), (False, False), (True, True), (False, False)]
    assert len(added) == len(tokenizer) and added.convert_tokens_to_ids(entry) == tokenizer.convert_tokens_to_ids(entry)


NEW_WORD = "bertspec"  # a Latin word no vocabulary has, unchanged by lowercasing


def copied_tokenizer_files(folder, to) -> None:
    """The checkpoint's files but its weights, into ``to``: a tokenizer folder to edit."""
    for path in Path(folder).iterdir():
        if path.is_file() and path.suffix not in (".safetensors", ".bin", ".h5", ".msgpack"):
            shutil.copy(path, to)


def test_an_unused_row_takes_a_new_word_only_where_vocab_txt_is_read_and_never_a_multi_character_chinese_word(tokenizer, tmp_path, evidence):
    """Writing a word over an [unused] row of vocab.txt gives it that row's id without resizing — but only a tokenizer that reads vocab.txt sees it (the default one reads tokenizer.json and still splits the word), and a Chinese word of several characters is never matched, since every character is split off first.

    The [unusedN] rows are ordinary rows pre-training never used (Devlin's
    advice: replace them, google-research/bert#396). Three traps: the
    Rust-backed tokenizer transformers loads by default is built from
    tokenizer.json when the folder has one, so an edited vocab.txt changes
    nothing (huggingface/transformers#4393); the Python WordPiece class
    (4.57's BertTokenizer, 5.x's BertTokenizerLegacy) reads vocab.txt, as does
    5.x's BertTokenizer once tokenizer.json is deleted; and a Chinese word
    such as 北京 written into a row is never produced, because the
    normaliser splits every CJK character off before WordPiece looks
    anything up. The vocabulary keeps its size, so the embedding matrix needs
    no resize; the row itself is untrained (add_tokens plus
    resize_token_embeddings is the other route).

    Claim ID: P6.17
    Question: Can I add my own words by replacing the [unused] rows of vocab.txt?
    问题：能否把 vocab.txt 里的 [unused] 行替换成自己的词来扩充词表？
    中文：把一个词写到 vocab.txt 的 [unused] 行上，它就得到该行的 id 而无需扩展嵌入矩阵——但只有读取 vocab.txt 的分词器能看到它（默认的分词器读取 tokenizer.json，仍会把词拆开），而且由多个汉字组成的中文词永远匹配不上，因为每个汉字会先被拆开。
    原因：[unusedN] 行是预训练从未用过的普通行（Devlin 的建议：替换它们，google-research/bert#396）。三个陷阱：文件夹里有
    tokenizer.json 时，transformers 默认加载的 Rust 实现分词器由它构建，所以改动 vocab.txt 不起作用（huggingface/transformers#4393）；
    Python 的 WordPiece 类（4.57 的 BertTokenizer、5.x 的 BertTokenizerLegacy）读取 vocab.txt，删掉 tokenizer.json 后 5.x 的
    BertTokenizer 也会读取；写进某一行的中文词（如 北京）永远不会出现，因为规范化器在 WordPiece 查表之前就把每个 CJK 字符拆开了。
    词表大小不变，所以嵌入矩阵不需要扩展；但这一行本身没有训练过（另一条路是 add_tokens 加 resize_token_embeddings）。
    Asked in: google-research/bert#396, google-research/bert#1083, google-research/bert#237, google-research/bert#419, huggingface/transformers#237, bojone/bert4keras#408, huggingface/transformers#4393
    """
    vocab = tokenizer.get_vocab()
    slots = sorted((t for t in vocab if t.startswith("[unused")), key=vocab.get)[:2]
    if len(slots) < 2 or NEW_WORD in vocab:
        pytest.skip("the vocabulary has no [unused] rows to write words into")
    copied_tokenizer_files(tokenizer.name_or_path, tmp_path)
    if not (tmp_path / "vocab.txt").is_file():
        pytest.skip("the checkpoint has no vocab.txt: its vocabulary lives in tokenizer.json only")
    word_zh = CHINESE.words[0]
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    lines[vocab[slots[0]]], lines[vocab[slots[1]]] = NEW_WORD, word_zh
    (tmp_path / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    default, python = AutoTokenizer.from_pretrained(str(tmp_path)), python_wordpiece().from_pretrained(str(tmp_path))
    evidence.table(f"{slots[0]} → {NEW_WORD}, {slots[1]} → {word_zh} in a copy of vocab.txt", ["tokenizer", NEW_WORD, word_zh, "size"],
                   [(f"{type(t).__name__} ({how})", " ".join(t.tokenize(NEW_WORD)), " ".join(t.tokenize(word_zh)), len(t))
                    for how, t in (("AutoTokenizer, tokenizer.json kept", default), ("Python WordPiece, reads vocab.txt", python))])
    assert default.tokenize(NEW_WORD) != [NEW_WORD], "the default tokenizer reads tokenizer.json, not the edited vocab.txt"
    assert python.tokenize(NEW_WORD) == [NEW_WORD] and python.convert_tokens_to_ids(NEW_WORD) == vocab[slots[0]]
    assert len(python) == len(tokenizer), "no new row: the embedding matrix keeps its size"
    assert word_zh not in python.tokenize(word_zh) and len(python.tokenize(word_zh)) == len(word_zh)


# ---- special tokens and length ----

def test_leaving_out_cls_and_sep_changes_every_real_tokens_output_beyond_rounding(bert, evidence):
    """Even for token vectors alone, [CLS] and [SEP] matter: the model never adds them itself, and without them (add_special_tokens=False) every real token's output changes, by far more than rounding.

    The tokenizer adds [CLS] and [SEP]; the model takes the ids it is given.
    Leave them out (add_special_tokens=False, or tokenize plus
    convert_tokens_to_ids) and every token attends to two keys fewer, sits
    one position earlier, and meets a layout pre-training never showed it
    (there was always [CLS] first and [SEP] last). So "the special tokens only
    matter for classification" is wrong: each real token's last hidden state
    moves beyond the rounding bound of two forwards of the same input
    (bertspec.proof.tolerances.model_tolerance); and a [CLS]-reading head would
    read the first character instead.

    Claim ID: P6.18
    Question: Do I need [CLS] and [SEP] if I only want token vectors (add_special_tokens=False)?
    问题：如果只要 token 向量，还需要 [CLS] 和 [SEP] 吗（add_special_tokens=False）？
    中文：即使只要 token 向量，[CLS] 与 [SEP] 也有影响：模型从不自己加上它们，没有它们（add_special_tokens=False）时，每个真实 token 的输出都会改变，远超舍入误差。
    原因：[CLS] 与 [SEP] 是分词器加的；模型接受给它的 id。去掉它们（add_special_tokens=False，或 tokenize 加 convert_tokens_to_ids），
    每个 token 就少了两个可关注的 key，位置前移一位，而且面对的是预训练从未见过的排列（那时总有开头的 [CLS] 和结尾的 [SEP]）。所以
    “特殊 token 只对分类有用”是错的：每个真实 token 的最后一层隐藏状态的变化都超过同一输入两次前向的舍入误差界
    （bertspec.proof.tolerances.model_tolerance）；读取 [CLS] 的头则会读到第一个字。
    Asked in: huggingface/transformers#812, jina-ai/clip-as-service#151, 131250208/TPlinker-joint-extraction#13, SALT-NLP/MixText#5, LightTag/sequence-labeling-with-transformers#2, tensorflow/text#146, dbamman/lrec2020-coref#1
    """
    tok, text = bert.tokenizer, bert.texts.pair[0]
    wrapped = bert.encode(text)
    real = wrapped.input_ids[0][~torch.tensor(tok.get_special_tokens_mask(wrapped.input_ids[0].tolist(),
                                                                         already_has_special_tokens=True), dtype=torch.bool)]
    bare = bert.batch(tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(bert.device))
    with_specials = bert.last_hidden(wrapped)[0, 1:-1]
    without = bert.last_hidden(bare)[0]
    tolerance = model_tolerance(bert, bare, without)["atol"]
    moved = (with_specials - without).abs().amax(-1)
    evidence.table(f"{text}: each real token's largest change", ["token", "max |Δ output|", "rounding bound"],
                   [(t, m, tolerance) for t, m in zip(tok.convert_ids_to_tokens(bare.input_ids[0].tolist()), moved.tolist())])
    assert torch.equal(bare.input_ids[0].cpu(), real.cpu()), "the same tokens, only the specials left out"
    assert not set(bare.input_ids[0].tolist()) & {tok.cls_token_id, tok.sep_token_id}, "the model adds no specials itself"
    assert bool((moved > tolerance).all()), "every real token's output changes beyond rounding"


def long_text(texts: Texts) -> str:
    return " ".join(texts.corpus())


def test_max_length_counts_cls_and_sep_so_a_full_input_holds_fewer_content_tokens(bert, evidence):
    """max_length bounds the final ids, [CLS] and [SEP] included: truncated to the position table's size, a text keeps two fewer content tokens (a pair three fewer) and runs; truncating the content to that size and adding the specials afterwards overflows the table.

    The tokenizer truncates so that the ids it returns, special tokens and
    all, number at most max_length; num_special_tokens_to_add says how many
    it adds (BERT: 2 for one text, 3 for a pair). bert-base's 512 positions
    hold 510 content tokens, 509 for a pair. Cutting the content to 512 first
    and wrapping it afterwards (huggingface/transformers#2273: block_size 512
    plus the specials) gives 514 ids, past the position table: the error of
    test_transformers_itself_fails_on_an_over_long_input_with_an_error_that_never_says_too_long.

    Claim ID: P6.19
    Question: Does max_length count [CLS] and [SEP] — is the limit 512 or 510 content tokens?
    问题：max_length 包含 [CLS] 和 [SEP] 吗？上限是 512 还是 510 个内容 token？
    中文：max_length 限制的是最终的 id，[CLS] 与 [SEP] 都算在内：截断到位置表的大小时，一段文本保留的内容 token 少两个（句对少三个），并且能正常运行；先把内容截到这个大小再加特殊 token，就会超出位置表。
    原因：分词器截断时保证它返回的 id（连同特殊 token）不超过 max_length；num_special_tokens_to_add 给出它加几个（BERT：单句 2 个，
    句对 3 个）。bert-base 的 512 个位置能容纳 510 个内容 token，句对 509 个。先把内容截到 512 再包上特殊 token
    （huggingface/transformers#2273：block_size 512 再加特殊 token）得到 514 个 id，超出位置表：即
    test_transformers_itself_fails_on_an_over_long_input_with_an_error_that_never_says_too_long 所示的错误。
    Asked in: huggingface/transformers#108, huggingface/transformers#2273, facebookresearch/mmf#383, allenai/allennlp#4672, huggingface/transformers#1252
    """
    tok, limit = bert.tokenizer, bert.max_positions
    text = long_text(bert.texts)
    content = tok(text, add_special_tokens=False)["input_ids"]
    if len(content) <= limit:
        pytest.skip(f"the example corpus is {len(content)} tokens in this vocabulary, not longer than the {limit} positions")
    single = tok(text, truncation=True, max_length=limit, return_special_tokens_mask=True)
    pair = tok(text, text, truncation=True, max_length=limit, return_special_tokens_mask=True)
    kept = {name: e["special_tokens_mask"].count(0) for name, e in (("one text", single), ("a pair", pair))}
    added = {"one text": tok.num_special_tokens_to_add(pair=False), "a pair": tok.num_special_tokens_to_add(pair=True)}
    content_first = len(content[:limit]) + added["one text"]  # the #2273 route: cut the content, then wrap it
    evidence.table(f"max_length = {limit}, the position table's size", ["input", "ids", "content tokens", "special tokens"],
                   [(name, len(e["input_ids"]), kept[name], added[name]) for name, e in (("one text", single), ("a pair", pair))]
                   + [("content cut to max_length, then wrapped", content_first, limit, added["one text"])])
    assert len(single["input_ids"]) == len(pair["input_ids"]) == limit
    assert kept == {name: limit - n for name, n in added.items()}, "max_length counts the special tokens"
    output = bert.last_hidden(bert.batch(torch.tensor([single["input_ids"]], device=bert.device)))
    assert output.shape[1] == limit and bool(output.isfinite().all())
    assert content_first > limit, "wrapping after cutting the content overflows the position table"


def kept_tokens(tokenizer, a: str, b: str, strategy, max_length: int) -> tuple[list[str], list[str]]:
    """The tokens of ``a`` and of ``b`` that survive truncating the pair."""
    encoding = tokenizer(a, b, truncation=strategy, max_length=max_length)
    pieces = list(zip(encoding.tokens(), encoding.sequence_ids()))
    return [t for t, s in pieces if s == 0], [t for t, s in pieces if s == 1]


def test_pair_truncation_cuts_the_longer_sequence_from_its_end_never_the_end_of_the_pair(tokenizer, evidence):
    """truncation=True on a sentence pair means longest_first: tokens go one at a time from the end of whichever sequence is longer, so a short sequence is kept whole and two long ones end within one token of each other; only_first and only_second cut one sequence and fail when it is too short. No strategy cuts the end of the concatenation.

    The tempting readings are "it cuts the end of [CLS] A [SEP] B [SEP]"
    (then B would go first, and whole) and "it always cuts B" (that is
    only_second). longest_first removes a token from the end of the currently
    longer sequence until the pair fits; only_first / only_second cut only
    that sequence, and when it alone cannot absorb the excess the Rust
    tokenizer raises "Truncation error: Sequence to truncate too short to
    respect the provided max_length" (PR #5472's GLUE crash).

    Claim ID: P6.20
    Question: Which tokens does truncation cut from a sentence pair (longest_first / only_first / only_second)?
    问题：句对截断时（longest_first / only_first / only_second）到底切掉哪些 token？
    中文：句对上的 truncation=True 即 longest_first：每次从当前较长的那个序列的末尾去掉一个 token，所以短序列完整保留，两个长序列最后相差不超过一个 token；only_first 与 only_second 只截一个序列，它太短时就报错。没有哪种策略截的是拼接后整体的末尾。
    原因：诱人的理解是“截掉 [CLS] A [SEP] B [SEP] 的末尾”（那样 B 会最先被整段截掉）和“总是截 B”（那是 only_second）。longest_first
    每次从当前较长序列的末尾去掉一个 token，直到句对放得下；only_first / only_second 只截那一个序列，它独自吸收不了多出的长度时，
    Rust 分词器报错 “Truncation error: Sequence to truncate too short to respect the provided max_length”（PR #5472 中 GLUE 的崩溃）。
    Asked in: huggingface/tokenizers#108, huggingface/transformers#6292, huggingface/transformers#5472, huggingface/transformers#13323, huggingface/sentence-transformers#574
    """
    if not tokenizer.is_fast:
        pytest.skip("the Python tokenizer logs the truncation error instead of raising it")
    texts = texts_for(tokenizer)
    long_a, b, short = " ".join(texts.pair), texts.pair[1], texts.short
    tokens = {text: tokenizer.tokenize(text) for text in (long_a, b, short)}
    budget = len(tokens[b]) + len(tokens[b]) // 2  # B longer than half of it: longest_first cuts both
    max_length = budget + tokenizer.num_special_tokens_to_add(pair=True)
    cases = {"A long, B long: longest_first": (long_a, b, "longest_first"), "A long, B long: truncation=True": (long_a, b, True),
             "A long, B short: longest_first": (long_a, short, "longest_first"), "A long, B long: only_first": (long_a, b, "only_first")}
    kept = {name: kept_tokens(tokenizer, x, y, strategy, max_length) for name, (x, y, strategy) in cases.items()}
    concatenation_cut = (tokens[long_a][:budget], [])
    evidence.table(f"max_length {max_length}: {budget} content tokens", ["case", "A / B tokens", "kept of A / of B"],
                   [(name, f"{len(tokens[x])} / {len(tokens[y])}", f"{len(ka)} / {len(kb)}")
                    for (name, (x, y, _)), (ka, kb) in zip(cases.items(), kept.values())]
                   + [("A long, B long: only_second", f"{len(tokens[long_a])} / {len(tokens[b])}", "Truncation error"),
                      ("(wrong: the concatenation's end cut)", "", f"{budget} / 0")])
    both, by_default, with_short, first = kept.values()
    assert 2 * len(tokens[short]) <= budget < len(tokens[b]) * 2 <= len(tokens[long_a]), "the example texts' lengths"
    assert all(ka == tokens[x][:len(ka)] and kb == tokens[y][:len(kb)] for (x, y, _), (ka, kb) in zip(cases.values(), kept.values())), \
        "each sequence loses tokens from its end"
    assert len(both[0]) + len(both[1]) == budget and abs(len(both[0]) - len(both[1])) <= 1 and by_default == both
    assert with_short == (tokens[long_a][:budget - len(tokens[short])], tokens[short]), "a short sequence is kept whole"
    assert first == (tokens[long_a][:budget - len(tokens[b])], tokens[b])
    assert both != concatenation_cut
    with pytest.raises(Exception, match="Truncation error"):
        kept_tokens(tokenizer, long_a, b, "only_second", max_length)
