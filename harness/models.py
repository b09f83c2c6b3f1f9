"""Model sources: registered aliases (the embedded default), local paths, hub ids.

A matrix's model entry resolves to an identity dict (part of the job hash) at
validation time, without loading weights; ``load_model`` turns it into a model and
tokenizer when a job runs.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from harness.params import ConfigError
from harness.registry import MODELS

EMBEDDED_DIR = Path(__file__).parent / "embedded"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def _weights_digest(folder: Path) -> str:
    """sha256 over the folder's weight and config files (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.suffix in _WEIGHT_SUFFIXES or path.name == "config.json":
            digest.update(path.name.encode())
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


class ModelSource:
    """A model folder shipped with the project, registered under an alias."""

    folder: Path

    def identity(self, name: str) -> dict[str, Any]:
        return {"name": name, "source": "embedded", "revision": _weights_digest(self.folder)}

    def location(self) -> str:
        return str(self.folder)


@MODELS.register("tiny-wiki-gpt2")
class TinyWikiGPT2(ModelSource):
    """GPT-2 architecture, 4 layers, d 256, FFN 1024, 8 K byte-level BPE; pretrained by this project on the Wikipedia excerpt in gensim (CPU-sized default)."""

    folder = EMBEDDED_DIR / "tiny-wiki-gpt2"


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.sep in name and Path(name).exists()


def resolve_model(entry: Any, field: str, base_dir: Path) -> dict[str, Any]:
    """Identity dict for a matrix model entry: an alias, a local folder or a hub id."""
    if isinstance(entry, dict):
        unknown = set(entry) - {"name", "revision"}
        if unknown:
            raise ConfigError(f"{field}: unknown key '{sorted(unknown)[0]}'; allowed: name, revision")
        name, revision = entry.get("name"), entry.get("revision")
    else:
        name, revision = entry, None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{field}: expected a model alias, local path or hub id (string), got {name!r}")
    if name in MODELS:
        return MODELS.get(name)().identity(name)
    local = Path(name).expanduser()
    local = local if local.is_absolute() else base_dir / local
    if _looks_like_path(name) or local.is_dir():
        if not local.is_dir():
            raise ConfigError(f"{field}: local model path does not exist: {name}")
        if not (local / "config.json").exists():
            raise ConfigError(f"{field}: {name} has no config.json (not a saved transformers model)")
        return {"name": name, "source": "local", "path": str(local.resolve()), "revision": _weights_digest(local)}
    close = difflib.get_close_matches(name, MODELS.names(), n=1, cutoff=0.75)
    if close and "/" not in name:
        raise ConfigError(f"{field}: unknown model alias '{name}'; did you mean '{close[0]}'? (aliases: {', '.join(MODELS.names())})")
    return {"name": name, "source": "hub", "revision": revision or "main"}


def model_location(identity: dict[str, Any]) -> str:
    if identity["source"] == "embedded":
        return MODELS.get(identity["name"])().location()
    return identity.get("path", identity["name"])


def load_model(identity: dict[str, Any], device: torch.device, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for a resolved model identity; hub failures get one clear line."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.export import has_custom_code

    location = model_location(identity)
    revision = identity.get("revision") if identity["source"] == "hub" else None
    # A local folder exported by this harness with per-layer FFN widths carries the
    # harness's own model code; hub code is never trusted implicitly.
    trust = identity["source"] == "local" and has_custom_code(location)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(location, revision=revision, dtype=dtype, trust_remote_code=trust)
    except OSError as error:
        if identity["source"] != "hub":
            raise
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        reason = "the hub is unreachable (HF_HUB_OFFLINE=1)" if offline else str(error).splitlines()[0]
        raise RuntimeError(f"model '{identity['name']}' could not be loaded from the Hugging Face hub: {reason}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer
