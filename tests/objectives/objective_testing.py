"""Shared helpers for the objective tests: synthetic documents in, preprocessed examples out.

Imported as `objective_testing` (pytest puts this folder on sys.path).
"""
import numpy as np
import seqio
import tensorflow as tf

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
