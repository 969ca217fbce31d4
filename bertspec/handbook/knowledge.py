"""The handbook's knowledge base, in Chinese and English: misconceptions, glossary, best practices.

Every entry points at the claims that show it, by test function name; claims in
chapter P5 check that each name exists, that each misconception is embodied by a
counterfeit, and that each claim refuting it declares that counterfeit (so the
claim's counterfeit run proves it would fail if the misconception were true).
"""

import re
from dataclasses import dataclass

INTRO = [
    ("bertspec 用可执行的测试回答 BERT 内部机制的问题：为什么 attention mask 是“全0”、[MASK] 与 padding 有何不同、"
     "logits 与 loss 如何计算、哪些位置得到梯度、边界情况会怎样——用可能失败的测试来回答。每条结论的问题就是学习者会问的问题，"
     "回答是它的第一句话，证据是它在被测模型上算出的数值、表格和图。",
     "bertspec answers questions about how BERT works inside — why the attention mask is \"all zeros\", how [MASK] "
     "differs from padding, how logits and the loss are computed, which positions get gradient, what happens at the "
     "boundaries — with tests that can fail. Each claim's question is what a learner asks, its first sentence the "
     "answer, its evidence the values, tables and figures computed on the model under test."),
    ("本手册由 `pytest spec/ --html=report.html` 在本机生成：下面写明验证所用的模型、torch 与 transformers 版本。"
     "换成你自己的 checkpoint（`--bert-model 路径`）会在那个模型上重新验证同样的结论；transformers 4.x 与 5.x "
     "在 mask 的传递上不同，每条结论都说明它在所装版本上观察到什么。",
     "This handbook was written by `pytest spec/ --html=report.html` on this machine: the box below names the model, "
     "torch and transformers it verified. Point it at your own checkpoint (`--bert-model PATH`) and the same claims "
     "are verified on that model; transformers 4.x and 5.x route the mask differently, and each claim says what it "
     "observed on the installed version."),
]


@dataclass(frozen=True)
class Misconception:
    wrong_zh: str
    wrong: str
    right_zh: str
    right: str
    counterfeit: str  # the counterfeit BERT that behaves as if the misconception were true
    refuted_by: tuple[str, ...]  # claims that fail on that counterfeit


