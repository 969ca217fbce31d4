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
