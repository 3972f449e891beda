"""Interoperability: Hugging Face transformers export/import and lm-evaluation-harness.

Everything here needs the optional `hf` extra (`pip install -e '.[hf]'`: transformers,
torch, safetensors, lm-eval); training never imports this package.
"""
