"""The bad-input table: what a user can get wrong, and what the one line that answers it must say.

Each BROKEN row is a checkpoint folder broken in one way (the bundled model
copied and changed by bertspec.proof.broken), each BAD_OPTIONS row an option
value no run can take; both with the words the one-line refusal must contain.
The pytest claims (P1.1, spec/test_p1_1_bad_input.py) and the trace command's
(P1.2, spec/test_p1_2_tracer.py) run every row.
"""

from pathlib import Path

import torch

from bertspec.models.source import FAMILY_MODEL_DIRS
from bertspec.proof.broken import Code, config_with, copy, entry, header, nan_in, row, vocab, write


def _grouped_albert(base: Path) -> Path:
    albert = FAMILY_MODEL_DIRS["albert"]
    return copy(base, "albert-groups", config=config_with(albert, num_hidden_groups=3), source=albert)


def _truncated(base: Path) -> Path:
    folder = copy(base, "truncated")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return folder


def _a_file(base: Path) -> Path:
    path = base / "a-file.txt"
    path.write_text("not a folder\n")
    return path


# row -> (make the folder, what the one line must say)
BROKEN = {
    "missing folder": (lambda base: base / "nowhere", "no such folder"),
    "not a folder": (_a_file, "is a file, not a folder"),
    "another model type": (lambda base: copy(base, "xlnet", config=config_with(model_type="xlnet")),
                           "model_type is 'xlnet', not one of the BERT family"),
    "a decoder's folder": (lambda base: copy(base, "gpt2", config=config_with(model_type="gpt2")),
                           "the bundled GPT-2"),
    "no config": (lambda base: copy(base, "no-config", without=["config.json"]), "no config.json"),
    "config does not parse": (lambda base: copy(base, "bad-json", config='{"model_type": "bert",'), "not valid JSON"),
    "no tokenizer files": (lambda base: copy(base, "no-tokenizer", without=["vocab.txt", "tokenizer.json"]),
                           "no vocab.txt or tokenizer.json"),
    "no weights": (lambda base: copy(base, "no-weights", without=["model.safetensors"]), "no weights"),
    "truncated weights": (_truncated, "truncated"),
    "shapes that do not match the config": (lambda base: copy(base, "other-size", config=config_with(hidden_size=32)),
                                            "but config.json implies"),
    "an ALBERT whose layers come in groups": (_grouped_albert, "num_hidden_groups 3"),
    "vocab.txt without [MASK]": row("no-mask", "the vocabulary has no [MASK] (mask_token), the tokenizer appends it",
                                        without=["tokenizer.json"], edit=vocab(lambda ts: [t for t in ts if t != "[MASK]"])),
    "vocab.txt and tokenizer.json disagree": row("swapped", "[MASK] has id 103 in tokenizer.json but line 105",
                                                     edit=vocab(lambda ts: [*ts[:103], ts[104], ts[103], *ts[105:]])),
    "pad_token_id not the tokenizer's": row("pad-1", "config.json says pad_token_id 1 but the tokenizer's [PAD] has id 0",
                                                config=config_with(pad_token_id=1)),
    "a NaN in a weight": row("nan", "bert.encoder.layer.1.attention.self.query.weight holds NaN or inf",
                                 edit=nan_in("bert.encoder.layer.1.attention.self.query.weight")),
    "heads that do not divide the hidden size": row("heads-5", "transformers refuses config.json (ValueError: The hidden size",
                                                        config=config_with(num_attention_heads=5)),
    "more layers in config.json than in the weights": row(
        "deep", "config.json says 12 layers (num_hidden_layers), the weights hold 3", config=config_with(num_hidden_layers=12)),
    "a safetensors header that is a list": row("header-list", "the header is not a JSON object", edit=header([])),
    "a header entry without data_offsets": row("no-offsets", "entry 'w' has no valid dtype, shape and data_offsets",
                                                   edit=header({"w": {"shape": [1]}})),
    "a header without tensors": row("no-tensor", "(it holds no tensor)", edit=header({"__metadata__": {}})),
    "a dtype that does not fit its bytes": row("f64", "'bert.pooler.dense.bias': F64 x [64] takes 512 bytes, its data_offsets "
                                               "span 256", edit=entry("bert.pooler.dense.bias", dtype="F64")),
    "sep_token_id not the tokenizer's": row("sep-5", "config.json says sep_token_id 5 but the tokenizer's [SEP] has id 102",
                                            config=config_with(sep_token_id=5)),
    "a shard index that is a list": row("index-list", "has no weight_map object", without=["model.safetensors"],
                                            edit=write("model.safetensors.index.json", "[]")),
    "a weight_map that is a list": row("map-list", "has no weight_map object", without=["model.safetensors"],
                                           edit=write("model.safetensors.index.json", '{"weight_map": []}')),
    "a pickle that holds code": row(
        "pickle-code", "the pickle contains code (it calls posix.mkdir), not just tensors, and bertspec never runs it",
        without=["model.safetensors"], edit=lambda folder: torch.save({"w": Code(folder / "the pickle ran")},
                                                                      folder / "pytorch_model.bin")),
}
BAD_OPTIONS = {
    "unknown implementation": (["--attn-implementation", "flash"], "flash"),
    "--device cuda without a GPU": (["--device", "cuda"], "no CUDA GPU"),
}


def folders(base: Path) -> dict[str, Path]:
    """Every BROKEN row's folder, made under ``base``."""
    return {name: make(base) for name, (make, _) in BROKEN.items()}


def one_line(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]
