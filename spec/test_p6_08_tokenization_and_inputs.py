"""Chapter P6.8–P6.15 — questions learners asked about tokenization, Chinese included, each answered on the
tokenizer of the model under test with the tempting wrong answer failing beside it: what happens to Chinese
characters (whole-word masking, ## pieces, decode's spaces, NER alignment), and what BERT's normaliser changes and
what it leaves alone (vanishing characters, case, accents, character widths). The rest of the topic, adding words and
the special tokens and length of the input (P6.16–P6.20), is in spec/test_p6_16_adding_words_and_input_length.py.

Every BERT-family checkpoint bundled with the spec, and those of the zoo, has a WordPiece tokenizer behind a
BertNormalizer (the Rust-backed tokenizer transformers loads by default); the claims that read the normaliser skip
where a checkpoint has another one, and the claims about Chinese text skip where its vocabulary cannot spell Chinese.
"""

import copy
import re
import unicodedata
from bisect import bisect_right

import pytest
from tokenizers import normalizers
from transformers import DataCollatorForLanguageModeling

from bertspec.models.inputs import CHINESE, Texts, texts_for


def chinese(tokenizer) -> Texts:
    """The example texts, for a question about Chinese text: skipped where the vocabulary cannot spell Chinese."""
    texts = texts_for(tokenizer)
    if texts.language != CHINESE.language:
        pytest.skip(f"a question about Chinese text; this vocabulary's example texts are {texts.language!r}, so it "
                    "has (almost) no Chinese characters to show it with")
    return texts


def bert_normalizer(tokenizer) -> normalizers.BertNormalizer:
    """The tokenizer's BertNormalizer, in front of a WordPiece model: skipped where the checkpoint has another kind."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not isinstance(backend.normalizer, normalizers.BertNormalizer) \
            or type(backend.model).__name__ != "WordPiece":
        pytest.skip(f"{type(tokenizer).__name__} is not a Rust-backed WordPiece tokenizer behind a BertNormalizer "
                    "(a SentencePiece or byte-level BPE tokenizer normalises text its own way)")
    return backend.normalizer


NORMALIZER_SETTINGS = ("clean_text", "handle_chinese_chars", "strip_accents", "lowercase")


def settings(tokenizer) -> dict:
    n = bert_normalizer(tokenizer)
    return {name: getattr(n, name) for name in NORMALIZER_SETTINGS}


def renormalized(tokenizer, **changes):
    """A copy of the tokenizer whose BertNormalizer differs in ``changes``: the same vocabulary, read another way. It is
    what from_pretrained(..., do_lower_case=, strip_accents=, tokenize_chinese_chars=) builds for BERT's own tokenizer
    class (lowercase, strip_accents, handle_chinese_chars)."""
    changed = copy.deepcopy(tokenizer)
    changed.backend_tokenizer.normalizer = normalizers.BertNormalizer(**{**settings(tokenizer), **changes})
    return changed


def wordpiece(word: str, vocab, unk: str) -> list[str]:
    """WordPiece as BERT runs it on one word: the longest vocabulary prefix, then the longest ##continuation, and so
    on; the whole word is one [UNK] when some remainder matches nothing."""
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start and ("##" * bool(start) + word[start:end]) not in vocab:
            end -= 1
        if end == start:
            return [unk]
        pieces.append("##" * bool(start) + word[start:end])
        start = end
    return pieces


def is_cjk(text: str) -> bool:
    return bool(text) and all(unicodedata.name(c, "").startswith("CJK UNIFIED IDEOGRAPH") for c in text)


def spans(tokenizer, text: str) -> list[tuple[int, int]]:
    """Each token's (start, end) in ``text``, without the special tokens."""
    return [tuple(span) for span in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]


# ---- Chinese characters and WordPiece ----

WWM_CALLS = 8  # collator calls, as over an epoch: enough for token-level masking to split a word (p = 0.5)


def masked_positions(collator, encoding, calls: int = WWM_CALLS) -> list[set[int]]:
    """The positions each call of ``collator`` labels on one encoded text."""
    rows = []
    for _ in range(calls):
        labels = collator([dict(encoding)])["labels"][0]
        rows.append(set((labels != -100).nonzero().flatten().tolist()))
    return rows


