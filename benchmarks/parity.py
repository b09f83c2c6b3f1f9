"""Reference parity of every method, printed: the harness's training against the oracle of
the authors' code (tests/reference_oracle.py), in float64 on identical batches, on a tiny
GPT-2 (Conv1D FFN) and a tiny Llama (GLU FFN).

    python benchmarks/parity.py

One line per method with the largest absolute difference over both architectures (score
gradients of every step, penalties, masks, final scores and FFN weights), then
``parity: max |Δ| = <number> over <k> methods``. Exit status 0 when it is <= 1e-6.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from transformers.utils import logging  # noqa: E402

from tests.test_parity import CASES, TOLERANCE, compare  # noqa: E402


def main() -> int:
    logging.set_verbosity_error()
    torch.set_num_threads(1)
    started, worst_overall = time.perf_counter(), 0.0
    for method in CASES:
        per_arch = {arch: compare(arch, method) for arch in ("gpt2", "llama")}
        worst = max(max(d.values()) for d in per_arch.values())
        worst_overall = max(worst_overall, worst)
        detail = "  ".join(f"{arch}: grad {d['score_grad']:.1e} penalty {d['penalty']:.1e} mask {d['mask']:.0f} "
                           f"score {d['score']:.1e} weight {d['weight']:.1e}" for arch, d in per_arch.items())
        print(f"{method:<25} max |Δ| = {worst:.2e}   {detail}")
    print(f"({time.perf_counter() - started:.1f} s)")
    print(f"parity: max |Δ| = {worst_overall:.2e} over {len(CASES)} methods")
    return 0 if worst_overall <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
