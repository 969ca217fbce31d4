"""Chapter P6.21–P6.27 — questions learners asked in public threads about BERT's positions and embeddings, each
answered on the model under test with the tempting wrong answer failing beside it.

Sections: positions (a learned table, the position_ids buffer, text longer than the table); embeddings and hidden
states (13 hidden states for 12 layers, new tokens, inputs_embeds, one static row but contextual outputs). What the
forward pass returns and how many parameters BERT has: spec/test_p6_28_outputs_and_parameter_counts.py.
"""

import copy
import math
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F

from bertspec.proof import scope
from bertspec.proof.compare import Z_BOUND, beyond, max_diff
from bertspec.proof.tolerances import TOL, model_tolerance


def without_position_table(bert) -> None:
    if bert.anatomy.position_embeddings is None:
        scope.differs(bert, "it has no position table: rotary positions turn queries and keys instead",
                      scope.MODERNBERT_ROTARY)


def encoder_output(bert, **inputs):
    with torch.no_grad():
        return bert.encoder(**inputs)


# ---- positions ----

def sinusoid(rows: int, width: int) -> torch.Tensor:
    """The original Transformer's fixed position table (Vaswani et al. 2017, section 3.5): sin on even columns, cos on odd."""
    position = torch.arange(rows, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(rows, width)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: width // 2])
    return table


def test_the_position_table_is_a_learned_parameter_that_gets_gradient_and_is_not_the_transformers_sinusoid(bert, evidence):
    """BERT's positions are rows of a learned table (nn.Embedding with max_position_embeddings rows): a trainable Parameter whose used rows get gradient, and whose values are not the sin/cos table of the original Transformer.

    BertEmbeddings builds ``position_embeddings = nn.Embedding(max_position_embeddings, hidden_size)``
    and adds row i at position i; pre-training learned those rows like any
    weight, and nothing in BERT computes a sinusoid. A backward pass reaches
    exactly the rows the input used (positions 0..T-1; RoBERTa's from
    padding_idx + 1) and no other. The tempting answer, "sin/cos as in
    Attention Is All You Need", is computed beside it: a fixed function, no
    gradient (DistilBERT's opt-in ``sinusoidal_pos_embds`` freezes such a
    table), and not the values this checkpoint holds.

    Claim ID: P6.21
    Question: Are BERT's position embeddings learned or sinusoidal like the original Transformer's?
    问题：BERT 的位置嵌入是学出来的，还是像原始 Transformer 那样用正弦函数？
    中文：BERT 的位置是一张学出来的表（行数为 max_position_embeddings 的 nn.Embedding）的行：它是可训练的 Parameter，被用到的行会得到梯度，其数值也不是原始 Transformer 的 sin/cos 表。
    原因：BertEmbeddings 构造 position_embeddings = nn.Embedding(max_position_embeddings, hidden_size)，在位置 i 加上第 i 行；
    预训练像学习其他权重一样学习这些行，BERT 中没有任何地方计算正弦函数。一次反向传播恰好到达输入用到的那些行（位置 0..T-1；RoBERTa 从
    padding_idx + 1 起），其他行没有梯度。诱人的答案“像 Attention Is All You Need 那样用 sin/cos”在旁边算出：它是固定函数，没有梯度
    （DistilBERT 可选的 sinusoidal_pos_embds 会冻结这样的表），也不是这个 checkpoint 保存的数值。
    Asked in: google-research/bert#58, google-research/bert#1427, huggingface/transformers#5569,
    huggingface/transformers#10511, codertimo/BERT-pytorch#53, NVIDIA/Megatron-LM#72
    """
    without_position_table(bert)
    if getattr(bert.config, "sinusoidal_pos_embds", False):
        pytest.skip("this checkpoint was built with sinusoidal_pos_embds=True: its position rows are a fixed sinusoid")
    a = bert.anatomy
    table = bert.module(a.position_embeddings)
    batch = bert.example(padded=False)
    used = a.default_position_ids(batch.input_ids, bert.word_embeddings.padding_idx).flatten().tolist()
    hidden = bert.encoder(**batch.as_kwargs()).last_hidden_state
    (grad,) = torch.autograd.grad(hidden.square().sum(), table.weight)
    reached = (grad.abs().sum(dim=1) > 0).nonzero().flatten().tolist()
    fixed = sinusoid(*table.weight.shape).to(bert.device)
    weights = table.weight.detach()
    shown = sorted(set(used))[:4] + [max(used) + 1]
    evidence.table(f"position table {tuple(weights.shape)}: a Parameter, requires_grad={table.weight.requires_grad}",
                   ["row", "used by the input", "|gradient|", "|learned row|", "|sin/cos row|", "max |learned − sin/cos|"],
                   [(r, r in used, grad[r].norm(), weights[r].norm(), fixed[r].norm(), max_diff(weights[r], fixed[r]))
                    for r in shown if r < weights.shape[0]])
    assert isinstance(table, torch.nn.Embedding) and table.weight.requires_grad
    assert any(table.weight is p for p in bert.model.parameters())
    assert reached == sorted(set(used))
    assert beyond(weights, fixed, TOL["float32_kernels"])


def test_position_ids_is_a_buffer_left_out_of_the_state_dict_so_an_old_checkpoints_key_is_unexpected_and_carries_nothing(bert, evidence):
    """position_ids is a non-persistent buffer holding 0..max-1: state_dict() leaves it out, so a state dict saved with it fails a strict load with "Unexpected key(s)", and dropping the key changes nothing.

    The embeddings keep ``position_ids = arange(max_position_embeddings)`` as
    a buffer, not a weight: it is the default index into the position table,
    and nothing in it is learned. It was registered as a persistent buffer in
    v3.1 (PR #5773, issue #6882), so ``torch.save(model.state_dict())`` wrote
    it; PR #24505 made it non-persistent (users met it with v4.31, #25330),
    and ``load_state_dict`` of such an old dict now refuses the extra key.
    ``strict=False`` (or deleting the key) loses nothing: the copy loaded
    that way gives the same embeddings bit for bit. ``from_pretrained``
    ignores the key by itself. The tempting answers — the checkpoint is
    corrupt, or the positions are weights that would be lost — both fail.

    Claim ID: P6.22
    Question: Why do I get "Unexpected key(s) in state_dict: bert.embeddings.position_ids" when loading my saved model?
    问题：加载自己保存的模型时，为什么报 “Unexpected key(s) in state_dict: bert.embeddings.position_ids”？
    中文：position_ids 是保存 0..max-1 的非持久缓冲区：state_dict() 不包含它，所以带着它保存的 state dict 在严格加载时报 “Unexpected key(s)”，而丢掉这个键什么也不改变。
    原因：嵌入层把 position_ids = arange(max_position_embeddings) 作为缓冲区而不是权重保存：它是位置表的默认索引，里面没有任何学到的东西。
    v3.1 把它注册为持久缓冲区（PR #5773，issue #6882），于是 torch.save(model.state_dict()) 会写入它；PR #24505 把它改为非持久
    （用户在 v4.31 中遇到，#25330），现在 load_state_dict 加载这样的旧字典会拒绝多出的键。strict=False（或删除这个键）不会丢失任何东西：
    这样加载的副本给出逐位相同的嵌入。from_pretrained 会自行忽略这个键。诱人的答案——checkpoint 损坏了，或位置是会丢失的权重——都不成立。
    Asked in: huggingface/transformers#24505, huggingface/transformers#25330, huggingface/transformers#6882,
    gitabtion/BertBasedCorrectionModels#51, facebookresearch/DPR#165, xlxwalex/FCGEC#28, BinLiang-NLP/Sentic-GCN#12
    """
    a = bert.anatomy
    embeddings = bert.module(a.embeddings)
    buffers = dict(embeddings.named_buffers(recurse=False))
    if "position_ids" not in buffers:
        scope.not_applicable(bert, f"{type(embeddings).__name__} keeps no position_ids buffer")
    key = f"{a.embeddings}.position_ids"
    old_style = {**embeddings.state_dict(), "position_ids": buffers["position_ids"].clone()}  # as versions before PR #24505 saved it
    reloaded = copy.deepcopy(embeddings)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: \"position_ids\""):
        reloaded.load_state_dict(old_style)
    report = reloaded.load_state_dict(old_style, strict=False)
    batch = bert.example(padded=False)
    with torch.no_grad():
        before, after = embeddings(input_ids=batch.input_ids), reloaded(input_ids=batch.input_ids)
    rows = buffers["position_ids"].shape[-1]
    evidence.table(f"{key}", ["in named_buffers()", "in state_dict()", "equals arange(max)", "strict load",
                              "strict=False: unexpected", "max |Δ embeddings|"],
                   [(key in dict(bert.model.named_buffers()), key in bert.model.state_dict(),
                     torch.equal(buffers["position_ids"].flatten().cpu(), torch.arange(rows)),
                     "RuntimeError: Unexpected key(s)", ", ".join(report.unexpected_keys), max_diff(before, after))])
    assert key in dict(bert.model.named_buffers()) and key not in bert.model.state_dict()
    assert torch.equal(buffers["position_ids"].flatten().cpu(), torch.arange(rows))
    assert report.unexpected_keys == ["position_ids"] and not report.missing_keys
    torch.testing.assert_close(after, before, **TOL["exact"])