def test_whole_word_masking_keeps_one_token_per_character_and_the_words_reach_only_the_masker(tokenizer, evidence):
    """A whole-word-masking Chinese BERT reads single characters like any Chinese BERT: segmenting the text into words changes no token, and only the pre-training masker uses the words, masking every character of a chosen word together.

    Whole-word masking (wwm) changes which positions pre-training masks, not
    the input: the tokenizer still puts every CJK character in a token of its
    own, so text segmented into words by jieba or LTP, written with spaces,
    gives exactly the tokens of the unsegmented text. Fine-tuning a wwm
    checkpoint needs no segmentation. The words reach only the masker:
    DataCollatorForLanguageModeling(whole_word_mask=True) groups tokens whose
    character offsets touch, so the spaces of the segmented text mark the
    words, and each word is masked whole, while token-level masking splits
    words. Without the spaces every character touches the next, and the whole
    sentence is one "word", masked all or nothing. (transformers 4.57 also has
    DataCollatorForWholeWordMask, fed word boundaries as a chinese_ref list of
    positions (PR #7925), deprecated in favour of whole_word_mask=True and gone
    in 5.x.)

    Claim ID: P6.8
    Question: Chinese-BERT-wwm still tokenizes into single characters — do I need word segmentation to fine-tune it?
    问题：Chinese-BERT-wwm 分词后仍是单字——微调时需要先做分词吗？
    中文：全词掩码的中文 BERT 与普通中文 BERT 一样读单字：把文本分成词不会改变任何 token，只有预训练的掩码器用到词，它把选中词的每个字一起遮盖。
    原因：全词掩码（wwm）改变的是预训练遮盖哪些位置，而不是输入：分词器仍把每个 CJK 字符放进单独的 token，所以用 jieba 或 LTP
    分好词、以空格隔开的文本，得到的 token 与未分词的文本完全相同。微调 wwm checkpoint 不需要分词。词只到达掩码器：
    DataCollatorForLanguageModeling(whole_word_mask=True) 把字符偏移相接的 token 归为一个词，所以分词文本中的空格标出了词，
    每个词被整体遮盖，而按 token 遮盖会把词拆开。没有空格时每个字都与下一个字相接，整句成了一个“词”，要么全遮要么全不遮。
    （transformers 4.57 还有 DataCollatorForWholeWordMask，以 chinese_ref 位置列表传入词边界（PR #7925），已被
    whole_word_mask=True 取代并标为弃用，5.x 中已删除。）
    Asked in: ymcui/Chinese-BERT-wwm#40, ymcui/Chinese-BERT-wwm#18, ymcui/Chinese-BERT-wwm#219, ymcui/Chinese-BERT-wwm#117, ymcui/Chinese-BERT-wwm#13, google-research/bert#780, huggingface/transformers#3171, huggingface/transformers#7925
    """
    words = chinese(tokenizer).words
    segmented, plain = " ".join(words), "".join(words)
    vocab = tokenizer.get_vocab()
    starts = [segmented.index(w) for w in words]  # each word's first character in the segmented text
    encoding = tokenizer(segmented, return_offsets_mapping=True, return_special_tokens_mask=True)
    word_of = {i: bisect_right(starts, s) - 1 for i, (s, e) in enumerate(encoding["offset_mapping"]) if e > s}

    def collator(whole_word_mask: bool):
        return DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5, whole_word_mask=whole_word_mask,
                                               mask_replace_prob=1.0, random_replace_prob=0.0, seed=1)

    def split_words(masked: set[int]) -> list[str]:
        return [w for k, w in enumerate(words) if 0 < sum(word_of[i] == k for i in masked) < len(w)]

    def shown(masked: set[int]) -> str:
        return " ".join("".join("□" if i in masked else segmented[encoding["offset_mapping"][i][0]]
                                for i in word_of if word_of[i] == k) for k in range(len(words)))

    whole = masked_positions(collator(True), encoding)
    token_level = masked_positions(collator(False), {k: v for k, v in encoding.items() if k != "offset_mapping"})
    unsegmented = masked_positions(collator(True), tokenizer(plain, return_offsets_mapping=True,
                                                             return_special_tokens_mask=True))
    evidence.table("the same text, segmented or not", ["input", "tokens"],
                   [(segmented, " ".join(tokenizer.tokenize(segmented))), (plain, " ".join(tokenizer.tokenize(plain)))])
    evidence.table(f"what {WWM_CALLS} calls of each collator mask (□), seeded", ["call", "whole_word_mask=True",
                   "token-level", "whole_word_mask=True, unsegmented: masked"],
                   [(n + 1, shown(w), shown(t), f"{len(u)} of {len(plain)}") for n, (w, t, u)
                    in enumerate(zip(whole, token_level, unsegmented))])
    assert tokenizer.tokenize(segmented) == tokenizer.tokenize(plain) == [c if c in vocab else tokenizer.unk_token
                                                                          for c in plain]
    assert any(whole) and not any(split_words(m) for m in whole), "whole-word masking masks each word whole"
    assert any(split_words(m) for m in token_level), "token-level masking splits words"
    assert all(len(m) in (0, len(plain)) for m in unsegmented), "without spaces the sentence is one word"


