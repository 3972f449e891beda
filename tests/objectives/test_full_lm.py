"""Full LM objective, the shared stream helpers and the objective registry contract."""
import dataclasses
import functools

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.models.registry import ConfigError
from objectax.models import registry as arch_registry
from objectax.objectives import registry
from objectax.objectives import stream
from objectax.objectives.full_lm import FullLMConfig

tf.config.set_visible_devices([], "GPU")

EOS = 1
VOCAB = seqio.PassThroughVocabulary(size=1000, eos_id=EOS)


def _features(add_eos=True, vocab=VOCAB):
  return {"targets": seqio.Feature(vocab, add_eos=add_eos)}


def _random_docs(num_docs=200, max_len=60, seed=0):
  rng = np.random.default_rng(seed)
  # Lengths from 0: empty documents must not break the stream.
  return [rng.integers(3, 500, size=rng.integers(0, max_len)).astype(np.int32)
          for _ in range(num_docs)]


def _dataset(docs):
  return tf.data.Dataset.from_generator(
      lambda: ({"targets": d, "text": "ignored"} for d in docs),
      output_signature={"targets": tf.TensorSpec([None], tf.int32),
                        "text": tf.TensorSpec([], tf.string)})


def _run_full_lm(docs, length, add_eos=True):
  obj = registry.get("full_lm")
  ds = obj.preprocess(_dataset(docs), {"targets": length}, _features(add_eos), FullLMConfig())
  assert ds.element_spec == {"targets": tf.TensorSpec([length], tf.int32)}
  return [ex["targets"] for ex in ds.as_numpy_iterator()]


@pytest.mark.parametrize("length", [1, 7, 16, 61])
def test_full_lm_chunks_are_exact_and_concatenate_to_the_stream(length):
  docs = _random_docs()
  chunks = _run_full_lm(docs, length)
  stream_ids = np.concatenate([np.append(d, EOS) for d in docs])
  assert len(chunks) == len(stream_ids) // length
  assert all(c.shape == (length,) for c in chunks)
  np.testing.assert_array_equal(np.concatenate(chunks), stream_ids[:len(chunks) * length])


def test_full_lm_without_eos_concatenates_raw_documents():
  docs = _random_docs(seed=1)
  chunks = _run_full_lm(docs, 16, add_eos=False)
  stream_ids = np.concatenate(docs)
  assert len(chunks) == len(stream_ids) // 16
  np.testing.assert_array_equal(np.concatenate(chunks), stream_ids[:len(chunks) * 16])
  assert EOS not in stream_ids and EOS not in np.concatenate(chunks)


def test_full_lm_worked_example_from_docstring():
  docs = [np.array(d, np.int32) for d in ([37, 12, 408], [99, 5], [250, 251, 252, 253], [7])]
  assert [c.tolist() for c in _run_full_lm(docs, 8)] == [[37, 12, 408, 1, 99, 5, 1, 250]]


def test_chunk_token_stream_long_and_empty_documents():
  docs = [np.arange(10, 35, dtype=np.int32), np.zeros([0], np.int32),
          np.arange(40, 43, dtype=np.int32)]
  ds = tf.data.Dataset.from_generator(lambda: iter(docs),
                                      output_signature=tf.TensorSpec([None], tf.int32))
  chunks = list(stream.chunk_token_stream(ds, 4).as_numpy_iterator())
  np.testing.assert_array_equal(np.stack(chunks).ravel(),
                                np.concatenate(docs)[:28])  # 28 = 7 chunks of 4; 0 padded.


def test_full_lm_in_a_seqio_task():
  docs = _random_docs(num_docs=50, seed=2)
  source = seqio.FunctionDataSource(
      lambda split, shuffle_files, seed=None: _dataset(docs), splits=["train"])
  obj = registry.get("full_lm")
  task = seqio.Task("objectax_test_full_lm", source, output_features=_features(),
                    preprocessors=[functools.partial(obj.preprocess, cfg=FullLMConfig())])
  lengths = obj.lengths(FullLMConfig(), 32)
  ds = task.get_dataset(lengths.feature_lengths(), split="train", shuffle=False)
  chunks = [ex["targets"] for ex in ds.as_numpy_iterator()]
  stream_ids = np.concatenate([np.append(d, EOS) for d in docs])
  np.testing.assert_array_equal(np.concatenate(chunks), stream_ids[:len(chunks) * 32])


