"""Interoperability: Hugging Face transformers export/import and lm-evaluation-harness.

Everything here needs the optional `hf` extra (`pip install -e '.[hf]'`: transformers,
torch, safetensors, lm-eval); training never imports this package.
"""

import sys


def load_triton_before_tensorflow() -> None:
  """CUDA builds of torch bring triton. triton and TensorFlow each bundle LLVM, and loading
  triton after TensorFlow crashes the process (a segmentation fault), while the other order
  works. Commands that load torch beside TensorFlow call this before TensorFlow loads; it
  does nothing where triton is absent (CPU builds of torch) or TensorFlow is already in."""
  if "tensorflow" in sys.modules or "triton" in sys.modules:
    return
  try:
    import triton  # pylint: disable=g-import-not-at-top,unused-import
  except Exception:  # pylint: disable=broad-except
    pass  # absent or broken: torch then runs without it, as on CPU builds
