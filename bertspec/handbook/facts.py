"""What the front page says a run verified: the model (folder, size, a hash of its weights), the versions, the commit.

Read from the files and the environment at the moment the page is written, so
a handbook always names what its claims actually ran on.
"""

import hashlib
import importlib.metadata
import json
import subprocess
from pathlib import Path

from bertspec.models import anatomy


def identity(settings) -> dict[str, str]:
    """The front page's table: what this run verified, each fact under its bilingual name."""
    folders = [settings.source(family).folder for family in settings.families or (None,)]
    if settings.families:
        where = "bundled family models (fixtures/family/): " + ", ".join(settings.families)
    else:
        where = "bundled (fixtures/default-model)" if settings.model_path is None else str(folders[0])
        also = [family for family in settings.families_of(across=True) if family != "bert"]
        if also:  # the default run: chapters P7, P8 and the claims marked across_families run on every architecture
            where += "; chapters P7, P8 and the claims marked across_families also on fixtures/family/: " + ", ".join(also)
    return {
        "model / 模型": where,
        "size / 规模": "; ".join(shape(read_json(folder / "config.json")) for folder in folders),
        "weights / 权重": ", ".join(f"sha256 {weights_hash(folder)}" for folder in folders),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "attention / 注意力实现": ", ".join(settings.attn_implementations),
        "device / 设备": settings.device,
        "bertspec": f"{version('bertspec')}{git_commit()}",
    }


def families(settings) -> list[str]:
    """The families this run covered: --family's, every bundled one in the default run (the claims marked
    across_families run on each), or the one of --bert-model's checkpoint."""
    marked = settings.families_of(across=True)
    if marked:
        return list(marked)
    model_type = read_json(settings.source().folder / "config.json").get("model_type")
    a = anatomy.of_model_type(model_type)
    return [a.family if a else "bert"]


def shape(config: dict) -> str:
    """A config.json in one line; DistilBERT names its sizes n_layers, dim and n_heads."""
    def get(name, distilbert_name):
        return config.get(name, config.get(distilbert_name))

    return (f"{get('num_hidden_layers', 'n_layers')} layers × hidden {get('hidden_size', 'dim')} × "
            f"{get('num_attention_heads', 'n_heads')} heads, vocabulary {config.get('vocab_size')}, "
            f"{config.get('max_position_embeddings')} positions, {config.get('model_type')}")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def weights_hash(folder: Path) -> str:
    """The first 12 hex digits of one sha256 over every weights file, read in 1 MiB blocks (a checkpoint can be GBs)."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    for file in files:
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12] if files else "—"


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    """The commit of a source checkout, as " (git 1a2b3c4, modified)"; nothing for an installed package."""
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    if commit.returncode != 0:
        return ""
    return f" (git {commit.stdout.strip()}{', modified' if dirty.stdout.strip() else ''})"
