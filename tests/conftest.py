"""Shared fixtures: a tiny GPT-2 built offline, matrices in temporary folders."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(2)

# Where the harness keeps state outside a test's own folders: the working directory's
# harness.db / harness.artifacts (what these point at by default), and the user's cache.
USER_STATE_ENV = ("HARNESS_DB", "HARNESS_ARTIFACTS", "HARNESS_CACHE")


def _isolate(patch: pytest.MonkeyPatch, cache: Path) -> None:
    for name in USER_STATE_ENV:
        patch.delenv(name, raising=False)
    patch.setenv("HARNESS_CACHE", str(cache))


@pytest.fixture(scope="session", autouse=True)
def _no_user_state_session(tmp_path_factory):
    """Session and module fixtures (results databases built once) run without the user's
    HARNESS_* settings too: nothing they write lands in the user's folders."""
    with pytest.MonkeyPatch.context() as patch:
        _isolate(patch, tmp_path_factory.mktemp("harness-cache-session"))
        yield


@pytest.fixture(autouse=True)
def _no_user_state(monkeypatch, tmp_path_factory):
    """Every test: no HARNESS_DB / HARNESS_ARTIFACTS from the user's shell (a test names
    its database and folders), and HARNESS_CACHE in a temporary folder of its own, never
    ~/.cache/prune-harness. Subprocesses inherit the same environment."""
    _isolate(monkeypatch, tmp_path_factory.mktemp("harness-cache"))


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE trained on a few hundred KB of the embedded corpus."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from tasks._data import read_jsonl

    texts = [row["text"] for row in read_jsonl(REPO / "tasks" / "data" / "wiki" / "train.jsonl.gz")[:20]]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<|endoftext|>")


def build_tiny_gpt2(folder: Path, n_layer: int = 2, n_inner: int = 64, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=n_layer, n_head=2,
                        n_inner=n_inner, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


def sqlite_rows(db: Path, query: str) -> list[tuple]:
    """Rows of a SQL query on a SQLite results file, as tuples (tests read results directly)."""
    from sqlalchemy import create_engine, text

    with create_engine(f"sqlite:///{db}").connect() as connection:
        return [tuple(r) for r in connection.execute(text(query))]


def write_matrix(folder: Path, matrix: dict, name: str = "matrix.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(matrix, sort_keys=False))
    return path


@pytest.fixture
def tiny_matrix(tiny_model_dir) -> dict:
    """A matrix that runs in seconds: tiny model, a few steps, a short evaluation."""
    return {
        "name": "tiny",
        "models": [str(tiny_model_dir)],
        "tasks": [{"name": "wiki-embedded", "max_train_examples": 16, "max_eval_tokens": 600}],
        "methods": ["random", "magnitude"],
        "sparsities": [0.5],
        "seeds": [0],
        "train": {"steps": 10, "batch_size": 4, "max_length": 64},
        "eval": {"batch_size": 4},
        "pretrained_baseline": False,  # tests of the pretrained row turn it on
    }
