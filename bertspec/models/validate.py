"""Is this folder a BERT checkpoint the spec can run on? Answered before anything runs, in one line.

Two stages. :func:`check_folder` reads only files: the folder, config.json, the
tokenizer files and the weight files' headers (safetensors keeps every tensor's
name, dtype, shape and byte range in a JSON header), so a wrong path, a missing
file, a truncated download or a config of another model fails in well under a
second, before torch is imported. :func:`check_against_config` then builds the
model on torch's meta device (no memory, no weights) and compares every
parameter's shape with the file's, reads every weight memory-mapped for a NaN or
inf, and loads the tokenizer to check its special tokens against the vocabulary,
so that what transformers would only notice deep inside a forward pass, or never
(a [MASK] appended as an added token), is refused up front.

Messages name the folder, what is wrong and what to do; each error carries the
choice it concerns, which the caller words as the option the user typed
(``--bert-model`` for pytest, ``--model`` for the trace command).
:func:`checked` runs both stages once per process and folder and hands the
facts on.
"""

import json
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from bertspec.models import anatomy, generative

SAFETENSORS = "model.safetensors"
TORCH_BIN = "pytorch_model.bin"
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")
# Old TensorFlow-converted checkpoints (Google's bert-base-chinese among them) name LayerNorm parameters so.
OLD_NAMES = {".gamma": ".weight", ".beta": ".bias"}
# Advice must work offline (a hub name would be refused there): a local folder, or the bundled model.
OFFLINE_ADVICE = "pass a local folder of such a checkpoint, or leave out the option to use the bundled model"


class CheckpointError(ValueError):
    """The model asked for cannot be loaded; the message says why and what to do.

    ``concerns`` names the choice at fault ("model": the folder, "device", "attn_implementation"); each front end
    words it as its own option (pytest's --bert-model, the CLI's --model) with :meth:`line`.
    """

    def __init__(self, message: str, concerns: str = "model"):
        super().__init__(message)
        self.concerns = concerns

    def line(self, options: dict[str, str]) -> str:
        """The one line a user reads: the option they typed, then the message."""
        return f"{options[self.concerns]} {self}"


class InputTooLongError(ValueError):
    """An input needs more positions than the model has position embeddings; ``advice`` is what the caller can do."""

    def __init__(self, n_tokens: int, max_positions: int, advice: str):
        self.n_tokens, self.max_positions = n_tokens, max_positions
        super().__init__(f"input is too long: {n_tokens} tokens (with the special tokens the tokenizer adds) but the "
                         f"model has {max_positions} position embeddings; shorten the text or {advice}")


