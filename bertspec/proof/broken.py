"""Checkpoint folders broken in one way each, for the bad-input claims (the BROKEN rows of bertspec.proof.bad_input).

:func:`copy` copies a bundled model and changes it; the other functions are its edits, each breaking one thing.
"""

import json
import os
import shutil
import struct
from pathlib import Path

import torch

from bertspec.models.source import DEFAULT_MODEL_DIR


def copy(base: Path, name: str, without=(), config=None, source: Path = DEFAULT_MODEL_DIR, edit=None) -> Path:
    folder = base / name
    shutil.copytree(source, folder)
    for file in without:
        (folder / file).unlink()
    if config is not None:
        (folder / "config.json").write_text(config, encoding="utf-8")
    if edit is not None:
        edit(folder)
    return folder


def row(name: str, words: str, **changes) -> tuple:
    """A BROKEN row: the bundled model copied as NAME with copy's CHANGES (without, config, edit), and the words."""
    return (lambda base: copy(base, name, **changes)), words


# edits for copy, each breaking one thing of the copied folder
def write(name: str, text: str):
    return lambda folder: (folder / name).write_text(text, encoding="utf-8")


def vocab(change):  # vocab.txt's lines through change
    def edit(folder):
        lines = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        write("vocab.txt", "\n".join(change(lines)))(folder)
    return edit


def header(header):  # a model.safetensors of this JSON header and no data
    data = json.dumps(header).encode()
    return lambda folder: (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(data)) + data)


def entry(name: str, **changes):  # one tensor's header entry changed, the file's bytes kept
    def edit(folder):
        raw = (folder / "model.safetensors").read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        tensors = json.loads(raw[8:8 + n])
        tensors[name].update(changes)
        data = json.dumps(tensors, separators=(",", ":")).encode().ljust(n, b" ")  # same length: byte ranges stay valid
        (folder / "model.safetensors").write_bytes(raw[:8] + data + raw[8 + n:])
    return edit


def nan_in(name: str):
    def edit(folder):
        from safetensors.torch import load_file, save_file

        tensors = load_file(folder / "model.safetensors")
        tensors[name][0, 0] = float("nan")
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return edit


class Code(str):  # pickled as a call of os.mkdir(this path): a load that ran the pickle would create the folder
    def __reduce__(self):
        return os.mkdir, (str(self),)


def config_with(source: Path = DEFAULT_MODEL_DIR, **changes) -> str:
    return json.dumps({**json.loads((source / "config.json").read_text(encoding="utf-8")), **changes})
