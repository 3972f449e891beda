"""Source that, run first in a subprocess, makes importing TensorFlow or seqio fail.

GPU benchmark hosts carry neither; the tests run the TF-free paths (the train step,
`objectax bench model`) behind this guard to prove they never import them.
"""

BLOCK = r'''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("tensorflow", "seqio", "tensorflow_datasets"):
      raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
'''

CHECK = r'''
assert not any(k.split(".")[0] in ("tensorflow", "seqio") for k in sys.modules)
'''