MISCONCEPTIONS = [
    Misconception(
        "“全0”的 attention mask 表示什么都不看。",
        "An all-zero attention mask means that nothing is attended.",
        "层收到的 mask 是加性的：0 表示“分数保持不变”，finfo.min 才隐藏一个 key。无 padding 时的全0 mask 是加法单位元，什么都不改变。",
        "The layer's mask is additive: 0 means \"leave the score as it is\", finfo.min hides a key. The all-zero mask "
        "of an unpadded batch is the additive identity and changes nothing.",
        "mask_inverted",
        ("test_padded_keys_get_exactly_zero_attention_probability",
         "test_padded_positions_get_outputs_that_never_reach_the_real_tokens"),
    ),
    Misconception(
        "[MASK] 位置的 attention_mask 应该设为 0。",
        "[MASK] positions should get attention_mask 0.",
        "[MASK] 是 input_ids 中的一个普通 token，attention_mask 为 1，所有 query 都能看到它；attention_mask 只标记 padding。",
        "[MASK] is an ordinary token id in input_ids with attention_mask 1, visible to every query; attention_mask "
        "marks padding only.",
        "mask_token_hidden",
        ("test_the_padding_mask_and_the_mlm_mask_token_are_separate_inputs",
         "test_the_mask_token_is_attended_to_and_attends_to_every_real_token"),
    ),
    Misconception(
        "padding 会改变 [MASK] 处的预测。",
        "Padding changes the prediction at [MASK].",
        "padding 的 key 得到的概率严格为 0，对真实 token 毫无贡献：追加多少 [PAD]，[MASK] 处的 logits 都只差浮点舍入。",
        "Padded keys get probability exactly 0 and contribute nothing to real tokens: however many [PAD] are "
        "appended, the logits at [MASK] differ by float rounding only.",
        "mask_dropped",
        ("test_appending_padding_does_not_change_the_prediction_at_the_mask_position",
         "test_a_real_tokens_output_is_the_same_alone_and_in_a_padded_batch"),
    ),
    Misconception(
        "[PAD] 的嵌入是零向量（padding_idx），所以 padding 不需要 mask。",
        "The [PAD] embedding is zero (padding_idx), so padding needs no mask.",
        "padding_idx 只挡住查表给 [PAD] 行的梯度（共享权重的 decoder 仍在训练它），它在 checkpoint 里可以是任何值；"
        "真正隐藏 padding 的是 attention mask。",
        "padding_idx only stops the lookup's gradient to the [PAD] row (the tied decoder still trains it), and a "
        "checkpoint may hold anything there; the attention mask is what hides padding.",
        "mask_dropped",
        ("test_padding_idx_stops_only_the_lookups_gradient_to_the_pad_row_and_the_attention_mask_is_what_hides_padding",),
    ),
    Misconception(
        "mask 的值只要是负数就能屏蔽 padding。",
        "Any negative mask value hides padding.",
        "被屏蔽的 key 必须加上足够小的值，使 exp 下溢为 0：transformers 用 finfo(dtype).min；加 -1 时 [PAD] 还保留 e^-1 的权重。",
        "A hidden key must get a value so low that exp underflows to 0: transformers uses finfo(dtype).min; with -1 "
        "a [PAD] key keeps e^-1 of its weight.",
        "mask_value_minus_one",
        ("test_a_real_tokens_output_is_the_same_alone_and_in_a_padded_batch",
         "test_cls_and_sep_are_attended_like_any_token_while_pad_keys_get_exactly_zero"),
    ),
    Misconception(
        "BERT 用 -inf 屏蔽 padding。",
        "BERT masks padding with -inf.",
        "加性 mask 是 finfo(dtype).min，一个有限数：在 float32 与 bfloat16 中，整行都被屏蔽时 softmax 给出均匀分布而不是 NaN"
        "（float16 中只在分数绝对值小于 16 时如此）；5.x 的 sdpa 改传布尔 mask。",
        "The additive mask is finfo(dtype).min, a finite number: in float32 and bfloat16 a row with every key hidden "
        "gets a uniform softmax, not NaN (in float16 only while its scores stay within ±16); 5.x hands sdpa a boolean "
        "mask instead.",
        "mask_value_minus_infinity",
        ("test_a_float_layer_mask_equals_one_minus_mask_times_the_dtype_minimum",
         "test_score_plus_mask_at_a_padded_key_is_the_dtype_minimum_itself"),
    ),
    Misconception(
        "prediction_scores（logits）就是概率。",
        "The prediction scores (logits) are probabilities.",
        "logits 是点积加偏置，可以是任意实数；softmax 才把它们变成和为 1 的分布，而 argmax 不需要 softmax。",
        "Logits are dot products plus a bias, any real number; softmax turns them into a distribution that sums to 1, "
        "and the argmax needs no softmax.",
        "logits_softmaxed",
        ("test_prediction_scores_are_unnormalised_logits_that_softmax_turns_into_a_distribution",),
    ),
    Misconception(
        "MLM 的 loss 对所有位置取平均，标签为 -100 的位置也算。",
        "The MLM loss averages over every position, -100 ones included.",
        "CrossEntropyLoss(ignore_index=-100) 跳过 -100 的位置，连个数都不计：loss 是带标签位置上的平均。",
        "CrossEntropyLoss(ignore_index=-100) skips -100 positions, even in the count: the loss is the mean over "
        "labelled positions.",
        "loss_counting_ignored_positions",
        ("test_the_model_loss_is_cross_entropy_with_ignore_index_minus_100",
         "test_the_loss_is_the_mean_not_the_sum_of_the_per_position_losses_over_exactly_the_labelled_positions"),
    ),
    Misconception(
        "只有 [MASK] 位置的嵌入会得到梯度、会被学习。",
        "Only the [MASK] positions' embeddings get gradient and learn.",
        "只有带标签位置的 logits 有梯度，但 [MASK] 通过每一层 attention 依赖它能看到的所有 token，所以每个真实 token 的输入嵌入都有梯度。",
        "Only labelled positions' logits get gradient, but a [MASK] depends through every attention layer on every "
        "token it sees, so every real token's input embedding gets gradient.",
        "gradient_only_at_labels",
        ("test_every_real_token_of_a_labelled_sequence_receives_gradient_on_its_input_embedding",),
    ),
    Misconception(
        "MLM 的 decoder 是一个独立的输出矩阵。",
        "The MLM decoder is a separate output matrix.",
        "decoder 的权重就是词嵌入矩阵本身（同一个 Parameter），只有 bias 是它自己的；梯度来自查表与打分两种用途之和。",
        "The decoder's weight is the word-embedding matrix itself (one Parameter); only its bias is its own, and its "
        "gradient is the sum of both uses.",
        "untied_decoder",
        ("test_the_decoder_weight_is_the_word_embedding_matrix_itself_and_its_bias_is_its_own",
         "test_the_tied_matrix_receives_gradient_from_both_the_embedding_lookup_and_the_decoder"),
    ),
    Misconception(
        "decoder 直接对最后一层的隐藏状态打分。",
        "The decoder scores the last hidden state directly.",
        "预测头先做 transform（dense → GELU → LayerNorm），再用词嵌入矩阵打分；去掉 transform，logits 和预测都会变。",
        "The head first applies its transform (dense → GELU → LayerNorm), then scores with the embedding matrix; "
        "without the transform the logits and the predictions change.",
        "head_without_transform",
        ("test_the_prediction_head_is_a_transform_dense_activation_layernorm_followed_by_the_decoder",
         "test_removing_the_head_transform_changes_the_logits_and_the_predictions"),
    ),
    Misconception(
        "token_type_ids 无关紧要，句对不传也一样。",
        "token_type_ids do not matter, not even for a sentence pair.",
        "嵌入层在片段 A 加 token_type_embeddings 第 0 行、在片段 B 加第 1 行：它们是学到的向量，改变输入。",
        "The embeddings add token_type_embeddings row 0 to segment A and row 1 to segment B: learned vectors that "
        "change the input.",
        "token_types_ignored",
        ("test_token_type_embeddings_add_row_0_to_segment_a_and_row_1_to_segment_b",),
    ),
    Misconception(
        "左侧 padding 无害，BERT 会根据 mask 自己算位置。",
        "Left padding is harmless: BERT works out positions from the mask.",
        "不传 position_ids 时每行都用 0..T-1，左侧 padding 把真实 token 推到别的位置；要传 cumsum(mask) - 1。",
        "Without position_ids every row uses 0..T-1, and left padding moves real tokens to other positions; pass "
        "cumsum(mask) - 1.",
        "positions_from_mask",
        ("test_left_padding_shifts_positions_unless_position_ids_count_only_real_tokens",),
    ),
]


