"""The objective contract, checked for every registered objective at once.

Each objective's own test file checks its statistics; this one checks what the rest of
the codebase relies on: plain int32 tensors (seqio's converters and padded_batch refuse
ragged element specs), exactly the declared features, lengths within the declared bounds
(exactly equal where `exact`), and the budget respected.
"""
import numpy as np
import pytest
import seqio
import tensorflow as tf

import objective_testing as ot
from objectax.objectives import registry

BUDGET = 96
# Objectives over documents (the prompted objective reads prompt/answer pairs:
# tests/data/test_prompted.py).
NAMES = [n for n in registry.OBJECTIVES.names()
         if registry.get(n).mixture is None and registry.get(n).corpus_kind == "text"]


def _docs():
  """Synthetic documents with a sentence end ('.' = byte 46 -> id 49) every 7 tokens."""
  docs = ot.random_docs(6000, seed=3, high=200, min_len=5, max_len=200)
  for d in docs:
    d[6::7] = 49
  return docs


@pytest.mark.parametrize("name", NAMES)
def test_objective_honours_its_contract(name):
  obj = registry.get(name)
  cfg = obj.config_cls()
  lengths = obj.lengths(cfg, BUDGET)
  vocab = seqio.ByteVocabulary(extra_ids=100)
  features = ot.features(vocab, obj.features)
  with seqio.utils.map_seed_manager(0):
    ds = obj.preprocess(ot.docs_dataset(_docs()), lengths.feature_lengths(), features, cfg)
  assert set(ds.element_spec) == set(obj.features)
  for spec in ds.element_spec.values():
    assert type(spec) is tf.TensorSpec and spec.dtype == tf.int32 and spec.shape.rank == 1
  examples = list(ds.take(200).as_numpy_iterator())
  assert len(examples) >= 20
  bounds = lengths.feature_lengths()
  for ex in examples:
    sizes = {k: len(v) for k, v in ex.items()}
    for k in obj.features:
      assert sizes[k] <= bounds[k], (sizes, bounds)
      assert np.all(ex[k] >= 0) and np.all(ex[k] < vocab.vocab_size)
    seen = sizes["targets"] if lengths.aligned else sum(sizes.values())
    assert seen <= lengths.budget <= BUDGET
    if lengths.exact:
      assert seen == lengths.budget
      if not lengths.concat:
        assert sizes == bounds


@pytest.mark.e2e
@pytest.mark.slow
def test_any_objective_module_may_be_imported_first():
  """ELECTRA's config extends BERT MLM's: importing bert_mlm (or mtp) before anything else
  must still register every objective (the registry imports the modules when first read),
  in the registry's fixed order."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ("from objectax.objectives import mtp, bert_mlm\n"
          "from objectax.objectives import registry\n"
          "assert registry.get('electra').config_cls.__mro__[1] is bert_mlm.BertMLMConfig\n"
          "print(' '.join(registry.OBJECTIVES.names()))\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  # The listing order is the registry's own, not the order of the imports (a user's
  # objective another test registered in this process is not ours).
  ours = [n for n in registry.OBJECTIVES.names()
          if registry.get(n).config_cls.__module__.startswith("objectax.")]
  assert out.stdout.split() == ours
  assert registry.OBJECTIVES.names()[0] == "full_lm"