def test_chinese_continuation_pieces_appear_only_when_tokenize_chinese_chars_is_off(tokenizer, evidence):
    """A Chinese vocabulary's ##字 rows are never produced while tokenize_chinese_chars is on, as it is by default: every character is a word of its own; only with it off does WordPiece see a run of characters and continue it with ## pieces, or make it one [UNK].

    BERT's normaliser puts spaces around every CJK character
    (tokenize_chinese_chars, handle_chinese_chars in the Rust normaliser), so
    WordPiece only ever sees single characters, each a whole word that needs
    no continuation. The ##字 rows of bert-base-chinese's vocabulary come from
    building it on unsegmented text; they are unused (google-research/bert
    #572: "同问"). Turned off, the same sentence is one word, and WordPiece
    splits it greedily: 北 ##京 ##是 … where the vocabulary has those rows, a
    single [UNK] for the whole sentence where it has not (the bundled
    vocabulary, which has none). Until PR #15158 the Rust-backed
    BertTokenizerFast ignored tokenize_chinese_chars=False (#15156). The claim
    checks both settings against a WordPiece written out, and that the
    checkpoint's tokenizer gives the tokens of its own setting.

    Claim ID: P6.9
    Question: Why does the Chinese vocab.txt contain "##字" tokens when the tokenizer never produces them?
    问题：中文 vocab.txt 里为什么有 “##字” 这类 token，而分词结果里从不出现？
    中文：tokenize_chinese_chars 默认开启时，中文词表的 ##字 行从不会被用到：每个字都是单独的词；只有关掉它，WordPiece 才会看到一串汉字，用 ## 子词接续，或把整串变成一个 [UNK]。
    原因：BERT 的规范化器在每个 CJK 字符两侧加空格（tokenize_chinese_chars，Rust 规范化器中叫 handle_chinese_chars），所以 WordPiece
    只会看到单个汉字，每个都是不需要接续的完整的词。bert-base-chinese 词表中的 ##字 行来自在未分词文本上构建词表；它们用不到
    （google-research/bert#572：“同问”）。关掉它，同一句话就是一个词，WordPiece 贪心地切分：词表有这些行时切成 北 ##京 ##是 …，
    没有时（自带词表就没有）整句变成一个 [UNK]。在 PR #15158 之前，Rust 实现的 BertTokenizerFast 会忽略 tokenize_chinese_chars=False
    （#15156）。本断言把两种设置与手写的 WordPiece 比较，并检查 checkpoint 的分词器给出它自己设置下的 token。
    Asked in: google-research/bert#572, ymcui/Chinese-BERT-wwm#191, huggingface/transformers#7362, huggingface/transformers#15156, huggingface/transformers#15158, FlagOpen/FlagEmbedding#1408
    """
    texts = chinese(tokenizer)
    vocab, unk = tokenizer.get_vocab(), tokenizer.unk_token
    run = "".join(w for w in texts.words if is_cjk(w))
    rows = sorted(t for t in vocab if t.startswith("##") and is_cjk(t[2:]))
    on, off = (renormalized(tokenizer, handle_chinese_chars=flag) for flag in (True, False))
    produced = {t for line in texts.corpus()[:20] for t in on.tokenize(line) if t.startswith("##") and is_cjk(t[2:])}
    own = settings(tokenizer)["handle_chinese_chars"]
    evidence.table(run, ["tokenize_chinese_chars", "tokens", "WordPiece of the run, written out"],
                   [(True, " ".join(on.tokenize(run)), ""), (False, " ".join(off.tokenize(run)), " ".join(wordpiece(run, vocab, unk))),
                    (f"{own} (this checkpoint's)", " ".join(tokenizer.tokenize(run)), "")])
    evidence.table("##字 rows", ["in the vocabulary", "examples", "produced on 20 corpus lines with the setting on"],
                   [(len(rows), " ".join(rows[:5]), len(produced))])
    assert on.tokenize(run) == [c if c in vocab else unk for c in run]
    assert off.tokenize(run) == wordpiece(run, vocab, unk) != on.tokenize(run)
    assert not produced, "with tokenize_chinese_chars on no ##字 piece is ever produced"
    assert tokenizer.tokenize(run) == (on if own else off).tokenize(run)


