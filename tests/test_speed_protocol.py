"""The speed protocol (harness/speed.py): paired ratios, interleaving, a model against itself;
and the per-process weight cache its dense reference is loaded from (harness/models.py).

No test asserts a tight time: CI machines are noisy. The bound on a model timed against an
identical copy is loose on purpose; benchmarks/bench_speed_protocol.py measures precision."""

from __future__ import annotations

import copy
import statistics

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness import models as models_module
from harness import speed
from harness.models import cached_models, clear_model_cache, load_model, resolve_model
from harness.speed import SpeedResult, SpeedSettings, measure_pair, speed_metrics


def result(prefill_ms: list[float], decode: list[float]) -> SpeedResult:
    return SpeedResult(prefill_ms=statistics.median(prefill_ms), decode_tokens_per_s=statistics.median(decode),
                       peak_memory_mb=100.0, weights_mb=50.0, params=10, protocol={},
                       prefill_samples_ms=prefill_ms, decode_samples=decode)


def quartiles(values: list[float]) -> tuple[float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q2, q3 - q1


# -- the statistic ------------------------------------------------------------------------------
def test_speedup_is_the_median_of_per_repeat_ratios_not_a_ratio_of_medians():
    # The machine slows down during repeat 2 and 3 for both models (paired): ratio of medians
    # and median of ratios differ, and only the latter removes the drift.
    dense = result([10.0, 30.0, 32.0, 11.0, 12.0], [100.0, 40.0, 38.0, 95.0, 90.0])
    shrunk = result([5.0, 16.0, 15.0, 5.0, 6.5], [210.0, 75.0, 80.0, 190.0, 170.0])
    metrics = {m.name: m for m in speed_metrics(dense, shrunk)}
    prefill_ratios = [d / s for d, s in zip(dense.prefill_samples_ms, shrunk.prefill_samples_ms)]
    decode_ratios = [s / d for d, s in zip(dense.decode_samples, shrunk.decode_samples)]
    assert metrics["prefill_speedup"].value == pytest.approx(statistics.median(prefill_ratios))
    assert metrics["decode_speedup"].value == pytest.approx(statistics.median(decode_ratios))
    assert metrics["prefill_speedup"].value != pytest.approx(dense.prefill_ms / shrunk.prefill_ms)
    assert metrics["prefill_speedup"].spread == pytest.approx(quartiles(prefill_ratios)[1])
    assert metrics["decode_speedup"].spread == pytest.approx(quartiles(decode_ratios)[1])
    assert metrics["prefill_speedup"].split == "speed" and metrics["prefill_speedup"].higher_is_better


def test_one_repeat_has_zero_spread():
    metrics = {m.name: m for m in speed_metrics(result([10.0], [50.0]), result([5.0], [100.0]))}
    assert metrics["prefill_speedup"].value == pytest.approx(2.0) and metrics["prefill_speedup"].spread == 0.0
    assert metrics["decode_speedup"].value == pytest.approx(2.0) and metrics["decode_speedup"].spread == 0.0


def test_settings_come_from_the_eval_section_with_the_declared_defaults():
    defaults = SpeedSettings.from_section({})
    assert defaults.repeats == speed.SETTINGS["speed_repeats"].default >= 3
    assert defaults.warmup == speed.SETTINGS["speed_warmup"].default >= 1
    assert SpeedSettings.from_section({"speed_repeats": 2, "speed_warmup": 0, "other": 1}).repeats == 2
    assert not SpeedSettings.from_section({"speed_repeats": 0}).enabled


# -- the interleaving ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def test_timed_calls_alternate_a_b_then_b_a(tiny, monkeypatch):
    dense, shrunk = tiny, copy.deepcopy(tiny)
    calling: list[str] = []  # the model whose forward ran last
    for name, model in (("A", dense), ("B", shrunk)):
        model.register_forward_pre_hook(lambda module, args, name=name: calling.append(name))
    timed: list[tuple[str, int]] = []

    class Recorder:  # stands in for the timer: records which model each timed call ran
        def __init__(self, device):
            pass

        def __call__(self, fn):
            calling.clear()
            fn()
            assert calling and len(set(calling)) == 1, "one timed call runs one model"
            timed.append((calling[0], len(calling)))
            return 0.01 * len(calling)  # generate (several forwards) takes longer than a prefill

    monkeypatch.setattr(speed, "_Timer", Recorder)
    settings = SpeedSettings(batch_size=1, prompt_length=8, new_tokens=3, repeats=4, warmup=1)
    a, b = measure_pair(dense, shrunk, settings, torch.device("cpu"))
    names = [name for name, _ in timed]
    # per repeat: prefill and generate of one model, then of the other; the order flips each repeat
    assert names == list("AABB" "BBAA" "AABB" "BBAA")
    assert [forwards for _, forwards in timed[:2]] == [1, settings.new_tokens]  # prefill: one forward
    assert len(a.prefill_samples_ms) == len(b.decode_samples) == settings.repeats
    assert a.protocol["statistic"].startswith("median of interleaved repeats")


def test_a_model_timed_against_an_identical_copy_is_about_as_fast(tiny):
    settings = SpeedSettings(batch_size=2, prompt_length=32, new_tokens=6, repeats=9, warmup=2)
    dense, shrunk = measure_pair(tiny, copy.deepcopy(tiny), settings, torch.device("cpu"))
    metrics = {m.name: m for m in speed_metrics(dense, shrunk)}
    for name in ("prefill_speedup", "decode_speedup"):  # loose: CI is noisy
        assert 0.7 <= metrics[name].value <= 1.4, (name, metrics[name].value)
        assert metrics[name].spread >= 0.0
    assert metrics["memory_ratio"].value == pytest.approx(1.0, abs=0.5)


# -- the per-process weight cache ------------------------------------------------------------------
@pytest.fixture
def counted_reads(monkeypatch):
    clear_model_cache()
    reads = []
    original = models_module._read_model

    def counting(identity, location, dtype):
        reads.append(identity["name"])
        return original(identity, location, dtype)

    monkeypatch.setattr(models_module, "_read_model", counting)
    yield reads
    clear_model_cache()


def test_weights_are_read_once_and_every_load_is_a_fresh_copy(tiny_model_dir, tmp_path, counted_reads):
    identity = resolve_model(str(tiny_model_dir), "models[0]", tmp_path)
    first, tokenizer = load_model(identity, torch.device("cpu"))
    second, _ = load_model(identity, torch.device("cpu"))
    assert len(counted_reads) == 1 and len(cached_models()) == 1
    assert first is not second
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), name
    with torch.no_grad():  # what a job does to its model never reaches the cache
        for parameter in first.parameters():
            parameter.zero_()
    tokenizer.pad_token = "x"
    third, tokenizer3 = load_model(identity, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(second.parameters(), third.parameters()))
    assert tokenizer3.pad_token != "x"
    assert third.config.pad_token_id == tokenizer3.pad_token_id


