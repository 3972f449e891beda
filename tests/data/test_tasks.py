"""Registered seqio tasks, end to end: real embedded corpus, real trained SentencePiece vocabulary.

Every check compares the task's output with a token stream rebuilt here, independently of
the objective code: the train documents read straight from TFDS, tokenized one at a time
with `vocabulary.encode_tf`, concatenated (span corruption: no per-document EOS, as T5;
full LM: EOS after every document) and cut into chunks. A dropped, duplicated or reordered
token anywhere in the first examples makes the comparison fail.
"""
from __future__ import annotations

import json
import time
import unicodedata
from typing import Iterator, Sequence

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from objectax.data import pydocs
from objectax.data import sources
from objectax.data import tasks
from objectax.data import vocab as vocab_lib
from objectax.objectives import registry as objective_registry
from objectax.objectives.full_lm import FullLMConfig
from objectax.objectives.span_corruption import SpanCorruptionConfig

pytestmark = pytest.mark.e2e

EOS = 1
EXTRA_IDS = 100
# A small budget keeps the file fast; at 128 span corruption (r=.15, mu=3) gives raw 114,
# inputs 104, targets 24 (17 noise tokens in 6 spans per chunk).
BUDGET = 128
NUM_SPAN_EXAMPLES = 1000  # enough examples to check the rates to about a percent
NUM_LM_EXAMPLES = 300
SEED = 17


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Iterator[str]:
  """A fresh TFDS dir holding the embedded corpus, set as $TFDS_DATA_DIR for this module."""
  path = str(tmp_path_factory.mktemp("tfds"))
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("TFDS_DATA_DIR", path)
    assert pydocs.ensure_built(path) == path
    # Sources resolve their dir at registration: no stale gin binding may redirect them.
    assert sources.tfds_data_dir() == path
    yield path


@pytest.fixture(scope="module")
def vocabulary(data_dir) -> seqio.Vocabulary:
  """The default vocabulary: 8000 unigram pieces trained on the train split + 100 sentinels."""
  return vocab_lib.get_vocabulary(vocab_lib.VocabConfig(), data_dir=data_dir)


@pytest.fixture(scope="module")
def train_texts(data_dir) -> list[str]:
  """The train documents in the order the task's source reads them (TFDS files, unshuffled)."""
  builder = tfds.builder(pydocs.TFDS_NAME, data_dir=data_dir)
  ds = builder.as_dataset(split="train", shuffle_files=False)
  return [ex["text"].decode("utf-8") for ex in tfds.as_numpy(ds)]


def _encode(vocabulary: seqio.Vocabulary, text: str) -> list[int]:
  """Token ids of one document, by the TF op that seqio's `tokenize` runs.

  Not `vocabulary.encode`: the Python SentencePiece library breaks ties between
  equal-score segmentations differently from the TF op ("-rwxrwxrwx" in 16 of the 412
  train documents), so it is not the tokenization the task sees.
  """
  return vocabulary.encode_tf(tf.constant(text)).numpy().tolist()


def _token_stream(texts: Sequence[str], vocabulary: seqio.Vocabulary, eos: bool,
                  min_tokens: int) -> np.ndarray:
  """The documents tokenized one by one and concatenated (EOS after each when `eos`)."""
  parts, total = [], 0
  for text in texts:
    ids = _encode(vocabulary, text) + ([EOS] if eos else [])
    parts.append(ids)
    total += len(ids)
    if total >= min_tokens:
      break
  assert total >= min_tokens, f"corpus too small: {total} < {min_tokens} tokens"
  return np.concatenate([np.asarray(p, np.int32) for p in parts])


def _examples(task: seqio.Task, lengths, n: int, split: str = "train", **kwargs) -> list:
  """The first `n` examples of `split`, unshuffled, under a fixed seed (as numpy dicts)."""
  ds = task.get_dataset(lengths.feature_lengths(), split=split, shuffle=False, seed=SEED,
                        **kwargs)
  return list(ds.take(n).as_numpy_iterator())