@dataclass(frozen=True)
class Term:
    term: str
    zh: str
    en: str
    claims: tuple[str, ...]
    says: tuple[str, ...] = ()  # the words a claim's text uses for it, English or Chinese; the term itself if none

    @property
    def anchor(self) -> str:
        """Its entry's id in the glossary, which claim texts link to."""
        return "term-" + (re.sub(r"[^0-9A-Za-z]+", "-", self.term).strip("-").lower() or "term")

    @property
    def phrases(self) -> tuple[str, ...]:
        return self.says or (self.term,)


GLOSSARY = [
    Term("attention_mask", "二维 [B, T] 输入，1 = 真实 token，0 = [PAD]；模型把它转换成每层收到的 mask。",
         "The 2D [B, T] input, 1 = real token, 0 = [PAD]; the model turns it into the mask each layer receives.",
         ("test_every_layer_receives_the_same_mask_built_once_from_the_2d_mask",
          "test_the_mask_reaching_the_layers_has_the_form_read_in_this_transformers_version")),
    Term("additive mask", "加在注意力分数上的张量：可见的 key 加 0，被隐藏的 key 加 finfo(dtype).min。",
         "A tensor added to the attention scores: 0 at visible keys, finfo(dtype).min at hidden ones.",
         ("test_a_float_layer_mask_equals_one_minus_mask_times_the_dtype_minimum",
          "test_adding_the_all_zero_mask_leaves_every_score_bit_for_bit_unchanged"),
         ("additive mask", "加性 mask")),
    Term("boolean mask", "True = 可以关注；transformers 5.x 把它交给 sdpa 内核，由内核负责屏蔽。",
         "True = may attend; transformers 5.x hands it to the sdpa kernel, which does the hiding.",
         ("test_the_mask_reaching_the_layers_has_the_form_read_in_this_transformers_version",),
         ("boolean mask", "布尔 mask")),
    Term("finfo.min", "dtype 的最小有限值（float32 为 -3.4028e38，float16 为 -65504）；分数加上它后 exp 下溢为 0。",
         "The dtype's most negative finite value (-3.4028e38 in float32, -65504 in float16); exp of a score plus it "
         "underflows to 0.",
         ("test_score_plus_mask_at_a_padded_key_is_the_dtype_minimum_itself",
          "test_each_dtype_masks_padding_with_its_own_finfo_min_and_padded_keys_get_exactly_zero")),
    Term("[PAD]", "padding 用的 token；attention_mask 为 0，作为 key 的概率严格为 0。",
         "The padding token; attention_mask 0, probability exactly 0 as a key.",
         ("test_padded_keys_get_exactly_zero_attention_probability",)),
    Term("[MASK]", "MLM 训练中替换被选中 token 的 id；它是普通可见 token，不是 padding。",
         "The id that replaces selected tokens in MLM training; an ordinary visible token, not padding.",
         ("test_the_padding_mask_and_the_mlm_mask_token_are_separate_inputs",
          "test_the_mask_token_is_attended_to_and_attends_to_every_real_token")),
    Term("[CLS] / [SEP]", "每行开头的 [CLS] 与结束每个片段的 [SEP]；attention 中与普通 token 一样。",
         "[CLS] opens every row, [SEP] closes each segment; attention treats them like any token.",
         ("test_cls_and_sep_are_attended_like_any_token_while_pad_keys_get_exactly_zero",), ("[CLS]", "[SEP]")),
    Term("[UNK]", "无法用词表表示的输入的统一 id：每个汉字自成一词，词表外的汉字各自变成 [UNK]；其他文字中，WordPiece 切不出的"
                  "整个词变成一个 [UNK]。不同的未知内容得到同一个 id，模型无法区分。",
         "The one id for input the vocabulary cannot spell: each Chinese character is a word of its own, so an unknown "
         "one becomes [UNK] alone; in other scripts WordPiece turns the whole word it cannot split into pieces into "
         "one [UNK]. Different unknown input becomes the same id.",
         ("test_characters_outside_the_vocabulary_all_become_the_same_unk_token",)),
    Term("token_type_ids", "片段编号：句对中第一个 [SEP] 及之前为 0，之后为 1；选择 token_type_embeddings 的行。",
         "The segment number: 0 up to the first [SEP] of a pair, 1 after; selects a row of token_type_embeddings.",
         ("test_a_sentence_pair_is_laid_out_as_cls_a_sep_b_sep_with_token_types_0_then_1",
          "test_token_type_embeddings_add_row_0_to_segment_a_and_row_1_to_segment_b")),
    Term("position_ids", "位置编号，不传时为 0..T-1；左侧 padding 时应传 cumsum(mask) - 1。",
         "Position numbers, 0..T-1 when not passed; pass cumsum(mask) - 1 with left padding.",
         ("test_left_padding_shifts_positions_unless_position_ids_count_only_real_tokens",)),
    Term("labels / -100", "MLM 的目标 id；-100 表示“这个位置没有标签”，CrossEntropyLoss 跳过它。",
         "The MLM targets; -100 means \"no label here\", and CrossEntropyLoss skips it.",
         ("test_the_model_loss_is_cross_entropy_with_ignore_index_minus_100",
          "test_only_labelled_positions_receive_gradient_on_the_logits"), ("-100",)),
    Term("logits (prediction_scores)", "每个位置对词表每个 token 的未归一化分数 [B, T, V]。",
         "Unnormalised scores [B, T, V], one per vocabulary entry at each position.",
         ("test_prediction_scores_are_unnormalised_logits_that_softmax_turns_into_a_distribution",),
         ("logits", "prediction_scores")),
    Term("head transform", "预测头的 dense → GELU → LayerNorm，把隐藏状态变换到词嵌入空间再打分。",
         "The head's dense → GELU → LayerNorm, which maps hidden states into the embedding space before scoring.",
         ("test_the_prediction_head_is_a_transform_dense_activation_layernorm_followed_by_the_decoder",
          "test_removing_the_head_transform_changes_the_logits_and_the_predictions"),
         ("head transform", "head's transform", "预测头的 transform")),
    Term("tied weights", "decoder 的权重就是词嵌入矩阵（同一个 Parameter）；decoder 另有自己的 bias。",
         "The decoder's weight is the word-embedding matrix (one Parameter); the decoder has a bias of its own.",
         ("test_the_decoder_weight_is_the_word_embedding_matrix_itself_and_its_bias_is_its_own",),
         ("tied", "共享权重", "权重共享")),
    Term("post-LN", "BERT 在残差相加之后做 LayerNorm：LayerNorm(x + sublayer(x))。",
         "BERT normalises after the residual sum: LayerNorm(x + sublayer(x)).",
         ("test_the_tracer_records_every_step_of_every_layer_in_post_ln_order",
          "test_each_encoder_layer_recomputed_by_hand_is_attention_residual_layernorm_then_ffn_residual_layernorm")),
    Term("eager / sdpa", "两种 attention 实现：eager 写出 matmul + softmax，sdpa 调用 torch 的融合内核；数学相同、舍入不同。",
         "Two attention implementations: eager writes out matmul + softmax, sdpa calls torch's fused kernel; the same "
         "maths, different rounding.",
         ("test_eager_and_sdpa_agree_within_the_tolerance_of_each_dtype",
          "test_traced_attention_probabilities_reproduce_the_attention_output"), ("eager", "sdpa")),
    Term("derived (tracer)", "sdpa 内核不暴露分数与概率；tracer 由内核输入重算它们并标记为 derived。",
         "The sdpa kernel hides scores and probabilities; the tracer recomputes them from its inputs and marks them "
         "derived.",
         ("test_traced_attention_probabilities_reproduce_the_attention_output",), ("derived",)),
    Term("padding_idx", "nn.Embedding 的参数：该行不从查表得到梯度（权重共享时仍从 decoder 得到），也不保证为零。",
         "An nn.Embedding argument: that row gets no gradient from the lookup (a tied decoder still sends it some), "
         "and need not be zero.",
         ("test_padding_idx_stops_only_the_lookups_gradient_to_the_pad_row_and_the_attention_mask_is_what_hides_padding",)),
    Term("DataCollatorForLanguageModeling", "选 15% 的普通 token 做预测：80% 换成 [MASK]，10% 换成随机 token，10% 不变。",
         "Selects 15% of ordinary tokens for prediction: 80% become [MASK], 10% a random token, 10% stay.",
         ("test_the_collator_selects_about_15_percent_of_ordinary_tokens_labels_only_those_and_never_a_special_token",
          "test_the_collator_turns_80_percent_of_selected_tokens_into_mask_10_percent_into_random_tokens_and_keeps_10_percent")),
    Term("pre-LN", "ModernBERT 在每个子层之前做 LayerNorm：x + sublayer(LayerNorm(x))，最后一层之后再做一次。",
         "ModernBERT normalises before each sublayer, x + sublayer(LayerNorm(x)), and once more after the last layer.",
         ("test_modernbert_normalises_before_each_sublayer_and_once_more_after_the_last_layer",)),
    Term("RoPE (rotary positions)", "没有位置嵌入表：query 与 key 按位置成对旋转，注意力分数只通过两个位置的有符号差 i − j "
                                     "依赖于位置（当然也依赖于内容）。",
         "No position table: queries and keys are rotated pair by pair by their positions, so a score depends on "
         "position only through the signed offset i − j between two positions (and on the content, as always).",
         ("test_modernbert_has_no_position_table_and_rotates_queries_and_keys_by_position_instead",),
         ("RoPE", "rotary", "旋转位置")),
    Term("local / global attention", "ModernBERT 的局部层只看 local_attention / 2 以内的 key，每隔几层的全局层看全部。",
         "ModernBERT's local layers see only the keys within local_attention / 2 positions; every few layers a global "
         "one sees them all.",
         ("test_modernbert_local_layers_see_only_a_window_of_keys_and_global_layers_every_key",),
         ("local layers", "global layers", "局部层", "全局层")),
    Term("shared layer / factorised embeddings", "ALBERT 只有一层权重，运行 num_hidden_layers 次；嵌入宽 E，再投影到 H。",
         "ALBERT has one layer's weights, run num_hidden_layers times; its embeddings are E wide, projected up to H.",
         ("test_albert_runs_one_layers_weights_num_hidden_layers_times_on_embeddings_projected_up_from_embedding_size",),
         ("shared layer", "embedding_size")),
    Term("anatomy (bertspec)", "每个家族一个小对象：各角色的模块路径与约定；结论通过它在整个 BERT 家族上运行。",
         "One small object per family: each role's module path and the conventions; the claims run on the whole BERT "
         "family through it.",
         ("test_every_role_the_anatomy_names_is_a_module_of_the_model_and_every_step_name_a_true_module_path",
          "test_the_comparison_table_shows_each_claim_on_each_family_as_holds_differs_linked_not_applicable_or_fails"),
         ("anatomy",)),
    Term("causal mask", "解码器的 mask：每个 query 只能看到自己和之前的 key；与 padding mask 合并，或者为 None、由 sdpa 的 is_causal 完成。",
         "A decoder's mask: each query sees only itself and the keys before it; merged with the padding mask, or None "
         "and sdpa's is_causal flag does it.",
         ("test_each_attention_receives_the_mask_form_read_in_this_version_and_a_causal_one_hides_the_future",
          "test_padded_and_future_keys_get_exactly_zero_probability_at_every_real_query_of_a_causal_self_attention"),
         ("causal mask", "因果 mask")),
    Term("left padding", "把 [PAD] 放在每行开头：解码器在每行最右端追加新 token，批量生成因此在左侧填充。",
         "Pads placed at the start of each row: a decoder appends each new token at a row's right end, so batched "
         "generation pads on the left.",
         ("test_right_padding_changes_most_batched_greedy_continuations_and_left_padding_changes_none",
          "test_a_left_padded_row_gives_its_prompts_logits_with_generates_position_ids_and_without_them_only_under_rotary_positions"),
         ("left padding", "left-padded", "左侧填充", "左侧 padding")),
    Term("KV cache", "past_key_values：每层已算过的 key 与 value；逐 token 生成时新 token 只计算自己的一行。",
         "past_key_values: each layer's keys and values already computed; generating token by token, the new token "
         "computes only its own row.",
         ("test_decoding_token_by_token_with_the_cache_gives_the_logits_of_the_full_forward_with_padding_in_the_cache",),
         ("KV cache", "past_key_values", "KV 缓存")),
    Term("cross-attention", "编码器-解码器中解码器的 query 关注编码器输出的 key 与 value；它的 mask 就是编码器的 padding mask。",
         "In an encoder-decoder, the decoder's queries attend to the keys and values of the encoder's output; its mask "
         "is the encoder's padding mask.",
         ("test_t5_decoder_queries_give_padded_encoder_positions_exactly_zero_probability_in_every_cross_attention_layer",),
         ("cross-attention", "交叉注意力")),
    Term("decoder_input_ids", "T5 解码器的输入：labels 右移一位、以起始 token 开头并把 -100 换成 pad；loss 不再移位。",
         "T5's decoder input: the labels shifted right, starting with the start token, -100 replaced by pad; the loss "
         "is not shifted again.",
         ("test_t5_builds_decoder_inputs_by_shifting_the_labels_right_and_scores_its_loss_against_the_labels_unshifted",)),
]


