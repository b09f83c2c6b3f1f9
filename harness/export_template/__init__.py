"""Code copied into saved models whose FFN layers have different widths.

A stock transformers config holds one FFN width; a model pruned with global selection
has one per layer. ``harness.export`` copies these two files next to the weights, names
the stock classes in them, and adds an ``auto_map`` to config.json, so that
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` rebuilds it.
"""