def _split_targets(targets: np.ndarray, sentinels: list[int]) -> dict[int, list[int]]:
  """{sentinel: the noise tokens after it} from targets = [s0, noise..., s1, noise..., ...]."""
  groups: dict[int, list[int]] = {}
  current = None
  for tok in targets.tolist():
    if tok in sentinels:
      assert tok not in groups, f"sentinel {tok} repeated in targets {targets}"
      current = groups[tok] = []
    else:
      assert current is not None, f"targets do not start with a sentinel: {targets}"
      current.append(tok)
  return groups


def _reconstruct(inputs: np.ndarray, targets: np.ndarray, vocab_size: int):
  """(raw tokens, noise mask, spans) undone from one span-corrupted example (EOS stripped)."""
  is_sentinel = lambda t: t >= vocab_size - EXTRA_IDS
  in_sentinels = [t for t in inputs.tolist() if is_sentinel(t)]
  out_sentinels = [t for t in targets.tolist() if is_sentinel(t)]
  # docs/objectives.md#sentinel-ids: <extra_id_0> = vocab_size - 1, then counting down, same
  # order on both sides.
  expected = list(range(vocab_size - 1, vocab_size - 1 - len(in_sentinels), -1))
  assert in_sentinels == expected, in_sentinels
  assert out_sentinels == expected, out_sentinels
  groups = _split_targets(targets, in_sentinels)
  raw, noise = [], []
  for tok in inputs.tolist():
    if is_sentinel(tok):
      span = groups[tok]
      assert span, f"empty noise span for sentinel {tok}"
      raw += span
      noise += [True] * len(span)
    else:
      raw.append(tok)
      noise.append(False)
  return np.asarray(raw, np.int32), np.asarray(noise), len(in_sentinels)


def _normalized(text: str) -> str:
  """What SentencePiece's nmt_nfkc normalizer keeps: NFKC, whitespace runs as one space."""
  return " ".join(unicodedata.normalize("NFKC", text).split())


# --------------------------------------------------------------------- span corruption

def test_span_corruption_acceptance(data_dir, vocabulary, train_texts):
  """End to end: r and mu as configured, and inputs + targets give back the raw ids."""
  cfg = SpanCorruptionConfig(noise_density=0.15, mean_noise_span_length=3.0)
  obj = objective_registry.get("span_corruption")
  lengths = obj.lengths(cfg, BUDGET)
  task = tasks.get_task("pydocs", "span_corruption", cfg, vocabulary)
  start = time.time()
  examples = _examples(task, lengths, NUM_SPAN_EXAMPLES)
  assert len(examples) == NUM_SPAN_EXAMPLES
  vocab_size = vocabulary.vocab_size
  assert vocab_size == vocab_lib.VocabConfig().vocab_size + EXTRA_IDS

  stream = _token_stream(train_texts, vocabulary, eos=False,
                         min_tokens=NUM_SPAN_EXAMPLES * lengths.raw)
  noise_tokens = spans = 0
  masks = set()
  for i, ex in enumerate(examples):
    # Exact lengths, EOS last on both features and nowhere else.
    assert ex["inputs"].shape == (lengths.inputs,) and ex["targets"].shape == (lengths.targets,)
    assert ex["inputs"][-1] == EOS and ex["targets"][-1] == EOS
    assert EOS not in ex["inputs"][:-1] and EOS not in ex["targets"][:-1]
    raw, noise, num_spans = _reconstruct(ex["inputs"][:-1], ex["targets"][:-1], vocab_size)
    want = stream[i * lengths.raw:(i + 1) * lengths.raw]
    np.testing.assert_array_equal(raw, want, err_msg=f"example {i} does not reconstruct")
    noise_tokens += int(noise.sum())
    spans += num_spans
    masks.add(noise.tobytes())

  density = noise_tokens / (NUM_SPAN_EXAMPLES * lengths.raw)
  mean_span = noise_tokens / spans
  print(f"\nspan corruption over {NUM_SPAN_EXAMPLES} examples of {lengths}: noise density "
        f"{density:.4f} (want 0.15 +- 0.01), mean noise span {mean_span:.3f} (want 3 +- 10%), "
        f"{len(masks)} distinct masks; {time.time() - start:.1f} s")
  assert abs(density - 0.15) <= 0.01
  assert abs(mean_span - 3.0) <= 0.3
  # Every example draws its own mask (seqio map seeds), not one fixed pattern.
  assert len(masks) > 0.9 * NUM_SPAN_EXAMPLES


