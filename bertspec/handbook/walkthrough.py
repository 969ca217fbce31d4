"""BERT in one page: a newcomer's walk from the input to the loss, each step linked to the claims that prove it.

Each step says what happens in a sentence or two in each language, names the
claims that show it (test function names; the first one's question is the
step's entry in the front page's "start here") and the evidence record that the
handbook shows beside it, read from this run: ``shows`` = (one of its claims,
the title of that claim's record). A step whose claim did not pass, or
recorded no such evidence, shows its text and its links alone. A claim in
chapter P5.2d checks that every name exists and every title is one its claim
records.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    key: str  # the step's anchor: step-<key>
    name_zh: str
    name: str
    zh: str
    en: str
    claims: tuple[str, ...]
    shows: tuple[str, str]  # (a claim of the step, the title of its evidence record shown beside the step)
    # The run of that claim that records it, by its test id's parameters ("eager-gpt2"), where the claim runs on
    # several architectures (chapter P8's): the step shows that run's record, whatever order the runs took, and
    # knows it is missing only where that run passed. None: the claim's first passed run.
    run: str | None = None

    @property
    def anchor(self) -> str:
        return f"step-{self.key}"


STEPS = [
    Step("tokens", "词元与 attention_mask", "Tokens and the attention_mask",
         "分词器把文本切成 token（中文每个汉字一个），前加 [CLS]、后加 [SEP]，较短的行用 [PAD] 补齐；"
         "attention_mask 在真实 token 处为 1，在 [PAD] 处为 0。[MASK] 只是 input_ids 中的一个普通 id。",
         "The tokenizer splits the text into tokens (one per Chinese character), puts [CLS] before and [SEP] after, "
         "and pads shorter rows with [PAD]; attention_mask is 1 at real tokens and 0 at [PAD]. [MASK] is just "
         "another id in input_ids.",
         ("test_the_tokenizer_wraps_every_text_in_cls_and_sep_and_gives_each_special_token_its_own_id",
          "test_the_padding_mask_and_the_mlm_mask_token_are_separate_inputs",
          "test_the_tokenizer_splits_chinese_text_into_single_characters"),
         ("test_the_padding_mask_and_the_mlm_mask_token_are_separate_inputs", "row 1")),
    Step("embeddings", "嵌入：词 + 位置 + 片段", "Embeddings: word + position + token type",
         "每个位置的输入向量是三个查表向量之和：词嵌入（按 input_ids）、位置嵌入（按 position_ids，默认 0..T−1）"
         "与片段嵌入（按 token_type_ids，默认全 0），之后是 LayerNorm 与 dropout。",
         "Each position's input vector is the sum of three looked-up vectors: the word embedding (by input_ids), the "
         "position embedding (by position_ids, 0..T−1 by default) and the token type embedding (by token_type_ids, "
         "all 0 by default), followed by LayerNorm and dropout.",
         ("test_the_embeddings_are_word_plus_token_type_plus_position_vectors_then_layernorm",
          "test_omitted_position_ids_count_from_0_to_t_minus_1",
          "test_token_type_embeddings_add_row_0_to_segment_a_and_row_1_to_segment_b"),
         ("test_the_embeddings_are_word_plus_token_type_plus_position_vectors_then_layernorm",
          "row 0: the three vectors per token (norms)")),
    Step("mask", "attention mask：二维 → 加性", "The attention mask: 2D → additive",
         "模型由二维 attention_mask 只构造一次每层收到的 mask，所有层共用：加性 mask (1 − attention_mask) · finfo(dtype).min，"
         "可见的 key 处为 0，[PAD] key 处为 finfo.min。层收到的形式取决于版本与实现：transformers 5.x 的 sdpa 收到布尔 mask，"
         "由内核做同样的屏蔽；没有 padding 的 batch 常常不收到 mask。",
         "The model builds the mask every layer receives once, from the 2D attention_mask, and all layers share it: "
         "the additive mask (1 − attention_mask) · finfo(dtype).min, 0 at visible keys and finfo.min at [PAD] keys. "
         "The form a layer gets depends on the version and implementation: sdpa in transformers 5.x gets a boolean "
         "mask, which its kernel applies the same way, and an unpadded batch often gets none.",
         ("test_a_float_layer_mask_equals_one_minus_mask_times_the_dtype_minimum",
          "test_the_mask_reaching_the_layers_has_the_form_read_in_this_transformers_version",
          "test_every_layer_receives_the_same_mask_built_once_from_the_2d_mask"),
         ("test_a_float_layer_mask_equals_one_minus_mask_times_the_dtype_minimum", "received vs formula (row 1)")),
    Step("scores", "分数 + mask", "Scores + mask",
         "每个头计算分数 Q·Kᵀ/√d_head 再加上 mask：真实 key 的分数加 0，逐位不变；[PAD] key 的分数变成 finfo.min 本身，"
         "普通大小的分数在这个量级下被吸收。",
         "Each head computes the scores Q·Kᵀ/√d_head and adds the mask: a real key's score gains 0 and is unchanged "
         "bit for bit; a [PAD] key's becomes finfo.min itself, as an ordinary score is absorbed at that magnitude.",
         ("test_score_plus_mask_at_a_padded_key_is_the_dtype_minimum_itself",
          "test_adding_the_all_zero_mask_leaves_every_score_bit_for_bit_unchanged"),
         ("test_score_plus_mask_at_a_padded_key_is_the_dtype_minimum_itself", "at the padded keys")),
    Step("softmax", "softmax：[PAD] key 严格为 0", "Softmax: [PAD] keys get exactly 0",
         "softmax 把每一行变成和为 1 的概率；exp(finfo.min − max) 下溢为 0，所以 [PAD] key 的概率严格为 0，"
         "对真实 token 的输出毫无贡献。",
         "Softmax turns each row into probabilities that sum to 1; exp(finfo.min − max) underflows to 0, so a [PAD] "
         "key gets probability exactly 0 and contributes nothing to the real tokens' outputs.",
         ("test_padded_keys_get_exactly_zero_attention_probability",
          "test_every_attention_row_sums_to_one",
          "test_a_padded_key_stays_masked_along_the_whole_path_to_its_probability",
          "test_padded_positions_get_outputs_that_never_reach_the_real_tokens"),
         ("test_padded_keys_get_exactly_zero_attention_probability", "layer 0, head 0, row 1 (ends in [PAD]): probabilities")),
    Step("layers", "编码层", "The layers",
         "每一层（post-LN）：注意力输出加回残差后做 LayerNorm，再经前馈网络（dense → GELU → dense）、加残差、LayerNorm；"
         "同一个 mask 进入每一层，句子在 padding 的 batch 中与单独计算时输出相同。",
         "Each layer (post-LN): the attention output is added to the residual and normalised, then the feed-forward "
         "network (dense → GELU → dense), another residual sum and LayerNorm; the same mask enters every layer, so a "
         "sentence has the same outputs in a padded batch as alone.",
         ("test_each_encoder_layer_recomputed_by_hand_is_attention_residual_layernorm_then_ffn_residual_layernorm",
          "test_a_real_tokens_output_is_the_same_alone_and_in_a_padded_batch",
          "test_the_feed_forward_and_head_activation_is_the_configured_gelu_not_its_other_variant"),
         ("test_each_encoder_layer_recomputed_by_hand_is_attention_residual_layernorm_then_ffn_residual_layernorm",
          "reference sublayer vs transformers (same input)")),
    Step("head", "MLM 预测头：transform", "The MLM head: its transform",
         "预测头先用 transform（dense → GELU → LayerNorm）把最后一层的隐藏状态变换到词嵌入空间；去掉它，logits 与预测都会改变。",
         "The prediction head first maps the last hidden state into the embedding space with its transform "
         "(dense → GELU → LayerNorm); without it the logits and the predictions change.",
         ("test_the_prediction_head_is_a_transform_dense_activation_layernorm_followed_by_the_decoder",
          "test_removing_the_head_transform_changes_the_logits_and_the_predictions"),
         ("test_the_prediction_head_is_a_transform_dense_activation_layernorm_followed_by_the_decoder",
          "the head's modules")),
    Step("decoder", "共享权重的 decoder 与它的 bias", "The tied decoder and its bias",
         "decoder 用词嵌入矩阵本身（同一个 Parameter）给词表中每个 token 打分，再加上它自己的 bias：[B, T, H] → [B, T, V]。",
         "The decoder scores every vocabulary token with the word-embedding matrix itself (the same Parameter) and "
         "adds a bias of its own: [B, T, H] → [B, T, V].",
         ("test_the_decoder_weight_is_the_word_embedding_matrix_itself_and_its_bias_is_its_own",
          "test_the_decoder_maps_batch_seq_hidden_to_batch_seq_vocab_one_score_per_vocabulary_entry"),
         ("test_the_decoder_weight_is_the_word_embedding_matrix_itself_and_its_bias_is_its_own", "who holds what")),
    Step("logits", "logits", "Logits",
         "prediction_scores 是未归一化的 logits；softmax 把它们变成词表上的概率分布，argmax 就是预测的 token。",
         "prediction_scores are unnormalised logits; softmax turns them into a distribution over the vocabulary, and "
         "the argmax is the predicted token.",
         ("test_prediction_scores_are_unnormalised_logits_that_softmax_turns_into_a_distribution",
          "test_the_bundled_model_completes_beijing_is_chinas_capital_with_du",
          "test_several_masks_are_predicted_in_one_pass_and_none_sees_anothers_answer"),
         ("test_prediction_scores_are_unnormalised_logits_that_softmax_turns_into_a_distribution",
          "first [MASK]: top 5")),
    Step("loss", "loss 与 -100", "The loss and -100",
         "loss 是 label 不为 -100 的位置上交叉熵的平均值；-100 表示“此处没有标签”，CrossEntropyLoss 跳过它。",
         "The loss is the mean cross entropy over the positions whose label is not -100; -100 means \"no label "
         "here\", and CrossEntropyLoss skips it.",
         ("test_the_model_loss_is_cross_entropy_with_ignore_index_minus_100",
          "test_a_hand_written_log_softmax_gather_mean_loss_equals_the_models_loss",
          "test_the_loss_is_the_mean_not_the_sum_of_the_per_position_losses_over_exactly_the_labelled_positions"),
         ("test_the_model_loss_is_cross_entropy_with_ignore_index_minus_100", "the loss three ways")),
    Step("gradient", "梯度只在有标签的位置", "Gradient only at labelled positions",
         "loss 对 logits 的梯度只在有标签的位置非零：(softmax − one_hot(label)) / 标签数，其他位置为 0；"
         "经过 attention，每个真实 token 的输入嵌入仍会得到梯度。",
         "The loss's gradient on the logits is nonzero only at labelled positions: (softmax − one_hot(label)) / the "
         "number of labels, and 0 elsewhere; through attention, every real token's input embedding still receives "
         "gradient.",
         ("test_only_labelled_positions_receive_gradient_on_the_logits",
          "test_every_real_token_of_a_labelled_sequence_receives_gradient_on_its_input_embedding",
          "test_the_tied_matrix_receives_gradient_from_both_the_embedding_lookup_and_the_decoder"),
         ("test_only_labelled_positions_receive_gradient_on_the_logits", "|d loss / d logits| per position")),
]


@dataclass(frozen=True)
class Walk:
    """One page of steps: its anchor, its title and a sentence in each language, and the steps."""

    key: str
    title_zh: str
    title: str
    intro_zh: str
    intro: str
    steps: list[Step]


# From BERT to GPT and T5: what changes when the same questions are asked of a decoder and an encoder-decoder,
# each difference linked to the chapter P8 claims that prove it on the bundled GPT-2, LLaMA and T5.
BEYOND = [
    Step("causal-mask", "因果 mask：padding 之上再加未来", "The causal mask: padding, and the future too",
         "解码器的每个 query 只能看到自己和之前的 key：padding mask 与未来 key 的三角合并成每层收到的 mask（或者 mask 为 None、"
         "由 sdpa 的 is_causal 标志完成）。没有 padding 的 batch 也不再是“全零” mask。padding key 与未来 key 的概率都严格为 0。",
         "A decoder's query sees only itself and the keys before it: the padding mask and the triangle of future keys "
         "merge into the mask each layer receives (or the mask is None and sdpa's is_causal flag does it). An "
         "unpadded batch no longer has an \"all-zero\" mask. Padded and future keys both get probability exactly 0.",
         ("test_padded_and_future_keys_get_exactly_zero_probability_at_every_real_query_of_a_causal_self_attention",
          "test_each_attention_receives_the_mask_form_read_in_this_version_and_a_causal_one_hides_the_future",
          "test_the_trace_command_prints_each_attentions_mask_and_the_models_own_top_next_token_guesses"),
         ("test_padded_and_future_keys_get_exactly_zero_probability_at_every_real_query_of_a_causal_self_attention",
          "GPT-2, eager: every causal self-attention layer and head, left-padded batch"), run="eager-gpt2"),
    Step("padding-side", "左侧 padding 与位置", "Left padding and positions",
         "生成时新 token 接在每行的最右端，所以批量生成要在左侧 padding；右侧 padding 会让 [PAD] 夹在提示与续写之间。"
         "左侧 padding 之后，GPT-2 的绝对位置要从每行第一个真实 token 数起（generate 传入 position_ids）；"
         "LLaMA 的旋转位置只看相对距离，整体平移不改变分数。",
         "In generation the new token is appended at each row's right end, so a batch is padded on the left; right "
         "padding puts pads between a prompt and its continuation. After left padding, GPT-2's absolute positions "
         "must count from each row's first real token (generate passes position_ids); LLaMA's rotary positions see "
         "only relative distances, so a shift of all of them leaves the scores unchanged.",
         ("test_right_padding_changes_most_batched_greedy_continuations_and_left_padding_changes_none",
          "test_a_left_padded_row_gives_its_prompts_logits_with_generates_position_ids_and_without_them_only_under_rotary_positions",
          "test_the_bundled_decoders_finish_corpus_lines_from_their_first_half_where_an_untrained_twin_does_not"),
         ("test_right_padding_changes_most_batched_greedy_continuations_and_left_padding_changes_none",
          "GPT-2: one prompt of each length"), run="eager-gpt2"),
    Step("causal-loss", "因果 LM 的 loss：labels 就是输入", "The causal LM loss: the labels are the inputs",
         "因果语言模型的 labels 就是 input_ids 本身：模型在内部把 logits 与 labels 错开一位，用户不要自己再移位。"
         "提示和 padding 标为 -100，就既不进 loss 也不产生梯度——对应 BERT 的“只有有标签的位置得到梯度”。",
         "A causal LM's labels are the input_ids themselves: the model shifts logits and labels by one inside, and "
         "the user must not shift them again. Prompt and padding tokens labelled -100 enter neither the loss nor the "
         "gradient, the counterpart of BERT's \"gradient only at labelled positions\".",
         ("test_minus_100_on_prompt_and_padding_leaves_them_out_of_a_decoders_loss_and_gives_their_preceding_logits_exactly_zero_gradient",
          "test_a_decoders_loss_with_labels_equal_to_its_input_ids_scores_each_position_against_the_next_token"),
         ("test_minus_100_on_prompt_and_padding_leaves_them_out_of_a_decoders_loss_and_gives_their_preceding_logits_exactly_zero_gradient",
          "row 0: |d loss / d logits| per position"), run="eager-gpt2"),
    Step("cache", "KV 缓存", "The cache",
         "逐个 token 生成时，每层把已算过的 key 与 value 存进缓存，新 token 只需计算自己的一行；"
         "带缓存的逐步前向给出与一次完整前向相同的 logits，缓存中的 padding 也照样被屏蔽。",
         "Generating token by token, each layer keeps the keys and values already computed in its cache and the new "
         "token computes only its own row; the cached, step-by-step forward gives the logits of one full forward, "
         "with the padding in the cache still hidden.",
         ("test_decoding_token_by_token_with_the_cache_gives_the_logits_of_the_full_forward_with_padding_in_the_cache",),
         ("test_decoding_token_by_token_with_the_cache_gives_the_logits_of_the_full_forward_with_padding_in_the_cache",
          "GPT-2 (eager): token by token with the cache vs one full forward"), run="eager-gpt2"),
    Step("encoder-decoder", "编码器-解码器：T5", "The encoder-decoder: T5",
         "T5 的编码器像 BERT 一样双向；解码器是因果的，并通过交叉注意力读取编码器的输出，编码器的 padding mask 就是交叉注意力的 mask。"
         "decoder_input_ids 是 labels 右移一位、以起始 token 开头并把 -100 换成 pad；loss 不再移位。T5 的分数不除以 √d，缩放放在初始化里。",
         "T5's encoder is bidirectional like BERT; its decoder is causal and reads the encoder's output through "
         "cross-attention, whose mask is the encoder's padding mask. decoder_input_ids are the labels shifted right, "
         "starting with the start token, -100 replaced by pad; the loss is not shifted again. T5 does not divide its "
         "scores by √d: the scale lives in the initialisation.",
         ("test_t5_decoder_queries_give_padded_encoder_positions_exactly_zero_probability_in_every_cross_attention_layer",
          "test_t5_decoder_self_attention_gives_later_decoder_tokens_zero_probability_and_its_encoder_does_not",
          "test_t5_builds_decoder_inputs_by_shifting_the_labels_right_and_scores_its_loss_against_the_labels_unshifted",
          "test_t5_does_not_divide_its_scores_by_the_square_root_of_the_head_size_its_query_initialisation_carries_the_scale",
          "test_the_lm_head_is_the_word_embedding_matrix_itself_exactly_where_the_config_ties_them_and_has_no_bias"),
         ("test_t5_decoder_queries_give_padded_encoder_positions_exactly_zero_probability_in_every_cross_attention_layer",
          "T5 (eager): cross-attention over a right-padded encoder batch (7 of 10 positions of row 1 padded)"), run="eager-t5"),
]

WALKS = [
    Walk("bert-in-one-page", "BERT 一页纸", "BERT in one page",
         "从输入到 loss 的每一步：一两句话、本次运行在被测模型上得到的证据，以及证明它的结论。",
         "Every step from the input to the loss: a sentence or two, the evidence this run computed on the model under "
         "test, and the claims that prove it.", STEPS),
    Walk("bert-to-gpt-and-t5", "从 BERT 到 GPT 与 T5", "From BERT to GPT and T5",
         "同样的问题问解码器（GPT-2、LLaMA）与编码器-解码器（T5）：每个不同之处、本次运行在自带模型上的证据，以及证明它的第 P8 章结论。",
         "The same questions asked of decoders (GPT-2, LLaMA) and an encoder-decoder (T5): each difference, the "
         "evidence this run computed on the bundled models, and the chapter P8 claims that prove it.", BEYOND),
]