@dataclass
class CheckpointFacts:
    folder: Path
    config: dict
    shapes: dict[str, tuple] = field(default_factory=dict)  # tensor name -> shape; empty for torch .bin files
    tokenizer: object = None  # loaded by the deep check, handed on to whoever loads the model

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
    beyond = generative.of_model_type(model_type)
    if beyond is not None:  # chapter P8 knows it, on its bundled model only (source.py)
        raise CheckpointError(f"{folder}: model_type is {model_type!r}, a {beyond.kind}; --bert-model takes a BERT-family "
                              f"encoder, and chapter P8 runs on the bundled {beyond.name} without it (--family "
                              f"{beyond.family}: on that model alone)")
    if anatomy.of_model_type(model_type) is None:
        raise CheckpointError(f"{folder}: model_type is {model_type!r}, not one of the BERT family bertspec knows "
                              f"({', '.join(sorted(anatomy.BY_MODEL_TYPE))}); {OFFLINE_ADVICE}")
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
                data = json.loads(index.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CheckpointError(f"{index}: the shard index does not parse ({err}); re-download the checkpoint") from None
            # valid JSON of another shape (a list, a string) is as broken as JSON that does not parse
            weight_map = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(weight_map, dict) or not all(isinstance(s, str) for s in weight_map.values()):
                raise CheckpointError(f"{index}: the shard index has no weight_map object (tensor name -> shard file); "
                                      "re-download the checkpoint")
            shards = sorted(set(weight_map.values()))
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
    tensors = {k: v for k, v in header.items() if k != "__metadata__"} if isinstance(header, dict) else None
    bad = _header_problem(tensors)
    if bad:
        raise CheckpointError(f"{file}: not a valid safetensors file ({bad}); re-download or re-save the checkpoint")
    needed = 8 + header_length + max((v["data_offsets"][1] for v in tensors.values()), default=0)
    if needed > size:
        raise CheckpointError(f"{file}: truncated ({size} of {needed} bytes); the download is incomplete, re-download it")
    return {_normalised(k): tuple(v["shape"]) for k, v in tensors.items()}


def _header_problem(tensors: dict | None) -> str | None:
    """What makes a parsed header invalid, in words; None when it is valid."""
    if tensors is None:
        return "the header is not a JSON object"
    if not tensors:  # from_pretrained would start every weight at random, and say so only in a log
        return "it holds no tensor"
    for name, entry in tensors.items():
        if not _entry_ok(entry):
            return f"entry {name!r} has no valid dtype, shape and data_offsets"
        span = entry["data_offsets"][1] - entry["data_offsets"][0]
        if _nbytes(entry) not in (None, span):  # safetensors itself would refuse it only when a tensor is read
            return f"entry {name!r}: {entry['dtype']} x {entry['shape']} takes {_nbytes(entry)} bytes, its data_offsets span {span}"
    return None


# bytes per element of the dtypes BERT checkpoints use; others (sub-byte floats) are left to safetensors
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _nbytes(entry) -> int | None:
    """The bytes an entry's dtype and shape take (a dtype that disagrees with its byte range reads garbage); None if unknown."""
    size = DTYPE_BYTES.get(entry["dtype"])
    for n in entry["shape"]:
        size = None if size is None else size * n
    return size


def _entry_ok(entry) -> bool:
    """A header entry as the format defines it: a dtype name, shape and data_offsets [begin, end] of whole numbers."""
    if not isinstance(entry, dict):
        return False
    offsets, shape = entry.get("data_offsets"), entry.get("shape")
    return (isinstance(entry.get("dtype"), str) and isinstance(offsets, list) and len(offsets) == 2
            and isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in [*offsets, *shape])
            and offsets[0] <= offsets[1])


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


def checked(path) -> CheckpointFacts:
    """Both checks, once per process and folder: the session's check hands its facts (the tokenizer among them) to
    every later load of the same folder instead of building the meta-device model and the tokenizer again."""
    key = Path(path).expanduser().resolve()
    if key not in _CHECKED:
        facts = check_folder(path)  # messages name the folder as the user wrote it
        check_against_config(facts)
        _CHECKED[key] = facts
    return _CHECKED[key]


_CHECKED: dict[Path, CheckpointFacts] = {}


# ---- the deep check: shapes against the config, the tokenizer against the vocabulary ----

def check_against_config(facts: CheckpointFacts) -> None:
    """Every tensor in the file has the shape the config implies and a finite value; the tokenizer fits the model."""
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
            _check_layer_count(facts, model.config.num_hidden_layers, missing, present)
            raise CheckpointError(f"{facts.folder}: encoder weights missing ({missing[0]}, ... {len(missing)} in all); "
                                  f"this is not a complete checkpoint; {OFFLINE_ADVICE}")
    _check_finite(facts.folder)
    _check_tokenizer(facts, model.config.vocab_size)


# the first numbered part of a parameter name is the layer list: bert.encoder.layer.3., model.layers.3.
LAYER = re.compile(r"^(.*?\.)(\d+)\.")


def _check_layer_count(facts: CheckpointFacts, layers: int, missing: list, present: set) -> None:
    """When what is missing is whole layers, say so in the config's terms: a config of another depth is a common mix-up."""
    lists = {m.group(1) for m in map(LAYER.match, missing) if m}
    if len(lists) != 1 or not all(LAYER.match(k) for k in missing):
        return
    (layer_list,) = lists
    held = len({m.group(2) for m in map(LAYER.match, present) if m and m.group(1) == layer_list})
    if held < layers:
        raise CheckpointError(f"{facts.folder}: config.json says {layers} layers (num_hidden_layers), the weights hold "
                              f"{held}; set num_hidden_layers to {held} in config.json if the weights are the smaller "
                              "model, or put the config.json that came with the weights beside them")