def test_span_corruption_lengths_and_sentinels(vocabulary):
  """Exact lengths at another budget too; sentinel ids decode to <extra_id_k>, top down."""
  cfg = SpanCorruptionConfig()
  lengths = objective_registry.get("span_corruption").lengths(cfg, 96)
  task = tasks.get_task("pydocs", "span_corruption", cfg, vocabulary)
  examples = _examples(task, lengths, 50)
  assert len(examples) == 50
  top = vocabulary.vocab_size - 1
  for ex in examples:
    assert ex["inputs"].shape == (lengths.inputs,) and ex["targets"].shape == (lengths.targets,)
    assert ex["inputs"][-1] == EOS and ex["targets"][-1] == EOS
    _, _, num_spans = _reconstruct(ex["inputs"][:-1], ex["targets"][:-1], vocabulary.vocab_size)
    assert num_spans >= 2
    assert ex["targets"][0] == top  # the chunk starts with non-noise: targets open with s0
    assert ex["inputs"][-2] == top - num_spans + 1  # and it ends in noise (T5's mask)
  for k in range(3):
    assert vocabulary.decode([top - k]) == f"<extra_id_{k}>"
  assert vocabulary.encode("<extra_id_0>") == [top]


# ---------------------------------------------------------------------------- full LM

def test_full_lm_on_the_embedded_corpus(vocabulary, train_texts):
  """Exact length, EOS exactly at document ends, decoded text is the corpus's prose."""
  cfg = FullLMConfig()
  lengths = objective_registry.get("full_lm").lengths(cfg, BUDGET)
  assert lengths.feature_lengths() == {"targets": BUDGET}
  task = tasks.get_task("pydocs", "full_lm", cfg, vocabulary)
  examples = _examples(task, lengths, NUM_LM_EXAMPLES)
  assert len(examples) == NUM_LM_EXAMPLES
  for ex in examples:
    assert set(ex) == {"targets"} and ex["targets"].shape == (BUDGET,)

  got = np.concatenate([ex["targets"] for ex in examples])
  want = _token_stream(train_texts, vocabulary, eos=True, min_tokens=got.size)[:got.size]
  np.testing.assert_array_equal(got, want)
  # EOS marks document ends: the text between two EOS is a whole document of the corpus.
  eos_at = np.flatnonzero(got == EOS)
  assert len(eos_at) >= 3
  normalized = [_normalized(t) for t in train_texts]
  for doc_index, (a, b) in enumerate(zip(eos_at[:-1], eos_at[1:]), start=1):
    assert vocabulary.decode(got[a + 1:b].tolist()) == normalized[doc_index]
  assert vocabulary.decode(got[:eos_at[0]].tolist()) == normalized[0]

  # English prose: mostly letters, and the commonest English words are common here.
  text = vocabulary.decode(got[:eos_at[-1]].tolist())
  words = text.lower().split()
  common = {"the", "of", "a", "to", "and", "is", "in", "be", "if", "for"}
  assert sum(w in common for w in words) / len(words) > 0.15
  assert sum(c.isalpha() for c in text) / len(text) > 0.6


# ---------------------------------------------------------------------- names, registry

def test_task_names_and_reregistration(vocabulary):
  assert tasks.task_name("pydocs", "span_corruption") == "pydocs_span_corruption"
  obj = objective_registry.get("span_corruption")
  old_cfg = SpanCorruptionConfig(noise_density=0.15, mean_noise_span_length=3.0)
  old = tasks.get_task("pydocs", "span_corruption", old_cfg, vocabulary)
  assert old.name == "pydocs_span_corruption"
  assert seqio.get_mixture_or_task("pydocs_span_corruption") is old

  new_cfg = SpanCorruptionConfig(noise_density=0.3, mean_noise_span_length=2.0)
  new = tasks.get_task("pydocs", "span_corruption", new_cfg, vocabulary)
  assert new is not old and seqio.get_mixture_or_task("pydocs_span_corruption") is new
  assert list(seqio.TaskRegistry.names()).count("pydocs_span_corruption") == 1
  # The registered task really runs the new settings: r = .3 of the raw chunk is noise.
  new_lengths = obj.lengths(new_cfg, BUDGET)
  assert new_lengths != obj.lengths(old_cfg, BUDGET)
  examples = _examples(seqio.get_mixture_or_task("pydocs_span_corruption"), new_lengths, 20)
  noise = sum(
      int(_reconstruct(ex["inputs"][:-1], ex["targets"][:-1], vocabulary.vocab_size)[1].sum())
      for ex in examples)
  assert noise == 20 * round(0.3 * new_lengths.raw)

  lm = tasks.get_task("pydocs", "full_lm", FullLMConfig(), vocabulary)
  assert lm.name == "pydocs_full_lm" and set(lm.output_features) == {"targets"}
  assert set(new.output_features) == {"inputs", "targets"}
  with pytest.raises(TypeError, match="SpanCorruptionConfig"):
    tasks.get_task("pydocs", "span_corruption", FullLMConfig(), vocabulary)


