"""Config of a pruned model with per-layer FFN widths (written by `harness export`).

The stock config named by BASE_CONFIG, plus two entries config.json already holds:
``ffn_widths`` (the FFN width of each layer) and ``ffn_layout`` (where the FFN
projections live in the stock model).
"""

import transformers

BASE_CONFIG = "PreTrainedConfig"  # the stock config class; harness export fills it in


class PrunedConfig(getattr(transformers, BASE_CONFIG)):
    pass
