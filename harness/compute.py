"""Where and how a job computes: its device, its CPU threads and its numeric precision.

``train.dtype`` is the storage type of the weights (float32 by default). ``train.precision``
is how the arithmetic runs: ``fp32``, or ``bf16-mixed`` -- matmuls and activations in
bfloat16 under ``torch.autocast`` while the master weights, the optimizer state and the
learned scores stay in float32 (use it with ``dtype: float32``). Evaluation, the
redundancy analysis and the speed measurement run under the same precision, and the
protocol records it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from harness.params import ConfigError, Param

PRECISIONS = ("fp32", "bf16-mixed")
DTYPES = ("float32", "bfloat16", "float16", "float64")

SETTINGS: dict[str, Param] = {
    "dtype": Param("float32", "storage type of the weights", choices=DTYPES),
    "precision": Param("fp32", "fp32, or bf16-mixed: bf16 autocast with fp32 master weights", choices=PRECISIONS),
}


def validate(train: dict[str, Any], field: str) -> None:
    if train.get("precision") == "bf16-mixed" and train.get("dtype") != "float32":
        raise ConfigError(f"{field}.precision: bf16-mixed keeps float32 master weights; it needs dtype: float32, "
                          f"got dtype: {train.get('dtype')}")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX on x86)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def check_precision(precision: str, device: torch.device) -> None:
    """Fail with one clear line where ``device`` cannot run ``precision``."""
    if precision != "bf16-mixed":
        return
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"precision bf16-mixed: {torch.cuda.get_device_name(device)} has no bfloat16 support; use fp32")
    if device.type == "cpu" and not cpu_supports_bf16():
        raise RuntimeError("precision bf16-mixed: this CPU has no native bfloat16 (AVX512-BF16/AMX); use fp32")


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """The arithmetic of ``precision`` on ``device`` for the enclosed forward passes."""
    if precision == "bf16-mixed":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def configure_cuda() -> None:
    """GPU defaults every user expects: TF32 matmuls and cuDNN convolutions."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