# ------------------------------------------------------------------------ local files

LOCAL_TRAIN_TXT = [
    "The heron waited at the edge of the pond until the water was still again.",
    "Every lighthouse keeper writes the weather into a book before sunrise.",
    "A copper kettle sang on the stove while the bread was cooling.",
]
LOCAL_TRAIN_JSONL = [
    "Seven small boats returned to the harbour after the storm had passed.",
    "The library opens at nine and closes when the last reader leaves.",
]
LOCAL_VALIDATION = [
    "Orchards on the hill turned gold in the first week of October.",
    "The old clock in the station hall runs four minutes fast.",
]


def _local_decoded_docs(task, lengths, split, vocabulary) -> tuple[list[int], list[str]]:
  """(all target ids of `split`, the text of each whole document among them)."""
  examples = _examples(task, lengths, 1000, split=split)
  assert examples and all(ex["targets"].shape == (lengths.targets,) for ex in examples)
  stream = np.concatenate([ex["targets"] for ex in examples]).tolist()
  return stream, [vocabulary.decode(part) for part in _split_on_eos(stream)]


def _split_on_eos(ids: list[int]) -> list[list[int]]:
  """[5, 6, 1, 7, 1, 8] -> [[5, 6], [7]]."""
  parts, current = [], []
  for tok in ids:
    if tok == EOS:
      parts.append(current)
      current = []
    else:
      current.append(tok)
  return parts  # the trailing partial document (no EOS yet) is left out


def test_local_corpus_through_get_task(tmp_path, vocabulary):
  (tmp_path / "train_a.txt").write_text("\n".join(LOCAL_TRAIN_TXT[:2]) + "\n\n")
  (tmp_path / "train_b.jsonl").write_text(
      "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(LOCAL_TRAIN_JSONL)))
  (tmp_path / "train_c.txt").write_text(LOCAL_TRAIN_TXT[2] + "\n")
  (tmp_path / "valid.txt").write_text("\n".join(LOCAL_VALIDATION) + "\n")
  # Files in sorted order, one document per non-empty line / JSON record.
  train_docs = LOCAL_TRAIN_TXT[:2] + LOCAL_TRAIN_JSONL + LOCAL_TRAIN_TXT[2:]
  lengths = objective_registry.get("full_lm").lengths(FullLMConfig(), 8)
  gin.clear_config()
  try:
    gin.bind_parameter("LocalTextConfig.train_glob", str(tmp_path / "train_*"))
    gin.bind_parameter("LocalTextConfig.validation_glob", str(tmp_path / "valid.txt"))
    task = tasks.get_task("local", "full_lm", FullLMConfig(), vocabulary)
    assert task.name == "local_full_lm"
    stream, decoded = _local_decoded_docs(task, lengths, "train", vocabulary)
    want = [t for doc in train_docs for t in _encode(vocabulary, doc) + [EOS]]
    assert len(stream) == len(want) // 8 * 8  # whole chunks only, remainder dropped
    assert stream == want[:len(stream)]
    assert decoded == train_docs[:len(decoded)] and len(decoded) >= len(train_docs) - 1
    _, decoded_valid = _local_decoded_docs(task, lengths, "validation", vocabulary)
    assert decoded_valid and decoded_valid == LOCAL_VALIDATION[:len(decoded_valid)]
  finally:
    gin.clear_config()
