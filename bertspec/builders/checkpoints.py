"""Checkpoint folders for trying the spec on a real-sized model without a download."""

from pathlib import Path

import torch

from bertspec.models.source import DEFAULT_MODEL_DIR

# bert-base-chinese's shape (its config.json), so a run exercises real sizes.
BERT_BASE_CHINESE = dict(
    vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0,
)


def write_random_checkpoint(out, encoder_only: bool = False, seed: int = 0) -> Path:
    """save_pretrained a randomly initialised BERT of bert-base-chinese's size, with the bundled tokenizer.

    The bundled vocabulary keeps bert-base-chinese's special ids and is smaller
    than 21128, so every id it produces is a valid row of the larger embedding.
    """
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel
    from transformers.utils.logging import disable_progress_bar

    disable_progress_bar()

    torch.manual_seed(seed)
    config = BertConfig(**BERT_BASE_CHINESE)
    model = BertModel(config, add_pooling_layer=True) if encoder_only else BertForMaskedLM(config)
    out = Path(out)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(DEFAULT_MODEL_DIR)).save_pretrained(out)
    return out