def long_text(bert, tokens: int) -> str:
    """The first lines of the vocabulary's running text, as many as make at least ``tokens`` tokens."""
    lines = bert.texts.corpus()
    for n in range(1, len(lines) + 1):
        text = " ".join(lines[:n])
        if len(bert.tokenizer(text, add_special_tokens=False)["input_ids"]) >= tokens:
            return text
    pytest.skip(f"the example corpus has fewer than {tokens} tokens")


def windows(bert, text: str, width: int, stride: int):
    """The text cut into windows of ``width`` tokens overlapping by ``stride``, the tokenizer's own way."""
    return bert.tokenizer(text, truncation=True, max_length=width, stride=stride, return_overflowing_tokens=True,
                          return_special_tokens_mask=True, padding=True, return_tensors="pt")


@pytest.mark.one_implementation  # the windows are the tokenizer's; no attention kernel decides them
def test_a_text_longer_than_the_window_is_read_in_overlapping_windows_while_truncation_drops_its_tail(bert, evidence):
    """A text longer than the window is cut by the tokenizer (stride, return_overflowing_tokens) into windows that each fit the position table, overlap by exactly the stride and together cover every token; truncation alone keeps only the first window and drops the rest.

    BERT has max_position_embeddings positions and refuses longer input
    (P4.2c), so raising max_length cannot help. The tokenizer splits
    instead: each window gets its own [CLS]/[SEP] and positions 0..L−1, and
    consecutive windows share ``stride`` tokens, so every token is read with
    some context on both sides in at least one window. The windows run as one
    padded batch give each window the outputs it gets alone; a token in an
    overlap gets a different vector in each window (its context differs), so
    which window's vector to keep is a choice (usually the one where the token
    is farther from the edge). Windows here are at most 64 tokens to keep the
    run cheap; on the bundled model that is its whole position table.

    Claim ID: P6.23
    Question: My text is longer than 512 tokens — how do I run BERT on it?
    问题：文本超过 512 个 token，怎样用 BERT 处理？
    中文：比窗口长的文本由 tokenizer（stride、return_overflowing_tokens）切成若干窗口：每个窗口都放得进位置表，相邻窗口恰好重叠 stride 个 token，合起来覆盖每个 token；只做截断则只保留第一个窗口，其余全部丢掉。
    原因：BERT 只有 max_position_embeddings 个位置，更长的输入会被拒绝（P4.2c），所以调大 max_length 没有用。tokenizer 改为切分：
    每个窗口有自己的 [CLS]/[SEP] 和位置 0..L−1，相邻窗口共享 stride 个 token，于是每个 token 至少在一个窗口里两侧都有上下文。
    这些窗口作为一个带 padding 的 batch 运行，每个窗口得到与单独运行相同的输出；重叠区中的 token 在每个窗口里得到不同的向量
    （上下文不同），所以保留哪个窗口的向量是一种选择（通常取 token 离边缘较远的那个）。为了让运行开销小，这里窗口最多 64 个 token；
    在自带模型上这正是它整张位置表的长度。
    Asked in: google-research/bert#27, google-research/bert#66, huggingface/transformers#89,
    huggingface/transformers#456, huggingface/transformers#23835, allenai/allennlp#2493,
    ThilinaRajapakse/simpletransformers#235, castorini/hedwig#57
    """
    if not bert.tokenizer.is_fast:
        pytest.skip("return_overflowing_tokens with a stride needs a fast (tokenizers-backed) tokenizer")
    width = min(bert.max_positions, 64)
    stride = width // 4
    scope.attends_globally(bert, width)
    text = long_text(bert, int(2.5 * width))
    full = bert.tokenizer(text, add_special_tokens=False)["input_ids"]
    cut = windows(bert, text, width, stride)
    real = (cut["special_tokens_mask"] == 0) & (cut["attention_mask"] == 1)
    content = [row[keep].tolist() for row, keep in zip(cut["input_ids"], real)]
    covered = content[0] + [t for c in content[1:] for t in c[stride:]]
    truncated = bert.tokenizer(text, truncation=True, max_length=width, add_special_tokens=True,
                               return_special_tokens_mask=True)
    kept = sum(1 for s in truncated["special_tokens_mask"] if s == 0)
    batch = bert.batch(cut["input_ids"].to(bert.device), cut["attention_mask"].to(bert.device))
    together = bert.last_hidden(batch)
    alone = [bert.last_hidden(bert.batch(row[m.bool()][None].to(bert.device)))[0]
             for row, m in zip(cut["input_ids"], cut["attention_mask"])]
    first_content = [int(keep.nonzero()[0]) for keep in real]
    overlap = [(together[k, first_content[k] + len(content[k]) - stride + j], together[k + 1, first_content[k + 1] + j])
               for k in range(len(content) - 1) for j in range(stride)]
    evidence.table(f"{len(full)} tokens, windows of {width} (stride {stride}), position table of {bert.config.max_position_embeddings}",
                   ["window", "tokens", "text tokens", "shared with the next", "max |Δ| in the batch vs alone"],
                   [(k, int(cut["attention_mask"][k].sum()), len(c), c[-stride:] == content[k + 1][:stride] if k + 1 < len(content) else "—",
                     max_diff(together[k, : len(alone[k])], alone[k])) for k, c in enumerate(content)])
    evidence.table("truncation=True alone", ["text tokens kept", "text tokens dropped"], [(kept, len(full) - kept)])
    assert len(content) >= 2 and all(int(m.sum()) <= min(width, bert.max_positions) for m in cut["attention_mask"])
    assert all(c[-stride:] == n[:stride] for c, n in pairwise(content))
    assert covered == full and kept < len(full)
    tolerance = model_tolerance(bert, batch, together)
    for k, own in enumerate(alone):
        torch.testing.assert_close(together[k, : len(own)], own, **tolerance)
    assert any(beyond(x, y, tolerance) for x, y in overlap)