def readable_chinese(tokenizer, texts: Texts) -> str:
    """The first example sentence every character of which is in the vocabulary (so decoding it gives no [UNK])."""
    for text in (*texts.pair, *texts.filled):
        if tokenizer.unk_token not in tokenizer.tokenize(text):
            return text
    pytest.skip("every example sentence has a character the vocabulary lacks; decoding it would give [UNK]")


BETWEEN_WIDE = re.compile(r"(?<=[^\x00-\x7f]) (?=[^\x00-\x7f])")  # a space between two non-ASCII characters


def test_decode_joins_chinese_characters_with_spaces_and_the_offsets_give_the_text_back(tokenizer, evidence):
    """tokenizer.decode puts a space between Chinese characters, so decode(encode(text)) is not the text; removing the spaces between them, or cutting the text by the offsets, gives it back.

    WordPiece's decoder joins tokens with spaces and glues only ## pieces to
    the token before them. Every Chinese character is a token of its own,
    so 北京是中国的首都。 decodes to 北 京 是 中 国 的 首 都 。 — on 4.57 and
    5.x alike. The original text is not stored in the ids; recover it by
    removing the spaces between CJK characters, or, exactly, by cutting the
    input text at each token's offsets (return_offsets_mapping).

    Claim ID: P6.10
    Question: Why does tokenizer.decode put spaces between Chinese characters?
    问题：tokenizer.decode 为什么在汉字之间加空格？
    中文：tokenizer.decode 在汉字之间加空格，所以 decode(encode(text)) 不等于原文；去掉汉字间的空格，或按偏移切出原文，就能还原。
    原因：WordPiece 的解码器用空格连接 token，只把 ## 子词粘到前一个 token 上。每个汉字都是单独的 token，所以 北京是中国的首都。
    解码为 北 京 是 中 国 的 首 都 。——4.57 与 5.x 相同。id 中没有保存原文；去掉 CJK 字符之间的空格，或者更准确地，按每个 token
    的偏移（return_offsets_mapping）切出输入文本，就能还原。
    Asked in: PaddlePaddle/PaddleNLP#4822, keras-team/keras-hub#2144, huggingface/tokenizers#1165, feyninc/chonkie#173
    """
    text = readable_chinese(tokenizer, chinese(tokenizer))
    decoded = tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True)
    from_offsets = "".join(text[s:e] for s, e in spans(tokenizer, text))
    evidence.table("the round trip", ["route", "text"],
                   [("input", text), ("decode(encode(text))", decoded), ("spaces between CJK removed", BETWEEN_WIDE.sub("", decoded)),
                    ("the input cut at the offsets", from_offsets)])
    assert decoded != text, "decode does not give the text back"
    assert decoded == " ".join(tokenizer.tokenize(text))
    assert BETWEEN_WIDE.sub("", decoded) == from_offsets == text


NUMBER, LATIN = "2008", "iphone"  # runs of digits and Latin letters, as Chinese NER data has them


def ner_example(words: tuple[str, ...]) -> tuple[str, list[str]]:
    """A Chinese sentence with a number and a Latin word in it, and one BIO label per character."""
    parts = [(words[0], "LOC"), (NUMBER, "NUM"), ("".join(words[1:-1]), None), (LATIN, "PROD"), (words[-1], None)]
    labels = [("B-" if i == 0 else "I-") + kind if kind else "O" for part, kind in parts for i in range(len(part))]
    return "".join(part for part, _ in parts), labels