def _torch_bin_states(folder: Path):
    """(file, state dict) of a torch.save checkpoint, memory-mapped: nothing is read but what is used."""
    import torch

    for file in _weight_files(folder):
        try:
            yield file, torch.load(file, map_location="cpu", mmap=True, weights_only=True)
        except Exception as err:  # pickle, zip and torch each raise their own types
            raise _torch_load_error(file, err) from None


def _torch_load_error(file: Path, err: Exception) -> CheckpointError:
    # torch's own text advises weights_only=False, which runs whatever the pickle holds: never repeat it unqualified.
    text = str(err)
    if "Weights only load failed" in text:
        code = re.search(r"GLOBAL ([\w.]+)", text)
        # every shard into one file (clone: tied weights share storage, which save_file refuses)
        convert = ("python -c \"import glob, torch, safetensors.torch as st; st.save_file({k: v.contiguous().clone() "
                   f"for f in sorted(glob.glob('{file.parent}/pytorch_model*.bin')) for k, v in torch.load(f, "
                   f"weights_only=False).items()}}, '{file.parent / SAFETENSORS}')\"")
        return CheckpointError(f"{file}: the pickle contains code{f' (it calls {code.group(1)})' if code else ''}, not "
                               "just tensors, and bertspec never runs it; only if this copy is from a source you trust, "
                               f"convert it to safetensors, which holds no code: {convert}")
    return CheckpointError(f"{file}: the weights do not load ({type(err).__name__}: {first_line(err)}); "
                           "re-download or re-save the checkpoint")


def _torch_bin_shapes(folder: Path) -> dict:
    return {_normalised(k): tuple(v.shape) for _, state in _torch_bin_states(folder) for k, v in state.items()}


def _weights(folder: Path):
    """(file, name, tensor) for every tensor, memory-mapped: safetensors through safe_open, torch files through mmap."""
    files = _weight_files(folder)
    if files[0].suffix != ".safetensors":
        yield from ((file, k, v) for file, state in _torch_bin_states(folder) for k, v in state.items())
        return
    from safetensors import SafetensorError, safe_open

    for file in files:
        try:  # safetensors checks what the cheap header check does not: each dtype x shape against its byte range
            with safe_open(str(file), framework="pt") as f:
                yield from ((file, k, f.get_tensor(k)) for k in f.keys())
        except SafetensorError as err:
            raise CheckpointError(f"{file}: not a valid safetensors file ({first_line(err)}); re-download or re-save "
                                  "the checkpoint") from None


def _check_finite(folder: Path) -> None:
    """A NaN or inf in any weight makes every output NaN from that layer on; refuse it by name, before a claim fails."""
    import torch

    for file, name, tensor in _weights(folder):
        # NaN and inf survive a sum, which needs no mask as large as the tensor (10x faster than isfinite on
        # bert-base); only a sum that is not finite (a NaN, an inf, or finite values that overflow) is looked at closer.
        if (tensor.is_floating_point() and not torch.isfinite(tensor.sum(dtype=torch.float32))
                and not torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{file}: {name} holds NaN or inf ({bad} of its {tensor.numel()} values); "
                                  "the weights are damaged (a diverged training run or a corrupted copy): use an intact "
                                  "copy, e.g. an earlier saved checkpoint")


def _model_on_meta_device(facts: CheckpointFacts):
    import torch
    import transformers
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(facts.folder))
        with torch.device("meta"):
            return getattr(transformers, anatomy.of_model_type(facts.model_type).mlm_class)(config)
    except Exception as err:  # transformers raises many types for a config it cannot use, in the config or the model
        raise CheckpointError(f"{facts.folder}: transformers refuses config.json ({type(err).__name__}: "
                              f"{first_line(err)}); correct config.json, or use the one that came with the weights") from None


