"""Is this folder a BERT checkpoint the spec can run on? Answered before anything runs, in one line.

Two stages. :func:`check_folder` reads only files: the folder, config.json, the
tokenizer files and the weight files' headers (safetensors keeps every tensor's
name, dtype, shape and byte range in a JSON header), so a wrong path, a missing
file, a truncated download or a config of another model fails in well under a
second, before torch is imported. :func:`check_against_config` then builds the
model on torch's meta device (no memory, no weights) and compares every
parameter's shape with the file's, and loads the tokenizer, so that what
transformers would only notice deep inside a forward pass is refused up front.

Messages name the folder, what is wrong and what to do; the caller puts the
option the user typed in front (``--bert-model`` for pytest, ``--model`` for
the trace command).
"""

import json
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from bertspec import anatomy

SAFETENSORS = "model.safetensors"
TORCH_BIN = "pytorch_model.bin"
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")
# Old TensorFlow-converted checkpoints (Google's bert-base-chinese among them) name LayerNorm parameters so.
OLD_NAMES = {".gamma": ".weight", ".beta": ".bias"}


class CheckpointError(ValueError):
    """The folder given as a model is not a checkpoint the spec can load; the message says why and what to do."""


class InputTooLongError(ValueError):
    """An input needs more positions than the model has position embeddings."""


@dataclass
class CheckpointFacts:
    folder: Path
    config: dict
    shapes: dict[str, tuple] = field(default_factory=dict)  # tensor name -> shape; empty for torch .bin files

    @property
    def model_type(self) -> str:
        return self.config["model_type"]