def test_digit_and_latin_runs_make_fewer_tokens_than_characters_so_labels_align_by_offsets_not_by_position(tokenizer, evidence):
    """In Chinese NER the tokens are fewer than the characters — a run of digits or Latin letters is one WordPiece word — so character labels must follow each token's offsets (or one character per word, is_split_into_words), never the tokens' positions.

    Chinese characters are one token each, but digits and Latin letters are
    not CJK: a run of them is one word, which WordPiece makes one token, a
    few ## pieces or one [UNK] (bert-base-chinese: 1234567890 → 123456 ##78
    ##90, RasaHQ/rasa#6753). Zipping per-character labels with the tokens
    then shifts every label after the run. The offsets (return_offsets_mapping,
    or word_ids) say which characters each token covers: label a token by its
    first character. Or pass the characters as words
    (is_split_into_words=True): one token per character, as the labels are.

    Claim ID: P6.11
    Question: In Chinese NER, numbers and English words make the token sequence shorter than the character sequence — how do I align labels?
    问题：中文 NER 中数字和英文单词使 token 序列比字符序列短，标签如何对齐？
    中文：中文 NER 中 token 比字符少——一串数字或拉丁字母是一个 WordPiece 词——所以字符标签必须按每个 token 的偏移对齐（或每个字作为一个词，is_split_into_words），绝不能按 token 的位置对齐。
    原因：汉字各是一个 token，但数字和拉丁字母不是 CJK 字符：连在一起的一串是一个词，WordPiece 把它变成一个 token、几个 ## 子词或一个
    [UNK]（bert-base-chinese：1234567890 → 123456 ##78 ##90，RasaHQ/rasa#6753）。把逐字标签与 token 直接 zip，这串之后的每个标签都会错位。
    偏移（return_offsets_mapping 或 word_ids）说明每个 token 覆盖哪些字：用它的第一个字的标签。或者把每个字作为一个词传入
    （is_split_into_words=True）：每个字一个 token，与标签一一对应。
    Asked in: lonePatient/BERT-NER-Pytorch#65, lonePatient/BERT-NER-Pytorch#91, v-mipeng/LexiconAugmentedNER#38, huggingface/transformers#1132, RasaHQ/rasa#6753, lemonhu/NER-BERT-pytorch#12, macanv/BERT-BiLSTM-CRF-NER#104
    """
    text, labels = ner_example(chinese(tokenizer).words)
    tokens = tokenizer.tokenize(text)
    offsets = spans(tokenizer, text)
    if all(e - s == 1 for s, e in offsets):
        pytest.skip(f"this vocabulary splits {NUMBER} and {LATIN} into one token per character: tokens and characters align")
    aligned = [labels[s] for s, _ in offsets]
    zipped = labels[:len(tokens)]
    per_character = tokenizer(list(text), is_split_into_words=True, add_special_tokens=False)
    evidence.table(text, ["token", "characters (offsets)", "label by offsets", "label by position (zip)"],
                   [(t, text[s:e], a, z) for t, (s, e), a, z in zip(tokens, offsets, aligned, zipped)])
    assert len(tokens) < len(text), "a digit or Latin run is fewer tokens than characters"
    assert [text[s:e] for s, e in offsets] != list(text)
    assert aligned != zipped, "zipping labels with tokens shifts them"
    assert len(per_character["input_ids"]) == len(text) and per_character.word_ids() == list(range(len(text)))


# ---- what BERT's normaliser changes, and what it leaves alone ----

VANISHING = {"\ufffd": "U+FFFD replacement character", "\x00": "U+0000 NUL", "\u200b": "U+200B zero-width space"}