SPECIALS = ("mask", "pad", "cls", "sep", "unk")


def _check_tokenizer(facts: CheckpointFacts, vocab_size: int) -> None:
    facts.tokenizer = tokenizer = load_tokenizer(facts.folder)
    largest = max(tokenizer.get_vocab().values())
    if largest >= vocab_size:
        raise CheckpointError(f"{facts.folder}: the tokenizer has ids up to {largest} but the embedding table has "
                              f"{vocab_size} rows (vocab_size); the tokenizer belongs to another model")
    specials = {f"{role}_token": token for role in SPECIALS if (token := getattr(tokenizer, f"{role}_token", None))}
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials.values()}
    # A special token the vocabulary lacks is appended as an "added" token: an id inside the embedding table, so
    # nothing fails, but every prediction for it reads a row trained for another token.
    # Tokenizers whose specials sit beside the BPE vocabulary (ModernBERT's, GPT-2's) declare each with its id in
    # tokenizer.json's added_tokens: those were trained as they are. Only one made up at load time is refused.
    known = _base_vocabulary(tokenizer) | _declared_added_tokens(facts.folder)
    lacking = [token for token in specials.values() if token not in known]
    if lacking:
        raise CheckpointError(f"{facts.folder}: the vocabulary has no {lacking[0]} ({_role(specials, lacking[0])}), the "
                              f"tokenizer appends it as an added token with id {ids[lacking[0]]}; restore the vocabulary "
                              "file the model was trained with (it lists every special token)")
    vocab_txt = facts.folder / "vocab.txt"
    if vocab_txt.is_file() and (facts.folder / "tokenizer.json").is_file():
        lines = {token: i for i, token in enumerate(vocab_txt.read_text(encoding="utf-8").split("\n"))}
        for token, i in ids.items():
            if lines.get(token) != i:
                where = f"line {lines[token] + 1} (id {lines[token]})" if token in lines else "no line"
                raise CheckpointError(f"{facts.folder}: {token} has id {i} in tokenizer.json but {where} in vocab.txt; "
                                      "the two tokenizer files disagree: re-save both from the tokenizer the model was "
                                      "trained with (tokenizer.save_pretrained(folder))")
    _check_config_ids(facts, tokenizer)


def _check_config_ids(facts: CheckpointFacts, tokenizer) -> None:
    """config.json's pad_token_id (and cls_, sep_, mask_, bos_, eos_ where it names them) is the tokenizer's id for that role.

    Both name the same special tokens; when they disagree they come from different models, and code that reads the
    config (the embedding's padding_idx is pad_token_id) points at another token's row than the tokenizer writes.
    """
    for role in (*SPECIALS, "bos", "eos"):
        said, token = facts.config.get(f"{role}_token_id"), getattr(tokenizer, f"{role}_token", None)
        if isinstance(said, int) and token is not None and tokenizer.convert_tokens_to_ids(token) != said:
            raise CheckpointError(f"{facts.folder}: config.json says {role}_token_id {said} but the tokenizer's {token} "
                                  f"has id {tokenizer.convert_tokens_to_ids(token)}; the tokenizer belongs to another "
                                  "model: keep the tokenizer files saved with these weights")


def _declared_added_tokens(folder: Path) -> set:
    tokenizer_json = folder / "tokenizer.json"
    if not tokenizer_json.is_file():
        return set()
    added = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("added_tokens")
    return {t.get("content") for t in added if isinstance(t, dict)} if isinstance(added, list) else set()


def _base_vocabulary(tokenizer) -> set:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer: its model's vocabulary, without the added tokens
        return set(backend.get_vocab(with_added_tokens=False))
    # a slow one: BertTokenizer keeps vocab.txt as .vocab; its added vocabulary also lists specials that vocab.txt has
    return set(getattr(tokenizer, "vocab", None) or set(tokenizer.get_vocab()) - set(tokenizer.get_added_vocab()))


def _role(specials: dict, token: str) -> str:
    return next(role for role, t in specials.items() if t == token)


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