# ---- embeddings and hidden states ----

def layer_outputs(bert, **inputs) -> tuple[list[torch.Tensor], torch.Tensor, object]:
    """(each layer's output in call order, the embedding output the first layer reads, the model's output)."""
    a = bert.anatomy
    seen, first = [], []
    distinct = {id(m): m for m in (bert.module(a.layer(i)) for i in range(bert.config.num_hidden_layers))}
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append(out[0] if isinstance(out, tuple) else out))
             for m in distinct.values()]
    hooks.append(bert.module(a.embedding_output).register_forward_hook(lambda m, args, out: first.append(out)))
    try:
        out = encoder_output(bert, **inputs, output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    return seen, first[0], out


def test_hidden_states_has_one_entry_more_than_layers_index_0_is_the_embeddings_and_the_last_is_last_hidden_state(bert, evidence):
    """output_hidden_states gives num_hidden_layers + 1 tensors: hidden_states[0] is the embedding output, hidden_states[i] layer i's output, and hidden_states[-1] is last_hidden_state itself.

    The encoder appends the tensor it is about to feed each layer, then the
    last layer's output: for bert-base, 13 tensors for 12 layers. Index 0 is
    what the first layer reads (word + position + type, LayerNorm, dropout;
    ALBERT and ELECTRA: after the projection to the layers' width), not the
    first layer's output; index i is layer i's output, counting from 1. The
    tempting readings — index 0 is the first layer, or the extra tensor is at
    the end — are compared with the layers' own outputs and fail.

    Claim ID: P6.24
    Question: output_hidden_states gives 13 tensors for a 12-layer BERT — which one is the last layer, and what is hidden_states[0]?
    问题：12 层 BERT 的 output_hidden_states 为什么有 13 个？哪个是最后一层，hidden_states[0] 是什么？
    中文：output_hidden_states 返回 num_hidden_layers + 1 个张量：hidden_states[0] 是嵌入层输出，hidden_states[i] 是第 i 层的输出，hidden_states[-1] 就是 last_hidden_state 本身。
    原因：encoder 在每层之前记下要送入该层的张量，最后再记下最后一层的输出：bert-base 的 12 层得到 13 个张量。索引 0 是第一层读到的东西
    （word + position + type、LayerNorm、dropout；ALBERT 与 ELECTRA 为投影到层宽度之后），而不是第一层的输出；索引 i 是第 i 层
    （从 1 数起）的输出。诱人的读法——索引 0 是第一层，或多出来的那个在末尾——与各层自己的输出对比后都不成立。
    Asked in: huggingface/transformers#1332, huggingface/transformers#1699, huggingface/transformers#1827,
    huggingface/transformers#2332, huggingface/transformers#2461, huggingface/transformers#3429,
    huggingface/sentence-transformers#1293
    """
    if bert.anatomy.final_norm is not None:
        scope.differs(bert, "pre-LN: a final norm follows the last layer, so last_hidden_state is not the last layer's "
                            "output (5.x returns the normed tensor as hidden_states[-1], 4.57 the last layer's)",
                      scope.MODERNBERT_PRE_LN)
    batch = bert.example()
    layers, embedded, out = layer_outputs(bert, **batch.as_kwargs())
    states, n = out.hidden_states, bert.config.num_hidden_layers
    evidence.table(f"{n} layers, {len(states)} hidden states", ["index", "equals", "max |Δ| vs that", "max |Δ| vs layer 1's output"],
                   [(0, "the embedding output", max_diff(states[0], embedded), max_diff(states[0], layers[0])),
                    *[(i, f"layer {i}'s output", max_diff(states[i], layers[i - 1]), max_diff(states[i], layers[0]))
                      for i in (1, n)],
                    (-1, "last_hidden_state", max_diff(states[-1], out.last_hidden_state), "—")])
    assert len(states) == n + 1 == len(layers) + 1
    torch.testing.assert_close(states[0], embedded, **TOL["exact"])
    for i in range(n):
        torch.testing.assert_close(states[i + 1], layers[i], **TOL["exact"])
    assert states[-1] is out.last_hidden_state or torch.equal(states[-1], out.last_hidden_state)
    assert beyond(states[0], layers[0], TOL["float32_kernels"])


def new_tokens(bert) -> tuple[object, list[int]]:
    """A copy of the tokenizer with two tokens added, and their ids (the shared tokenizer is left alone)."""
    tokenizer = copy.deepcopy(bert.tokenizer)
    names = ["[bertspec-new-1]", "[bertspec-new-2]"]
    tokenizer.add_tokens(names)
    return tokenizer, tokenizer.convert_tokens_to_ids(names)


# modeling_utils._init_added_embeddings_weights_with_mean's epsilon (4.57 and 5.25): new rows are drawn from
# N(mean of the old rows, MEAN_RESIZING_SCALE · their covariance).
MEAN_RESIZING_SCALE = 1e-9


def resized(bert, size: int, mean_resizing: bool):
    """A copy of the model with ``size`` vocabulary rows, resized under a fixed seed; the shared model is untouched."""
    model = copy.deepcopy(bert.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model.resize_token_embeddings(size, mean_resizing=mean_resizing)
    return model


def test_resize_token_embeddings_keeps_the_old_rows_gives_new_ones_the_old_mean_and_grows_the_tied_decoder_with_them(mlm, evidence):
    """After add_tokens and resize_token_embeddings(len(tokenizer)), the old rows are unchanged, the new rows sit at the old rows' mean (not zero, not [UNK]'s row), and the tied decoder is the same grown matrix, its bias padded with zeros.

    Since PR #33325 ``mean_resizing=True`` is the default: the new
    rows are drawn from a normal with the old rows' mean and 1e-9 times
    their covariance, so each lands within a few 1e-9-scaled deviations of
    the mean; before, they were drawn from N(0, initializer_range²), which
    ``mean_resizing=False`` still does, far from the mean. The MLM decoder's
    weight is the embedding matrix itself, so it grows with it, the head's
    bias gains one 0 per new token, and the logits get the new vocabulary
    size: the new tokens can be predicted. The tempting answers — new tokens
    start at zero, or at [UNK]'s vector, or only the input side grows — fail.
    Done on a copy of the model and of the tokenizer.

    Claim ID: P6.25
    Question: After add_tokens and resize_token_embeddings, what are the new tokens' vectors, and is the MLM decoder resized too?
    问题：add_tokens 并 resize_token_embeddings 之后，新 token 的向量是什么？MLM 的 decoder 也会跟着变大吗？
    中文：add_tokens 并 resize_token_embeddings(len(tokenizer)) 之后，旧行不变，新行位于旧行的均值处（既不是零，也不是 [UNK] 的那一行），共享权重的 decoder 就是同一个变大的矩阵，它的 bias 用 0 补齐。
    原因：自 PR #33325 起默认 mean_resizing=True：新行从以旧行均值为均值、以旧行协方差的 1e-9 倍为协方差的正态分布中抽取，
    因此每一行都落在均值附近几个（按 1e-9 缩放的）标准差之内；此前它们从 N(0, initializer_range²) 中抽取，mean_resizing=False
    仍这样做，离均值很远。MLM decoder 的权重就是嵌入矩阵本身，所以随之变大，头部的 bias 为每个新 token 增加一个 0，logits 的宽度变成新的
    词表大小：新 token 可以被预测。诱人的答案——新 token 从零开始、从 [UNK] 的向量开始、或只有输入端变大——都不成立。在模型与 tokenizer 的副本上进行。
    Asked in: huggingface/transformers#1413, huggingface/transformers#1730, huggingface/transformers#6558,
    huggingface/transformers#33325, huggingface/tokenizers#247, ymcui/Chinese-BERT-wwm#221
    """
    tokenizer, ids = new_tokens(mlm)
    old = mlm.config.vocab_size
    if len(tokenizer) <= old:
        pytest.skip(f"the checkpoint's {old} rows already cover the tokenizer's {len(tokenizer)} ids: nothing to resize")
    model, legacy = resized(mlm, len(tokenizer), True), resized(mlm, len(tokenizer), False)
    a = mlm.anatomy
    before = mlm.word_embeddings.weight.detach()
    rows = model.get_submodule(a.word_embeddings).weight.detach()
    mean = before.float().mean(dim=0)
    spread = (MEAN_RESIZING_SCALE * (before.float() - mean).square().mean(dim=0)).sqrt()
    bound = Z_BOUND * spread + 4 * torch.finfo(torch.float32).eps * mean.abs()
    new, legacy_new = rows[old:], legacy.get_submodule(a.word_embeddings).weight.detach()[old:]
    unk = mlm.tokenizer.unk_token_id
    bias = model.get_parameter(a.decoder_bias).detach()
    logits = model(input_ids=torch.tensor([[ids[0]]], device=mlm.device)).logits
    evidence.table(f"{old} rows + {len(ids)} added ({', '.join(map(str, ids))}), hidden {rows.shape[1]}",
                   ["", "mean_resizing=True (default)", "mean_resizing=False (before PR #33325)"],
                   [("max |new row − old mean|", max_diff(new, mean), max_diff(legacy_new, mean)),
                    ("allowed (5 deviations of the 1e-9-scaled spread)", bound.max(), "—"),
                    ("min |new row|", new.norm(dim=1).min(), legacy_new.norm(dim=1).min()),
                    ("min |new row − [UNK] row|", (new - before[unk]).norm(dim=1).min() if unk is not None else "—", "—"),
                    ("decoder weight is the embedding matrix", model.get_submodule(a.decoder).weight is model.get_submodule(a.word_embeddings).weight, "—"),
                    ("bias entries of the new tokens", bias[old:].tolist(), "—"),
                    ("logits width", logits.shape[-1], "—")])
    torch.testing.assert_close(rows[:old], before, **TOL["exact"])
    near_mean = {"atol": bound.max().item(), "rtol": 0.0}  # as far as a mean-resized row may be from the mean
    assert bool(((new - mean).abs() <= bound).all()) and beyond(legacy_new, mean.expand_as(legacy_new), near_mean)
    assert bool((new.norm(dim=1) > 0).all()) and (unk is None or beyond(new, before[unk].expand_as(new), near_mean))
    assert model.get_submodule(a.decoder).weight is model.get_submodule(a.word_embeddings).weight
    assert bias.shape[0] == len(tokenizer) and not bias[old:].any() and logits.shape[-1] == len(tokenizer)


def test_inputs_embeds_replaces_only_the_word_lookup_and_still_gets_position_and_token_type_embeddings(bert, evidence):
    """inputs_embeds stands in for the word lookup only: passing word_embeddings(input_ids) gives the input_ids output bit for bit, because positions, token types and LayerNorm are still applied; passing the embedding layer's full output applies them twice.

    BertEmbeddings.forward runs ``if inputs_embeds is None: inputs_embeds =
    word_embeddings(input_ids)`` and then adds the token-type and position
    rows and normalises, whichever way the word vectors came in. So the
    word lookup handed in as ``inputs_embeds`` reproduces the ids route
    exactly. The two tempting readings fail: "positions are skipped" would
    make those two differ, and "inputs_embeds is the embedding layer's
    output" adds positions and types a second time and normalises twice.
    (DistilBERT ignored positions for inputs_embeds until PR #21752; both
    installed versions add them in every family.)

    Claim ID: P6.26
    Question: If I pass inputs_embeds instead of input_ids, does BERT still add position and token-type embeddings?
    问题：用 inputs_embeds 代替 input_ids 时，BERT 还会加上位置嵌入和 token type 嵌入吗？
    中文：inputs_embeds 只替代词表查找：传入 word_embeddings(input_ids) 得到与 input_ids 逐位相同的输出，因为位置、token type 与 LayerNorm 仍会施加；传入嵌入层的完整输出则会把它们施加两次。
    原因：BertEmbeddings.forward 执行 if inputs_embeds is None: inputs_embeds = word_embeddings(input_ids)，然后加上 token type 与位置的行并归一化，
    无论词向量从哪条路进来。所以把词表查找结果作为 inputs_embeds 传入，能精确复现 ids 路径。两种诱人的理解都不成立：“位置被跳过”会使两者不同，
    “inputs_embeds 是嵌入层的输出”会再加一次位置与 type 并再归一化一次。（DistilBERT 在 PR #21752 之前对 inputs_embeds 忽略位置；
    所装的两个版本在每个家族中都会加上。）
    Asked in: huggingface/transformers#4258, huggingface/transformers#11402, huggingface/transformers#21752,
    vllm-project/vllm#25922, ThilinaRajapakse/pytorch-transformers-classification#32
    """
    batch = bert.example(padded=False)
    kwargs = batch.as_kwargs()
    embeddings = bert.module(bert.anatomy.embeddings)
    with torch.no_grad():
        word = bert.word_embeddings(batch.input_ids)
        full = embeddings(**{k: v for k, v in kwargs.items() if k in ("input_ids", "token_type_ids")})
    routes = {"input_ids": encoder_output(bert, **kwargs).last_hidden_state,
              "inputs_embeds = word_embeddings(ids)": encoder_output(bert, **{**kwargs, "input_ids": None, "inputs_embeds": word}).last_hidden_state,
              "inputs_embeds = embedding layer's output": encoder_output(bert, **{**kwargs, "input_ids": None, "inputs_embeds": full}).last_hidden_state}
    evidence.table(f"{' '.join(bert.tokens(batch))}", ["route", "max |Δ last hidden| vs input_ids"],
                   [(name, max_diff(h, routes["input_ids"])) for name, h in routes.items()])
    torch.testing.assert_close(routes["inputs_embeds = word_embeddings(ids)"], routes["input_ids"], **TOL["exact"])
    assert beyond(routes["inputs_embeds = embedding layer's output"], routes["input_ids"], TOL["float32_kernels"])


def shared_token(bert) -> tuple[str, str, int]:
    """Two different texts of the vocabulary's language that share a non-special token, and that token's id."""
    candidates = [*bert.texts.pair, *bert.texts.corpus()[:20]]
    special = set(bert.tokenizer.all_special_ids)
    for i, first in enumerate(candidates):
        ids = set(bert.tokenizer(first, add_special_tokens=False)["input_ids"]) - special
        for second in candidates[i + 1:]:
            common = [t for t in bert.tokenizer(second, add_special_tokens=False)["input_ids"] if t in ids]
            if second != first and common:
                return first, second, common[0]
    pytest.skip("no two example texts share a token")


def test_the_same_token_has_one_row_in_the_input_table_but_a_different_output_vector_in_each_sentence(bert, evidence):
    """A token's input vector is one row of a static table, the same in every sentence; its output vector is contextual: it differs between two sentences and is the same only for the same sentence.

    word_embeddings is a lookup table like word2vec's: the token gets that row
    wherever it occurs. Every layer then mixes in the other tokens through
    attention, so already the first layer's output, and the last one's,
    depend on the sentence (and hidden_states[0] on the position). Both
    tempting answers fail on the model: "one vector per word, as in word2vec"
    (the outputs differ) and its reverse, "the lookup table itself is
    contextual" (the rows are identical). The same sentence run twice gets
    the same vectors: the difference is the context, not noise.

    Claim ID: P6.27
    Question: Does BERT give a character (word) the same vector in every sentence, like word2vec?
    问题：BERT 对同一个字（词）在每个句子里给出相同的向量吗，像 word2vec 那样？
    中文：一个 token 的输入向量是静态表中的一行，在每个句子中都相同；它的输出向量是上下文相关的：在两个句子中不同，只有同一个句子才相同。
    原因：word_embeddings 是像 word2vec 那样的查找表：token 无论出现在哪里都得到这一行。之后每一层通过 attention 混入其他 token 的信息，
    所以第一层的输出、最后一层的输出都取决于句子（hidden_states[0] 还取决于位置）。两种诱人的答案在模型上都不成立：“每个词一个向量，
    像 word2vec 那样”（输出不同），以及反过来的“查找表本身是上下文相关的”（行完全相同）。同一个句子运行两次得到相同的向量：差别来自上下文，而不是噪声。
    Asked in: google-research/bert#362, google-research/bert#975, google-research/bert#1108, jina-ai/clip-as-service#520,
    imgarylai/bert-embedding#14, koaning/whatlies#6, kongds/Prompt-BERT#1
    """
    first, second, token = shared_token(bert)
    batch = bert.encode([first, second, first])
    lookups = []
    hook = bert.word_embeddings.register_forward_hook(lambda m, args, out: lookups.append(out))
    try:
        out = encoder_output(bert, **batch.as_kwargs(), output_hidden_states=True)
    finally:
        hook.remove()
    at = [batch.positions(token, row)[0] for row in range(3)]
    looked_up = [lookups[0][row, at[row]] for row in range(3)]
    vectors = {depth: [out.hidden_states[depth][row, at[row]] for row in range(3)] for depth in (1, -1)}
    tolerance = model_tolerance(bert, batch, out.last_hidden_state)
    evidence.table(f"{bert.token(token)!r} in {first!r} (position {at[0]}) and {second!r} (position {at[1]})",
                   ["vector", "max |Δ| between the two sentences", "cosine", "max |Δ| same sentence twice"],
                   [(name, max_diff(v[0], v[1]), F.cosine_similarity(v[0], v[1], dim=0), max_diff(v[0], v[2]))
                    for name, v in (("input row (word_embeddings)", looked_up), ("layer 1 output", vectors[1]),
                                    ("last layer output", vectors[-1]))])
    for v in looked_up:
        torch.testing.assert_close(v, bert.word_embeddings.weight[token].detach(), **TOL["exact"])
    assert beyond(vectors[-1][0], vectors[-1][1], tolerance) and beyond(vectors[1][0], vectors[1][1], tolerance)
    torch.testing.assert_close(vectors[-1][2], vectors[-1][0], **tolerance)
