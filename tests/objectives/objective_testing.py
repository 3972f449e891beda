"""Shared helpers for the objective tests: synthetic documents in, preprocessed examples out.

Imported as `objective_testing` (pytest puts this folder on sys.path).
"""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.models import registry as arch_registry
from objectax.objectives import registry
from objectax.objectives import stream


def features(vocab, names=("inputs", "targets"), inputs_eos=True, targets_eos=True):
  eos = {"inputs": inputs_eos, "targets": targets_eos}
  return {name: seqio.Feature(vocab, add_eos=eos[name]) for name in names}


def random_docs(num_tokens, seed=0, *, high=500, min_len=1, max_len=300):
  """Documents of random ids in [3, high), lengths in [min_len, max_len), >= num_tokens total."""
  rng = np.random.default_rng(seed)
  docs, total = [], 0
  while total < num_tokens:
    doc = rng.integers(3, high, size=rng.integers(min_len, max_len)).astype(np.int32)
    docs.append(doc)
    total += len(doc)
  return docs


def docs_dataset(docs):
  return tf.data.Dataset.from_generator(
      lambda: ({"targets": d} for d in docs),
      output_signature={"targets": tf.TensorSpec([None], tf.int32)})


def run(obj, cfg, docs, seed, sequence_length, output_features):
  """All examples of `obj.preprocess` over `docs`, seeded as seqio seeds a task."""
  with seqio.utils.map_seed_manager(seed):
    ds = obj.preprocess(docs_dataset(docs), sequence_length, output_features, cfg)
  return list(ds.as_numpy_iterator())


def raw_chunks(docs, raw):
  """Documents concatenated without EOS, cut into raw-token chunks (the denoisers' input)."""
  ds = stream.concat_and_split(docs_dataset(docs), raw)
  return [ex["targets"] for ex in ds.as_numpy_iterator()]


def task_over_docs(name, obj, cfg, docs, output_features):
  """A real (unregistered) seqio.Task whose one preprocessor is the objective."""
  import functools  # pylint: disable=g-import-not-at-top
  source = seqio.FunctionDataSource(
      lambda split, shuffle_files, seed=None: docs_dataset(docs), splits=["train"])
  return seqio.Task(name, source, output_features=output_features,
                    preprocessors=[functools.partial(obj.preprocess, cfg=cfg)])


def task_pairs(task, lengths, seed):
  """(inputs, targets) lists of every example the task yields for `seed`."""
  ds = task.get_dataset(lengths.feature_lengths(), split="train", shuffle=False, seed=seed)
  return [(ex["inputs"].tolist(), ex["targets"].tolist()) for ex in ds.as_numpy_iterator()]


def converted(converter, examples, lengths):
  """All rows of a seqio feature converter over (inputs, targets) `examples`, unbatched."""
  ds = tf.data.Dataset.from_generator(
      lambda: iter(examples),
      output_signature={"inputs": tf.TensorSpec([None], tf.int32),
                        "targets": tf.TensorSpec([None], tf.int32)})
  return list(converter(ds, lengths.feature_lengths()).as_numpy_iterator())


def seeded_task_pairs(name, obj, cfg, docs, output_features, lengths):
  """The task's (inputs, targets) pairs for seed 5, after asserting that seed 5 repeats
  them exactly and seed 6 gives others."""
  task = task_over_docs(name, obj, cfg, docs, output_features)
  first = task_pairs(task, lengths, 5)
  assert first == task_pairs(task, lengths, 5) and first != task_pairs(task, lengths, 6)
  return first


def pairs(examples):
  """(inputs, targets) of each preprocessed example."""
  return [(ex["inputs"], ex["targets"]) for ex in examples]


def assert_reconstructs(got, raws, merge, shapes=None, **merge_kwargs):
  """Asserts one (inputs, targets) pair per raw chunk (at least one), each of `shapes`
  ((inputs length, targets length)) when given, and merge(inputs, targets) == the chunk."""
  assert len(got) == len(raws) > 0
  for (inputs, targets), raw in zip(got, raws):
    if shapes is not None:
      assert (np.shape(inputs), np.shape(targets)) == ((shapes[0],), (shapes[1],))
    np.testing.assert_array_equal(merge(inputs, targets, **merge_kwargs), raw)


def assert_same_examples(a, b):
  """Asserts two example lists are equal: same count, same inputs and targets, in order."""
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["inputs"], y["inputs"])
    np.testing.assert_array_equal(x["targets"], y["targets"])


def assert_seq2seq_for_decoders_and_encdec(obj):
  """Asserts `obj` emits inputs and targets, supports the encoder-decoder and both decoders,
  and rejects the encoder-only architecture by name."""
  assert obj.features == ("inputs", "targets")
  assert set(obj.architectures) == {"encoder_decoder", "causal_decoder", "prefix_decoder"}
  with pytest.raises(ConfigError, match="does not support architecture 'encoder_only'"):
    arch_registry.check_supports("encoder_only", obj)


def assert_rejects_bad_features(obj, cfg, sequence_length, vocab):
  """Asserts ConfigError, naming the problem, for: no 'inputs' length, a vocabulary without
  extra ids, and inputs and targets in different vocabularies."""
  ds = docs_dataset([])
  with pytest.raises(ConfigError, match="sequence_length"):
    obj.preprocess(ds, {"targets": sequence_length["targets"]}, features(vocab), cfg)
  with pytest.raises(ConfigError, match="extra_ids=0"):
    obj.preprocess(ds, sequence_length,
                   features(seqio.PassThroughVocabulary(1000, eos_id=1)), cfg)
  with pytest.raises(ConfigError, match="same vocabulary"):
    obj.preprocess(ds, sequence_length,
                   {"inputs": seqio.Feature(seqio.ByteVocabulary(extra_ids=50)),
                    "targets": seqio.Feature(vocab)}, cfg)


def assert_exact_lengths(examples, lengths, eos_id):
  """Asserts every example's inputs and targets are int32 of exactly lengths.inputs and
  lengths.targets tokens, each ending in `eos_id`."""
  for ex in examples:
    assert ex["inputs"].shape == (lengths.inputs,) and ex["targets"].shape == (lengths.targets,)
    assert ex["inputs"].dtype == np.int32 and ex["targets"].dtype == np.int32
    assert ex["inputs"][-1] == eos_id and ex["targets"][-1] == eos_id
