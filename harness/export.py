"""Saved models: each job's shrunk model on disk, loadable with plain ``transformers``.

A job's model is saved after evaluation into ``<artifacts root>/<spec hash>/``:
safetensors weights, config.json and the tokenizer. Uniform FFN widths fit the stock
config (``from_pretrained(folder)``); per-layer widths (global selection) add the small
config/model classes of ``harness/export_template`` and an ``auto_map``, so
``from_pretrained(folder, trust_remote_code=True)`` rebuilds the same model.
``harness export JOB_ID --out DIR`` copies that folder.

The artifacts root: ``--artifacts`` > $HARNESS_ARTIFACTS > ``<db file stem>.artifacts``
next to a SQLite database > ``harness.artifacts`` in the current directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.adapters import architecture_of

TEMPLATE_DIR = Path(__file__).parent / "export_template"
CODE_FILES = {"configuration_pruned.py": "BASE_CONFIG", "modeling_pruned.py": "BASE_MODEL"}
AUTO_MAP = {"AutoConfig": "configuration_pruned.PrunedConfig",
            "AutoModelForCausalLM": "modeling_pruned.PrunedForCausalLM"}


class ExportError(RuntimeError):
    """A job whose model cannot be exported; the message is one line."""


def artifacts_root(db_path: Path | None, override: str | None = None) -> Path:
    """Where saved models go (see the module docstring for the order)."""
    chosen = override or os.environ.get("HARNESS_ARTIFACTS")
    if chosen:
        return Path(chosen).expanduser()
    if db_path is not None:
        return db_path.with_name(f"{db_path.stem}.artifacts")
    return Path("harness.artifacts")


def artifact_dir(root: str | Path, spec_hash: str) -> Path:
    return Path(root) / spec_hash


# -- save / load -----------------------------------------------------------------------------
def save_model(model: nn.Module, tokenizer: Any, folder: str | Path) -> Path:
    """Write ``model`` and ``tokenizer`` to ``folder`` atomically: into a temporary sibling
    folder first, renamed into place when complete (a crash leaves no half-written model)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        custom = bool(getattr(model.config, "ffn_widths", None))
        # Stock classes save the hub's original key names (GPT-NeoX's lm_head -> embed_out)
        # and rename them back when loading; transformers applies no such renaming to
        # custom classes, so their weights keep the in-memory module names.
        model.save_pretrained(staging, save_original_format=not custom)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if custom:
            _add_custom_code(staging, model)
        if folder.exists():  # a rerun replaces the old model: move it aside, then swap
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old / folder.name)
            os.replace(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _add_custom_code(folder: Path, model: nn.Module) -> None:
    """Per-layer widths: ship the config/model classes and point config.json at them."""
    stock = {"BASE_CONFIG": type(model.config).__name__, "BASE_MODEL": type(model).__name__}
    for name, constant in CODE_FILES.items():
        text = (TEMPLATE_DIR / name).read_text(encoding="utf-8")
        text, found = re.subn(rf'^{constant} = ".*"', f'{constant} = "{stock[constant]}"', text, flags=re.M)
        assert found == 1, f"{name}: no {constant} line to fill in"
        (folder / name).write_text(text, encoding="utf-8")
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    spec = asdict(architecture_of(model))
    config["ffn_layout"] = {key: spec[key] for key in ("blocks", "mlp", "inputs", "output")}
    config["auto_map"] = AUTO_MAP
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def has_custom_code(folder: str | Path) -> bool:
    return all((Path(folder) / name).exists() for name in CODE_FILES)


def load_saved(folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
    """(model, tokenizer) from a folder written by ``save_model``. The custom code it may
    hold is this harness's own template, so trusting it is safe."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=has_custom_code(folder))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.to(device).eval(), tokenizer


# -- harness export --------------------------------------------------------------------------
def export_job(store: Any, job_id: str, out: str | Path) -> Path:
    """Copy the saved model of the job whose spec hash starts with ``job_id`` to ``out``."""
    job = store.resolve_job(job_id)
    if job.status != "done":
        raise ExportError(f"job {job.spec_hash[:12]} is {job.status}, not done: nothing to export")
    saved = json.loads(job.protocol_json or "{}").get("artifacts")
    if not saved or not (Path(saved) / "config.json").exists():
        where = f" (expected at {saved})" if saved else ""
        raise ExportError(f"job {job.spec_hash[:12]} has no saved model{where}; rerun it with model saving on "
                          f"(`harness run --force --only {job.spec_hash[:12]} ...`)")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"--out: {out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(saved, out, dirs_exist_ok=True)
    return out