def test_the_copy_keeps_tied_weights(tiny_model_dir, tmp_path, counted_reads):
    identity = resolve_model(str(tiny_model_dir), "models[0]", tmp_path)
    load_model(identity, torch.device("cpu"))
    model, _ = load_model(identity, torch.device("cpu"))
    assert model.lm_head.weight is model.transformer.wte.weight


def test_cache_is_keyed_by_dtype_and_bounded(tiny_model_dir, tmp_path, counted_reads, monkeypatch):
    identity = resolve_model(str(tiny_model_dir), "models[0]", tmp_path)
    load_model(identity, torch.device("cpu"), torch.float32)
    half, _ = load_model(identity, torch.device("cpu"), torch.bfloat16)
    assert half.dtype == torch.bfloat16 and len(counted_reads) == 2
    monkeypatch.setenv(models_module.MODEL_CACHE_ENV, "1")
    load_model(identity, torch.device("cpu"), torch.float32)  # evicts the bf16 entry
    assert len(cached_models()) == 1 and len(counted_reads) == 2
    monkeypatch.setenv(models_module.MODEL_CACHE_ENV, "0")
    load_model(identity, torch.device("cpu"))
    load_model(identity, torch.device("cpu"))
    assert len(counted_reads) == 4  # off: every load reads the folder