def check_folder(path) -> CheckpointFacts:
    """The cheap checks: the folder, its config, its tokenizer files, its weight files' integrity."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise CheckpointError(f"{path}: no such folder; pass a local checkpoint folder (config.json, weights, vocab.txt)")
    if not folder.is_dir():
        raise CheckpointError(f"{path}: is a file, not a folder; pass the folder that holds config.json and the weights")
    config = _read_config(folder)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(f"{folder}: no vocab.txt or tokenizer.json; save the tokenizer into the folder too "
                              "(tokenizer.save_pretrained(folder))")
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            _read_tokenizer_file(folder / name)
    return CheckpointFacts(folder, config, _read_weight_shapes(folder))


def _read_config(folder: Path) -> dict:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder}: no config.json; pass a folder written by save_pretrained or downloaded from a model hub")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{folder}: config.json is not valid JSON ({err}); re-download or re-save the checkpoint") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{folder}: config.json holds no JSON object; re-download or re-save the checkpoint")
    model_type = config.get("model_type")
    if anatomy.of_model_type(model_type) is None:
        raise CheckpointError(f"{folder}: model_type is {model_type!r}, not one of the BERT family bertspec knows "
                              f"({', '.join(sorted(anatomy.BY_MODEL_TYPE))}); pass such a checkpoint, e.g. bert-base-chinese")
    return config


def _read_tokenizer_file(path: Path) -> None:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: the tokenizer file does not parse ({err}); re-save the tokenizer") from None
    if not text.strip():
        raise CheckpointError(f"{path}: the tokenizer file is empty; re-save the tokenizer")


def _read_weight_shapes(folder: Path) -> dict:
    files = _weight_files(folder)
    shapes = {}
    for file in files:
        shapes.update(_safetensors_shapes(file) if file.suffix == ".safetensors" else _torch_bin_names(file))
    return shapes


def _weight_files(folder: Path) -> list[Path]:
    for name in (SAFETENSORS, TORCH_BIN):
        if (folder / name).is_file():
            return [folder / name]
    for name in INDEXES:
        index = folder / name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError) as err:
                raise CheckpointError(f"{index}: the shard index does not parse ({err}); re-download the checkpoint") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise CheckpointError(f"{folder}: shard {missing[0]} listed in {name} is missing; the download is incomplete")
            return [folder / s for s in shards]
    raise CheckpointError(f"{folder}: no weights ({SAFETENSORS} or {TORCH_BIN}); the download is incomplete")


def _safetensors_shapes(file: Path) -> dict:
    """Tensor name -> shape from the JSON header, after checking the file holds every byte the header promises."""
    size = file.stat().st_size
    with file.open("rb") as f:
        prefix = f.read(8)
        header_length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
        if header_length is None or header_length > size - 8:
            raise CheckpointError(f"{file}: not a safetensors file (no valid header); re-download or re-save the checkpoint")
        try:
            header = json.loads(f.read(header_length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{file}: the safetensors header does not parse; re-download or re-save the checkpoint") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    needed = 8 + header_length + max((v["data_offsets"][1] for v in tensors.values()), default=0)
    if needed > size:
        raise CheckpointError(f"{file}: truncated ({size} of {needed} bytes); the download is incomplete, re-download it")
    return {_normalised(k): tuple(v["shape"]) for k, v in tensors.items()}


def _torch_bin_names(file: Path) -> dict:
    """A torch.save file is a zip archive: check that it opens; shapes are checked when the model is built."""
    try:
        with zipfile.ZipFile(file) as archive:
            if archive.testzip() is not None:
                raise zipfile.BadZipFile("a member fails its CRC check")
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{file}: not a readable torch file ({err}); re-download or re-save the checkpoint") from None
    return {}


def _normalised(name: str) -> str:
    for old, new in OLD_NAMES.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


# ---- the deep check: shapes against the config, the tokenizer against the vocabulary ----

def check_against_config(facts: CheckpointFacts) -> None:
    """Every tensor in the file has the shape the config implies; the tokenizer loads and fits the embedding table."""
    model = _model_on_meta_device(facts)
    reason = anatomy.of_model_type(facts.model_type).unsupported(model.config)
    if reason:
        raise CheckpointError(f"{facts.folder}: {reason}; use a checkpoint of that layout")
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    prefix = model.base_model_prefix + "."
    shapes = facts.shapes or _torch_bin_shapes(facts.folder)
    for name, shape in shapes.items():
        key = name if name in expected else prefix + name
        if key in expected and expected[key] != shape:
            raise CheckpointError(f"{facts.folder}: {name} has shape {list(shape)} but config.json implies "
                                  f"{list(expected[key])}; the weights and config.json come from different models")
    if shapes:
        base = [k for k in expected if k.startswith(prefix)]
        present = {k if k in expected else prefix + k for k in shapes}
        missing = [k for k in base if k not in present and not k.endswith(("position_ids", "token_type_ids"))]
        if missing:
            raise CheckpointError(f"{facts.folder}: encoder weights missing ({missing[0]}, ... {len(missing)} in all); "
                                  "this is not a complete checkpoint")
    _check_tokenizer(facts, model.config.vocab_size)


def _torch_bin_shapes(folder: Path) -> dict:
    """Shapes of a torch.save checkpoint, memory-mapped: nothing is read but what the shapes need."""
    import torch

    shapes = {}
    for file in _weight_files(folder):
        try:
            state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
        except Exception as err:  # pickle, zip and torch each raise their own types
            raise CheckpointError(f"{file}: the weights do not load ({type(err).__name__}: {first_line(err)}); "
                                  "re-download or re-save the checkpoint") from None
        shapes.update({_normalised(k): tuple(v.shape) for k, v in state.items()})
    return shapes


def _model_on_meta_device(facts: CheckpointFacts):
    import torch
    import transformers
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(facts.folder))
    except Exception as err:  # transformers raises many types for a config it cannot use
        raise CheckpointError(f"{facts.folder}: config.json does not make a config ({type(err).__name__}: "
                              f"{first_line(err)}); re-save the checkpoint") from None
    with torch.device("meta"):
        return getattr(transformers, anatomy.of_model_type(facts.model_type).mlm_class)(config)


def _check_tokenizer(facts: CheckpointFacts, vocab_size: int) -> None:
    tokenizer = load_tokenizer(facts.folder)
    largest = max(tokenizer.get_vocab().values())
    if largest >= vocab_size:
        raise CheckpointError(f"{facts.folder}: the tokenizer has ids up to {largest} but the embedding table has "
                              f"{vocab_size} rows (vocab_size); the tokenizer belongs to another model")


def load_tokenizer(folder):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:  # transformers raises many types for a bad tokenizer folder
        raise CheckpointError(f"{folder}: the tokenizer does not load ({type(err).__name__}: {first_line(err)}); "
                              "re-save the tokenizer (vocab.txt, tokenizer_config.json)") from None


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else ""