@dataclass(frozen=True)
class Practice:
    practice_zh: str
    practice: str
    otherwise_zh: str
    otherwise: str
    shown_by: tuple[str, ...]


PRACTICES = [
    Practice("padding 的 batch 一定要传 attention_mask。", "Always pass attention_mask with a padded batch.",
             "不传时 [PAD] 被当作真实 token 关注，真实 token 的输出与预测都会变。",
             "Without it [PAD] is attended like a real token, and real tokens' outputs and predictions change.",
             ("test_a_real_tokens_output_is_the_same_alone_and_in_a_padded_batch",
              "test_appending_padding_does_not_change_the_prediction_at_the_mask_position")),
    Practice("用右侧 padding；左侧 padding 时传 position_ids = cumsum(mask) - 1。",
             "Pad on the right; with left padding pass position_ids = cumsum(mask) - 1.",
             "否则真实 token 的位置被推后，输出改变 O(1)。", "Otherwise real tokens move to later positions and their outputs change by O(1).",
             ("test_left_padding_shifts_positions_unless_position_ids_count_only_real_tokens",)),
    Practice("没有标签的位置用 -100，不要用 0 或其他 id。", "Label positions without a target -100, never 0 or another id.",
             "其他值会被当作真实标签计入 loss 与梯度。", "Any other value is counted as a real label in the loss and the gradient.",
             ("test_the_model_loss_is_cross_entropy_with_ignore_index_minus_100",
              "test_only_labelled_positions_receive_gradient_on_the_logits")),
    Practice("batch 可能没有任何标签时，给 loss 加保护：sum / max(count, 1)。",
             "Guard the loss when a batch may have no label: sum / max(count, 1).",
             "全是 -100 时 loss 是 NaN（0/0），会污染滑动平均与日志。",
             "With every label -100 the loss is NaN (0/0) and poisons running averages and logs.",
             ("test_with_no_labelled_position_the_loss_is_nan_and_a_guarded_mean_gives_zero",)),
    Practice("自己构造加性 mask 时用 finfo(dtype).min，不要用 -inf。",
             "Build custom additive masks with finfo(dtype).min, not -inf.",
             "一整行都被屏蔽时 -inf 让 softmax 得到 NaN。", "A fully masked row under -inf turns softmax into NaN.",
             ("test_a_fully_masked_row_is_uniform_under_finfo_min_only_while_the_scores_are_absorbed_and_nan_under_minus_infinity",
              "test_a_row_with_every_position_padded_gives_finite_outputs_not_nan")),
    Practice("输入截断到模型的位置数以内：BERT 是 max_position_embeddings，RoBERTa 还要减去 padding_idx + 1（514 → 512）。",
             "Truncate inputs to the positions the model has: max_position_embeddings in BERT, less padding_idx + 1 "
             "in RoBERTa (514 → 512).",
             "超长输入在 transformers 深处报尺寸或索引错误，从不说“too long”。",
             "An over-long input fails deep inside transformers with a size or index error that never says \"too long\".",
             ("test_transformers_itself_fails_on_an_over_long_input_with_an_error_that_never_says_too_long",
              "test_an_input_longer_than_the_position_table_is_refused_with_a_message_that_says_too_long",
              "test_roberta_counts_positions_from_after_padding_idx_so_left_padding_leaves_them_alone")),
    Practice("在 transformers 4.57 上给 MLM collator 一个非零的 seed。", "On transformers 4.57, give the MLM collator a non-zero seed.",
             "4.57 的 seed=0 被当作“没有种子”，遮盖随全局随机数变化。",
             "On 4.57 seed=0 counts as \"no seed\", and the masks follow the global RNG.",
             ("test_a_seeded_collator_masks_reproducibly_and_seed_0_counts_as_a_seed_only_from_transformers_5",)),
    Practice("比较 eager 与 sdpa 时按 dtype 取容差。", "Compare eager with sdpa within the dtype's tolerance.",
             "融合内核舍入不同：float32 差 1e-6 量级，半精度差几个 eps，逐位比较会误报。",
             "The fused kernel rounds differently: 1e-6 in float32, a few eps in half precision; bitwise comparison "
             "reports false alarms.",
             ("test_eager_and_sdpa_agree_within_the_tolerance_of_each_dtype",)),
    Practice("句对让分词器编码，它会给出 token_type_ids。", "Let the tokenizer encode sentence pairs: it gives token_type_ids.",
             "片段 B 的 token type 为 1，选择嵌入表的另一行；全 0 会改变输入。",
             "Segment B has token type 1, another row of the table; all zeros change the input.",
             ("test_a_sentence_pair_is_laid_out_as_cls_a_sep_b_sep_with_token_types_0_then_1",
              "test_token_type_embeddings_add_row_0_to_segment_a_and_row_1_to_segment_b")),
    Practice("不要指望 [PAD] 的嵌入行是零。", "Do not rely on the [PAD] embedding row being zero.",
             "padding_idx 并不冻结它（共享权重的 decoder 仍训练它），真正隐藏 padding 的是 attention mask。",
             "padding_idx does not freeze it (the tied decoder still trains it); the attention mask is what hides "
             "padding.",
             ("test_padding_idx_stops_only_the_lookups_gradient_to_the_pad_row_and_the_attention_mask_is_what_hides_padding",)),
    Practice("换架构时先查它的位置编号：RoBERTa 从 padding_idx + 1 数，ModernBERT 用旋转位置。",
             "When you change architecture, check how it numbers positions: RoBERTa counts from padding_idx + 1, "
             "ModernBERT rotates.",
             "BERT 式的 0..T-1 假设在 RoBERTa 上错位，在 ModernBERT 上没有位置表可查。",
             "BERT's 0..T-1 assumption is off on RoBERTa, and ModernBERT has no table to look positions up in.",
             ("test_roberta_counts_positions_from_after_padding_idx_so_left_padding_leaves_them_alone",
              "test_modernbert_has_no_position_table_and_rotates_queries_and_keys_by_position_instead")),
    Practice("不要给 DistilBERT 传 token_type_ids。", "Do not pass token_type_ids to DistilBERT.",
             "它没有 token type：4.57 报 TypeError，5.x 静默忽略，句对信息只剩 [SEP]。",
             "It has no token types: 4.57 raises a TypeError, 5.x silently ignores them, and a pair's structure is left "
             "to [SEP] alone.",
             ("test_distilbert_has_no_token_types_and_receives_its_padding_mask_by_its_own_route",)),
]