def test_replacement_control_and_zero_width_characters_vanish_without_even_an_unk(tokenizer, evidence):
    """Some characters vanish in tokenization, not even an [UNK] left: U+FFFD, NUL and other control characters and zero-width spaces are removed by BERT's normaliser, so a text with them gives the very tokens of the text without them, and per-character labels shift.

    BertNormalizer's clean_text (BasicTokenizer._clean_text in the Python
    tokenizer) drops U+0000, U+FFFD and every control or format character
    (Unicode category C*, such as the zero-width space U+200B), and turns
    whitespace into separators, before any vocabulary lookup. A character the
    vocabulary lacks becomes [UNK]; these never reach the vocabulary. So
    "one token or [UNK] per character" does not hold: their positions are
    covered by no token's offsets, and labels counted by character shift.

    Claim ID: P6.12
    Question: Some characters disappear from the tokens entirely — not even [UNK] — and my labels shift. Why?
    问题：有些字符在分词后彻底消失（连 [UNK] 都没有），导致标签错位，为什么？
    中文：有些字符在分词中直接消失，连 [UNK] 都不留：U+FFFD、NUL 等控制字符和零宽空格被 BERT 的规范化器删除，所以含有它们的文本与不含它们的文本得到完全相同的 token，按字符计的标签随之错位。
    原因：BertNormalizer 的 clean_text（Python 分词器中的 BasicTokenizer._clean_text）在查词表之前删除 U+0000、U+FFFD 以及所有控制或格式字符
    （Unicode 类别 C*，如零宽空格 U+200B），并把空白变成分隔符。词表没有的字会变成 [UNK]；这些字符根本到不了词表。所以
    “每个字符一个 token 或 [UNK]”并不成立：它们的位置不被任何 token 的偏移覆盖，按字符计的标签会错位。
    Asked in: huggingface/transformers#12249, PaddlePaddle/PaddleNLP#880
    """
    if not settings(tokenizer)["clean_text"]:
        pytest.skip("this tokenizer's normaliser is configured with clean_text=False: it keeps these characters")
    clean = texts_for(tokenizer).pair[0]
    starts = [s for s, _ in spans(tokenizer, clean)]  # inserted before a token, between two tokens' offsets
    cuts = [starts[len(starts) * k // (len(VANISHING) + 1)] for k in range(1, len(VANISHING) + 1)]
    dirty = "".join(clean[a:b] + c for a, b, c in zip([0, *cuts], cuts, VANISHING)) + clean[cuts[-1]:]
    inserted = {i for i, c in enumerate(dirty) if c in VANISHING}
    covered = {i for s, e in spans(tokenizer, dirty) for i in range(s, e)}
    unseen = {i for i in range(len(dirty)) if i not in covered and not dirty[i].isspace()}
    evidence.table("tokens", ["text", "tokens", "[UNK]s"],
                   [(repr(t), " ".join(tokenizer.tokenize(t)), tokenizer.tokenize(t).count(tokenizer.unk_token))
                    for t in (clean, dirty)])
    evidence.table("characters no token covers", ["position", "character"], [(i, VANISHING.get(dirty[i], dirty[i])) for i in sorted(unseen)])
    assert tokenizer.tokenize(dirty) == tokenizer.tokenize(clean), "the inserted characters leave no token, not even [UNK]"
    assert unseen == inserted


def case_word(tokenizer) -> tuple[str, str]:
    """(a vocabulary entry of Latin letters, the word as typed with a capital) where only one of the typed word and its
    lowercase is in the vocabulary: lowercasing decides whether the entry is found."""
    vocab, special = tokenizer.get_vocab(), set(tokenizer.all_special_tokens)
    for entry in sorted(vocab, key=vocab.get):
        typed = entry[:1].upper() + entry[1:]
        if entry.isascii() and entry.isalpha() and entry not in special and (typed in vocab) != (typed.lower() in vocab):
            return entry, typed
    pytest.skip("no Latin word of this vocabulary is found in one case only")


def test_whether_a_capital_letter_finds_its_vocabulary_entry_depends_on_the_tokenizers_lowercasing(tokenizer, evidence):
    """Whether a capital letter reaches its vocabulary entry or becomes [UNK] is decided by the lowercasing (do_lower_case) the checkpoint's tokenizer is configured with, matched against the case of its vocabulary, not by the model's language.

    Chinese vocabularies hold lowercase Latin only: no "A" in
    bert-base-chinese's vocab.txt. With lowercasing on, "Apple" is looked up
    as "apple"; with it off, as "Apple", which is not there: [UNK]. Threads
    report bert-base-chinese's tokenizer running with do_lower_case=False and
    its capitals becoming [UNK], while Chinese-BERT-wwm's models are uncased
    (do_lower_case=True). A cased vocabulary (ProtBert's capital letters) needs
    lowercasing off. Check the setting the checkpoint ships
    (tokenizer.backend_tokenizer.normalizer.lowercase, which every Rust-backed
    BERT tokenizer has; do_lower_case on BERT's own class) against its
    vocabulary, not the model's name. The claim takes a Latin word of the
    vocabulary found in one case only and checks both settings against a
    WordPiece written out.

    Claim ID: P6.13
    Question: Why is bert-base-chinese case-sensitive (do_lower_case) and my capital letters become [UNK]?
    问题：为什么 bert-base-chinese 区分大小写（do_lower_case），大写字母变成 [UNK]？
    中文：大写字母能否找到它的词表条目，还是变成 [UNK]，取决于 checkpoint 分词器配置的小写化（do_lower_case）与词表大小写是否一致，而不是模型的语言。
    原因：中文词表只有小写拉丁字母：bert-base-chinese 的 vocab.txt 里连 “A” 都没有。小写化开启时，“Apple” 按 “apple” 查找；关闭时按
    “Apple” 查找，词表中没有：[UNK]。有讨论指出 bert-base-chinese 的分词器以 do_lower_case=False 运行，大写字母变成 [UNK]；而
    Chinese-BERT-wwm 的模型都是 uncased（do_lower_case=True）。区分大小写的词表（ProtBert 的大写字母）则需要关掉小写化。要拿 checkpoint
    附带的设置（tokenizer.backend_tokenizer.normalizer.lowercase，每个 Rust 实现的 BERT 分词器都有；BERT 自己的类上是 do_lower_case）
    与它的词表对照，而不是看模型名字。本断言取词表中只以一种大小写出现的拉丁词，把两种设置与手写的 WordPiece 比较。
    Asked in: google-research/bert#1188, huggingface/transformers#9286, PaddlePaddle/PaddleNLP#2508, ymcui/Chinese-BERT-wwm#121
    """
    entry, typed = case_word(tokenizer)
    vocab, own = tokenizer.get_vocab(), settings(tokenizer)["lowercase"]
    expected = {flag: wordpiece(typed.lower() if flag else typed, vocab, tokenizer.unk_token) for flag in (True, False)}
    observed = {flag: renormalized(tokenizer, lowercase=flag).tokenize(typed) for flag in (True, False)}
    evidence.table(f"{typed!r} (vocabulary entry {entry!r})", ["lowercase", "tokens", "WordPiece written out"],
                   [(f"{flag}{' (this checkpoint)' if flag == own else ''}", " ".join(observed[flag]), " ".join(expected[flag]))
                    for flag in (True, False)])
    assert observed == expected
    assert [observed[True], observed[False]].count([entry]) == 1, "exactly one setting finds the entry"
    assert tokenizer.tokenize(typed) == observed[own]


PINYIN_AND_KANA = "Nǐ hǎo パンダ"  # pinyin tone marks, and the dakuten of ダ (NFD: タ + U+3099)


def normalized_by_hand(text: str, lowercase: bool, strip_accents: bool | None) -> str:
    """BertNormalizer's accent and case steps written out: strip_accents None follows lowercase; stripping is NFD,
    then dropping every non-spacing mark (Unicode category Mn)."""
    if lowercase if strip_accents is None else strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return text.lower() if lowercase else text


ACCENT_SETTINGS = ((True, None), (True, False), (False, None), (False, True))  # (lowercase, strip_accents)


def test_lowercasing_also_strips_pinyin_tone_marks_and_dakuten_unless_strip_accents_is_false(tokenizer, evidence):
    """BERT's lowercasing also strips accents: with strip_accents unset, do_lower_case removes pinyin tone marks (nǐ → ni), Latin accents (café → cafe) and Japanese dakuten (パンダ → ハンタ); strip_accents=False keeps them, and the vocabulary then sees other characters.

    With strip_accents left None, BertNormalizer strips accents whenever it
    lowercases (tokenizers PR #330 kept the original BERT behaviour; transformers
    PR #6280 gave the Python tokenizer the same switch): NFD, then every
    non-spacing mark (Mn) is dropped. Tone marks and accents are such marks,
    and so is the dakuten: パンダ (panda) becomes ハンタ (hunter),
    google-research/bert#130. CJK ideographs do not decompose and stay. The
    claim checks the normaliser under each setting against those steps
    written out, and an accented letter against the vocabulary: stripped, it
    finds the plain letter's entry.

    Claim ID: P6.14
    Question: Why does the BERT tokenizer drop pinyin tone marks, accents, and Japanese dakuten?
    问题：为什么 BERT tokenizer 会去掉拼音声调、重音符号和日文浊音符号？
    中文：BERT 的小写化同时会去掉重音：strip_accents 未设置时，do_lower_case 会去掉拼音声调（nǐ → ni）、拉丁字母重音（café → cafe）和日文浊音符号（パンダ → ハンタ）；strip_accents=False 保留它们，词表看到的就是另外的字符。
    原因：strip_accents 为 None 时，BertNormalizer 只要小写化就去掉重音（tokenizers PR #330 保持了原版 BERT 的行为；transformers
    PR #6280 给 Python 分词器加了同样的开关）：先做 NFD 分解，再删掉所有非间距标记（Mn）。声调与重音都是这类标记，浊音符号也是：
    パンダ（熊猫）变成 ハンタ（猎人），google-research/bert#130。CJK 汉字不分解，保持不变。本断言把每种设置下规范化器的输出与
    手写的这两步比较，并用一个带声调的字母对照词表：去掉声调后，它找到的是不带声调的字母的条目。
    Asked in: google-research/bert#130, huggingface/tokenizers#399, huggingface/tokenizers#330, huggingface/transformers#2742, huggingface/transformers#6280, google-research/electra#88, yitu-opensource/ConvBert#17, keras-team/keras-hub#289, huggingface/swift-transformers#354
    """
    own = settings(tokenizer)
    entry, typed = case_word(tokenizer)
    accented = unicodedata.normalize("NFC", typed[0] + "\u030c") + typed[1:]  # a caron on its first letter: Ǎ, ǎ
    variants = {s: renormalized(tokenizer, lowercase=s[0], strip_accents=s[1]) for s in ACCENT_SETTINGS}
    rows = [(f"lowercase={lower}, strip_accents={strip}{' (this checkpoint)' if (lower, strip) == (own['lowercase'], own['strip_accents']) else ''}",
             t.backend_tokenizer.normalizer.normalize_str(PINYIN_AND_KANA), " ".join(t.tokenize(accented)))
            for (lower, strip), t in variants.items()]
    evidence.table(f"{PINYIN_AND_KANA}, and {accented!r} (vocabulary entry {entry!r})", ["setting", "normalised", f"tokens of {accented}"], rows)
    for (lower, strip), t in variants.items():
        assert t.backend_tokenizer.normalizer.normalize_str(PINYIN_AND_KANA) == normalized_by_hand(PINYIN_AND_KANA, lower, strip)
    assert variants[True, None].backend_tokenizer.normalizer.normalize_str(PINYIN_AND_KANA) != PINYIN_AND_KANA.lower(), \
        "lowercasing does more than change the case"
    stripped, kept = (renormalized(tokenizer, strip_accents=flag).tokenize(accented) for flag in (True, False))
    assert stripped == [entry] != kept
    assert tokenizer.tokenize(accented) == wordpiece(normalized_by_hand(accented, own["lowercase"], own["strip_accents"]),
                                                     tokenizer.get_vocab(), tokenizer.unk_token)


HALF_WIDTH = ",:?1aA"  # ASCII punctuation, a digit and letters; each has a full-width form at + 0xFEE0


def test_full_width_and_half_width_characters_stay_different_tokens_because_bert_never_applies_nfkc(tokenizer, evidence):
    """BERT's tokenizer never folds full-width characters into half-width ones: "，" and "," (and "１" and "1", "ａ" and "a") stay different characters, so different ids or one of them [UNK]; only NFKC applied to the text beforehand makes them the same.

    BertNormalizer cleans, spaces out CJK, lowercases and strips accents, but
    applies no Unicode compatibility normalisation (NFKC): Ｂｅｉ１２，
    lowercases to ｂｅｉ１２，and stays full-width. Which forms a vocabulary
    holds is its own choice (the bundled one has the full-width Chinese
    punctuation and no ASCII punctuation; full-width letters are missing from
    bert-base-chinese, google-research/bert#572). SentencePiece models such as
    XLM-R and ChatGLM-6B do apply NFKC by default and turn "，" into ",",
    which is where the belief comes from. The claim shows each pair that the
    vocabulary holds at least one form of.

    Claim ID: P6.15
    Question: Is the Chinese comma "，" the same token as ","? Are full-width letters and digits normalised?
    问题：中文逗号“，”和英文“,”是同一个 token 吗？全角字母、数字会被规范化吗？
    中文：BERT 的分词器从不把全角字符折叠成半角：“，”与“,”（以及“１”与“1”、“ａ”与“a”）仍是不同的字符，得到不同的 id 或其中一个是 [UNK]；只有事先对文本做 NFKC 才会使它们相同。
    原因：BertNormalizer 做清理、给 CJK 加空格、小写化和去重音，但不做 Unicode 兼容规范化（NFKC）：Ｂｅｉ１２，小写化为 ｂｅｉ１２，
    仍是全角。词表收哪种形式是词表自己的选择（自带词表有全角中文标点、没有 ASCII 标点；bert-base-chinese 缺少全角字母，
    google-research/bert#572）。XLM-R、ChatGLM-6B 这类 SentencePiece 模型默认做 NFKC，会把“，”变成“,”，这个误解就由此而来。
    本断言展示词表至少收了其中一种形式的每一对字符。
    Asked in: google/sentencepiece#643, google/sentencepiece#789, zai-org/ChatGLM-6B#8, zai-org/ChatGLM-6B#1051, google-research/bert#572
    """
    n, vocab = bert_normalizer(tokenizer), tokenizer.get_vocab()
    pairs = [(half, chr(ord(half) + 0xFEE0)) for half in HALF_WIDTH]
    held = [(h, f) for h, f in pairs if any(n.normalize_str(c) in vocab for c in (h, f))]
    if not held:
        pytest.skip(f"the vocabulary holds neither form of any of {HALF_WIDTH!r}: both would be [UNK]")
    ids = {c: tokenizer(c, add_special_tokens=False)["input_ids"] for pair in held for c in pair}
    nfkc = {f: tokenizer(unicodedata.normalize("NFKC", f), add_special_tokens=False)["input_ids"] for _, f in held}
    evidence.table("each pair the vocabulary holds a form of", ["half-width", "full-width", "full-width normalised",
                   "tokens (half)", "tokens (full)", "tokens (full, after NFKC)"],
                   [(h, f, n.normalize_str(f), " ".join(tokenizer.tokenize(h)), " ".join(tokenizer.tokenize(f)),
                     " ".join(tokenizer.convert_ids_to_tokens(nfkc[f]))) for h, f in held])
    for h, f in held:
        assert n.normalize_str(f) != unicodedata.normalize("NFKC", n.normalize_str(f)), f"{f} kept full-width"
        assert ids[f] != ids[h] and nfkc[f] == ids[h]
