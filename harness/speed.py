"""Physical speed and memory of a model: prefill latency, decode throughput, peak memory.

Measured as optimum-benchmark does: fixed random prompts (batch x length, from a fixed
seed, so the global RNG of the job is untouched), warm-up runs, the median of repeats;
prefill and decode timed apart; a fixed number of new tokens (min = max new tokens,
greedy, KV cache), so a model that would stop early is not "faster". A job times its
shrunk model against the dense reference *interleaved* (``measure_pair``: A B, B A, ...
in one process, same threads), so both see the same machine; the spread stored with
each number is the interquartile range over the repeats.

- prefill: one forward pass over the prompts with the KV cache on and logits for the last
  position only -- what ``generate`` runs before its first decode step.
- decode: (generate time - prefill time) for ``new_tokens`` tokens; the first new token
  comes from the prefill, so decode tokens/s = batch * (new_tokens - 1) / decode time.
- peak memory, CUDA: ``torch.cuda.max_memory_allocated`` over one generate call (weights,
  KV cache, activations). CPU has no allocator counter, so: parameter + buffer bytes plus
  the growth of the process's peak resident set (Linux VmHWM, reset before the call, minus
  VmRSS before it) during one generate call, after freed heap is returned to the OS.
  Where VmHWM cannot be reset the activation part is missing: ``memory_method`` says so.
"""

from __future__ import annotations

import ctypes
import gc
import inspect
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from harness.adapters import context_length
from harness.compute import autocast
from harness.params import Param, defaults_of
from harness.types import SPLIT_SPEED, Metric

# eval-section keys (harness.sections); speed_repeats 0 = off. 16 new tokens keep the
# measurement near 1 s per model for the embedded model on 2 CPU threads.
SETTINGS: dict[str, Param] = {
    "speed_batch_size": Param(4, "prompts per timed call", minimum=1),
    "speed_prompt_length": Param(128, "prompt tokens (capped by the context)", minimum=1),
    "speed_new_tokens": Param(16, "tokens generated per timed decode", minimum=2),
    "speed_repeats": Param(3, "timed repeats of each model (interleaved)", minimum=1, off=0, off_doc="no speed measurement"),
    "speed_warmup": Param(1, "untimed warm-up calls of each model", minimum=0),
}
SWITCH = "speed_repeats"
MB = 1024 * 1024


@dataclass(frozen=True)
class SpeedSettings:
    batch_size: int = 4
    prompt_length: int = 128
    new_tokens: int = 16
    repeats: int = 3
    warmup: int = 1

    @classmethod
    def from_section(cls, settings: dict[str, Any]) -> SpeedSettings:
        merged = {**defaults_of(SETTINGS), **{k: v for k, v in settings.items() if k in SETTINGS}}
        return cls(**{key.removeprefix("speed_"): value for key, value in merged.items()})

    @property
    def enabled(self) -> bool:
        return self.repeats > 0


def active(evaluation: dict[str, Any]) -> bool:
    return bool(evaluation.get(SWITCH))


@dataclass
class SpeedResult:
    prefill_ms: float
    decode_tokens_per_s: float
    peak_memory_mb: float
    weights_mb: float
    params: int
    protocol: dict[str, Any]
    prefill_iqr_ms: float = 0.0
    decode_iqr: float = 0.0
    prefill_samples_ms: list[float] = field(default_factory=list)
    decode_samples: list[float] = field(default_factory=list)


def weights_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}  # tied weights once
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _synchronized(device: torch.device, fn: Callable[[], Any]) -> float:
    """Seconds for ``fn()``, waiting for queued GPU work on both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


# -- CPU peak memory ----------------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _return_freed_heap() -> None:
    """Give freed heap back to the OS, so that reused pages cannot hide the call's peak."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peak_memory(fn: Callable[[], Any], model: nn.Module, device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        return torch.cuda.max_memory_allocated(device) / MB, "cuda max_memory_allocated"
    weights = weights_bytes(model) / MB
    _return_freed_heap()
    if not _reset_peak_rss():
        return weights, "weights only (peak RSS not measurable here)"
    before = _status_kb("VmRSS") or 0
    fn()
    growth = max(0, (_status_kb("VmHWM") or before) - before) / 1024
    return weights + growth, "weights + peak RSS growth (Linux VmHWM)"


# -- measurement ------------------------------------------------------------------------------
def prompts(model: nn.Module, settings: SpeedSettings, device: torch.device) -> torch.Tensor:
    """Fixed random prompt ids (batch, length); the length is capped so that the prompt
    plus the new tokens fit the model's position embeddings."""
    context = context_length(model.config)
    length = settings.prompt_length
    if context:
        length = max(1, min(length, context - settings.new_tokens))
    generator = torch.Generator().manual_seed(0)  # not the global RNG: the job's stays untouched
    return torch.randint(0, model.config.vocab_size, (settings.batch_size, length), generator=generator).to(device)


def prefill_call(model: nn.Module, ids: torch.Tensor) -> Callable[[], Any]:
    """One prefill: the prompt forward pass generate runs first (KV cache, last logits only)."""
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    attention = torch.ones_like(ids)
    return lambda: model(input_ids=ids, attention_mask=attention, use_cache=True, **extra)


@torch.inference_mode()
def measure_prefill_ms(model: nn.Module, settings: SpeedSettings, device: torch.device) -> float:
    """Median prefill latency alone, in ms (benchmarks)."""
    device = torch.device(device)
    model.eval()
    prefill = prefill_call(model, prompts(model, settings, device))
    for _ in range(settings.warmup):
        prefill()
    return 1000 * statistics.median(_synchronized(device, prefill) for _ in range(settings.repeats))


