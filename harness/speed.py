"""Physical speed and memory of a model: prefill latency, decode throughput, peak memory.

Measured as optimum-benchmark does: fixed random prompts (batch x length, from a fixed
seed, so the global RNG of the job is untouched), warm-up runs, the median of repeats;
prefill and decode timed apart; a fixed number of new tokens (min = max new tokens,
greedy, KV cache), so a model that would stop early is not "faster".

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from harness.adapters import context_length

# eval-section keys (defaults in harness.config.EVAL_DEFAULTS); speed_repeats 0 = off
# (16 new tokens keep the measurement near 1 s per model for the embedded model on 2 CPU threads.)
SPEED_DEFAULTS: dict[str, int] = {"speed_batch_size": 4, "speed_prompt_length": 128, "speed_new_tokens": 16,
                                  "speed_repeats": 3, "speed_warmup": 1}
MB = 1024 * 1024


@dataclass(frozen=True)
class SpeedSettings:
    batch_size: int = SPEED_DEFAULTS["speed_batch_size"]
    prompt_length: int = SPEED_DEFAULTS["speed_prompt_length"]
    new_tokens: int = SPEED_DEFAULTS["speed_new_tokens"]
    repeats: int = SPEED_DEFAULTS["speed_repeats"]
    warmup: int = SPEED_DEFAULTS["speed_warmup"]

    @classmethod
    def from_eval(cls, settings: dict[str, Any]) -> SpeedSettings:
        merged = {**SPEED_DEFAULTS, **{k: v for k, v in settings.items() if k in SPEED_DEFAULTS}}
        return cls(**{key.removeprefix("speed_"): value for key, value in merged.items()})

    @property
    def enabled(self) -> bool:
        return self.repeats > 0


def check_settings(settings: dict[str, Any], field: str) -> None:
    """Raise ValueError for values that cannot be measured (called when a matrix loads)."""
    for key in SPEED_DEFAULTS:
        minimum = 0 if key in ("speed_repeats", "speed_warmup") else 2 if key == "speed_new_tokens" else 1
        if key in settings and settings[key] < minimum:
            raise ValueError(f"{field}.{key}: must be >= {minimum}, got {settings[key]}")


@dataclass
class SpeedResult:
    prefill_ms: float
    decode_tokens_per_s: float
    peak_memory_mb: float
    weights_mb: float
    params: int
    protocol: dict[str, Any]


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


@torch.inference_mode()
def measure(model: nn.Module, settings: SpeedSettings, device: torch.device) -> SpeedResult:
    """Prefill latency, decode throughput and peak memory of ``model`` on ``device``."""
    from transformers import GenerationConfig

    device = torch.device(device)
    was_training = model.training
    model.eval()
    ids = prompts(model, settings, device)
    attention = torch.ones_like(ids)
    prompt_length = ids.shape[1]
    prefill = prefill_call(model, ids)
    eos = model.config.eos_token_id
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else (eos if isinstance(eos, int) else 0)
    # A fresh generation config: the model's own (beam search, penalties) must not change what is timed.
    generation = GenerationConfig(max_new_tokens=settings.new_tokens, min_new_tokens=settings.new_tokens,
                                  do_sample=False, num_beams=1, use_cache=True, pad_token_id=pad, eos_token_id=eos)

    def generate() -> None:
        out = model.generate(input_ids=ids, attention_mask=attention, generation_config=generation)
        assert out.shape[1] == prompt_length + settings.new_tokens

    for _ in range(settings.warmup):
        prefill()
        generate()
    prefill_s = statistics.median(_synchronized(device, prefill) for _ in range(settings.repeats))
    generate_times: list[float] = []  # the first timed generate also gives the peak memory
    peak_mb, memory_method = _peak_memory(lambda: generate_times.append(_synchronized(device, generate)), model, device)
    generate_times += [_synchronized(device, generate) for _ in range(settings.repeats - 1)]
    decode_s = max(statistics.median(generate_times) - prefill_s, 1e-9)
    model.train(was_training)
    protocol = {**asdict(settings), "prompt_length": prompt_length, "device": str(device),
                "threads": torch.get_num_threads(), "dtype": str(next(model.parameters()).dtype),
                "memory_method": memory_method, "statistic": "median"}
    return SpeedResult(
        prefill_ms=1000 * prefill_s,
        decode_tokens_per_s=settings.batch_size * (settings.new_tokens - 1) / decode_s,
        peak_memory_mb=peak_mb,
        weights_mb=weights_bytes(model) / MB,
        params=sum(p.numel() for p in model.parameters()),
        protocol=protocol,
    )


def speed_metrics(dense: SpeedResult, shrunk: SpeedResult) -> list[dict[str, Any]]:
    """Metric rows (split "speed") for the dense model before fine-tuning and the shrunk
    model after removal, measured in the same job on the same device."""
    rows = [
        ("prefill_ms", shrunk.prefill_ms, False),
        ("decode_tokens_per_s", shrunk.decode_tokens_per_s, True),
        ("peak_memory_mb", shrunk.peak_memory_mb, False),
        ("prefill_speedup", dense.prefill_ms / shrunk.prefill_ms, True),
        ("decode_speedup", shrunk.decode_tokens_per_s / dense.decode_tokens_per_s, True),
        ("memory_ratio", shrunk.peak_memory_mb / dense.peak_memory_mb, False),
        ("dense_prefill_ms", dense.prefill_ms, False),
        ("dense_decode_tokens_per_s", dense.decode_tokens_per_s, True),
        ("dense_peak_memory_mb", dense.peak_memory_mb, False),
        ("dense_params", dense.params, False),  # the shrunk count is the "params" metric (split "model")
    ]
    return [{"name": name, "value": value, "higher_is_better": higher, "split": "speed"} for name, value, higher in rows]