def test_full_lm_config_errors():
  obj = registry.get("full_lm")
  with pytest.raises(ConfigError, match="sequence_length"):
    obj.preprocess(_dataset([]), None, _features(), FullLMConfig())
  with pytest.raises(ConfigError, match="no eos_id"):
    obj.preprocess(_dataset([]), {"targets": 8}, _features(vocab=seqio.PassThroughVocabulary(9)),
                   FullLMConfig())
  with pytest.raises(ConfigError):
    obj.lengths(FullLMConfig(), 0)


def test_registry_contract():
  assert {"full_lm", "span_corruption"} <= set(registry.OBJECTIVES.names())
  obj = registry.get("full_lm")
  assert obj.features == ("targets",) and obj.config_cls is FullLMConfig
  lengths = obj.lengths(FullLMConfig(), 626)
  assert lengths == registry.TaskLengths(raw=626, inputs=0, targets=626)
  assert lengths.feature_lengths() == {"targets": 626}
  sc = registry.get("span_corruption")
  sc_lengths = sc.lengths(sc.config_cls(), 626)
  assert sc_lengths == registry.TaskLengths(raw=568, inputs=512, targets=114)
  assert sc_lengths.feature_lengths() == {"inputs": 512, "targets": 114}
  assert sc_lengths.budget == 626
  with pytest.raises(ConfigError, match="valid choices: .*full_lm"):
    registry.get("ful_lm")
  with pytest.raises(dataclasses.FrozenInstanceError):
    lengths.raw = 1  # pytype: disable=not-writable


def test_check_supports():
  obj = registry.get("full_lm")
  arch_registry.check_supports("causal_decoder", obj)
  arch_registry.check_supports("prefix_decoder", obj)
  with pytest.raises(ConfigError) as err:
    arch_registry.check_supports("encoder_decoder", obj)
  assert str(err.value) == ("objective 'full_lm' does not support architecture "
                            "'encoder_decoder'; it supports: causal_decoder, prefix_decoder")
  with pytest.raises(ConfigError, match="unknown architecture 'gpt'"):
    arch_registry.check_supports("gpt", obj)
  arch_registry.check_supports("encoder_decoder", registry.get("span_corruption"))
  with pytest.raises(ConfigError, match="encoder_only"):
    arch_registry.check_supports("encoder_only", registry.get("span_corruption"))
  # The same from plain values: the kind of example, the model-side objective's name.
  assert obj.example_kind == "lm" and registry.get("span_corruption").example_kind == "seq2seq"
  assert registry.get("bert_mlm").example_kind == "aligned"
  assert arch_registry.supports("prefix_decoder", "lm")
  assert not arch_registry.supports("encoder_decoder", "lm")
  assert arch_registry.supporting("seq2seq", "spactor") == ["encoder_decoder"]
  assert arch_registry.supporting("lm", "mtp") == ["causal_decoder"]
  with pytest.raises(ConfigError) as err:
    arch_registry.check_supports("prefix_decoder", "lm", "mtp", objective_name="mtp")
  assert str(err.value) == ("objective 'mtp' does not support architecture 'prefix_decoder'; "
                            "it supports: causal_decoder")


def test_configs_are_gin_configurable():
  sc = registry.get("span_corruption")
  with gin.unlock_config():
    gin.parse_config("SpanCorruptionConfig.mean_noise_span_length = 8.0")
  try:
    cfg = sc.config_cls()
    assert (cfg.noise_density, cfg.mean_noise_span_length) == (0.15, 8.0)
    assert sc.lengths(cfg, 626).targets < 114  # Longer spans, fewer sentinels.
  finally:
    gin.clear_config()
  assert sc.config_cls().mean_noise_span_length == 3.0
  FullLMConfig()