class _Timer:
    """Seconds for a call: CUDA events on a GPU (no host clock in the measured span),
    perf_counter around a synchronized call elsewhere."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, fn: Callable[[], Any]) -> float:
        if self.device.type != "cuda":
            return _synchronized(self.device, fn)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0


def _quartiles(values: list[float]) -> tuple[float, float]:
    """(median, interquartile range)."""
    if len(values) < 2:
        return values[0], 0.0
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q2, q3 - q1


class _Timed:
    """One model's calls under the speed protocol: prefill and greedy generate of fixed length."""

    def __init__(self, model: nn.Module, settings: SpeedSettings, device: torch.device):
        from transformers import GenerationConfig

        self.model = model
        model.eval()
        self.ids = prompts(model, settings, device)
        self.attention = torch.ones_like(self.ids)
        self.prefill = prefill_call(model, self.ids)
        eos = model.config.eos_token_id
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else (eos if isinstance(eos, int) else 0)
        # A fresh generation config: the model's own (beam search, penalties) must not change what is timed.
        self.generation = GenerationConfig(max_new_tokens=settings.new_tokens, min_new_tokens=settings.new_tokens,
                                           do_sample=False, num_beams=1, use_cache=True, pad_token_id=pad,
                                           eos_token_id=eos)
        self.expected = self.ids.shape[1] + settings.new_tokens
        self.prefill_s: list[float] = []
        self.generate_s: list[float] = []

    def generate(self) -> None:
        out = self.model.generate(input_ids=self.ids, attention_mask=self.attention, generation_config=self.generation)
        assert out.shape[1] == self.expected


@torch.inference_mode()
def measure_pair(dense: nn.Module, shrunk: nn.Module, settings: SpeedSettings, device: torch.device,
                 precision: str = "fp32") -> tuple[SpeedResult, SpeedResult]:
    """Prefill latency, decode throughput and peak memory of ``dense`` and ``shrunk``, timed
    interleaved on the same device and threads: after warm-up, each repeat times both
    models back to back, in the order A B, then B A, then A B ... so that a drift of the
    machine's speed (another process, clocks) falls on both alike. Medians, with the
    interquartile range as their spread."""
    device = torch.device(device)
    timer = _Timer(device)
    pair = [_Timed(dense, settings, device), _Timed(shrunk, settings, device)]
    peaks = []
    with autocast(precision, device):
        for timed in pair:  # peak memory of each alone, first (it resets the process's peak RSS)
            for _ in range(settings.warmup):
                timed.prefill()
                timed.generate()
            peaks.append(_peak_memory(timed.generate, timed.model, device))
        for repeat in range(settings.repeats):
            for timed in (pair if repeat % 2 == 0 else pair[::-1]):
                timed.prefill_s.append(timer(timed.prefill))
                timed.generate_s.append(timer(timed.generate))
    results = []
    for timed, (peak_mb, memory_method) in zip(pair, peaks):
        prefill_s, prefill_iqr = _quartiles(timed.prefill_s)
        decode = [max(g - p, 1e-9) for g, p in zip(timed.generate_s, timed.prefill_s)]
        tokens = settings.batch_size * (settings.new_tokens - 1)
        rates = [tokens / d for d in decode]
        rate, rate_iqr = _quartiles(rates)
        protocol = {**asdict(settings), "prompt_length": timed.ids.shape[1], "device": str(device),
                    "threads": torch.get_num_threads(), "dtype": str(next(timed.model.parameters()).dtype),
                    "precision": precision, "memory_method": memory_method,
                    "statistic": "median of interleaved repeats (A B, B A, ...), spread = interquartile range",
                    "timer": "cuda events" if device.type == "cuda" else "perf_counter"}
        results.append(SpeedResult(prefill_ms=1000 * prefill_s, decode_tokens_per_s=rate, peak_memory_mb=peak_mb,
                                   weights_mb=weights_bytes(timed.model) / MB,
                                   params=sum(p.numel() for p in timed.model.parameters()), protocol=protocol,
                                   prefill_iqr_ms=1000 * prefill_iqr, decode_iqr=rate_iqr,
                                   prefill_samples_ms=[1000 * t for t in timed.prefill_s], decode_samples=rates))
    return results[0], results[1]


def speed_metrics(dense: SpeedResult, shrunk: SpeedResult) -> list[Metric]:
    """Metrics (split "speed") of the dense reference and the shrunk model, timed as a pair.
    Each speed-up is the median of the per-repeat ratios (the pairs were timed back to
    back), its spread their interquartile range."""
    prefill_ratio, prefill_spread = _quartiles([d / s for d, s in zip(dense.prefill_samples_ms, shrunk.prefill_samples_ms)])
    decode_ratio, decode_spread = _quartiles([s / d for d, s in zip(dense.decode_samples, shrunk.decode_samples)])
    rows = [
        ("prefill_ms", shrunk.prefill_ms, False, shrunk.prefill_iqr_ms),
        ("decode_tokens_per_s", shrunk.decode_tokens_per_s, True, shrunk.decode_iqr),
        ("peak_memory_mb", shrunk.peak_memory_mb, False, None),
        ("prefill_speedup", prefill_ratio, True, prefill_spread),
        ("decode_speedup", decode_ratio, True, decode_spread),
        ("memory_ratio", shrunk.peak_memory_mb / dense.peak_memory_mb, False, None),
        ("dense_prefill_ms", dense.prefill_ms, False, dense.prefill_iqr_ms),
        ("dense_decode_tokens_per_s", dense.decode_tokens_per_s, True, dense.decode_iqr),
        ("dense_peak_memory_mb", dense.peak_memory_mb, False, None),
        ("dense_params", dense.params, False, None),  # the shrunk count is the "params" metric (split "model")
    ]
    return [Metric(name, float(value), higher, SPLIT_SPEED, spread) for name, value, higher, spread in rows]
