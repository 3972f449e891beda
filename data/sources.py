"""The corpus registry: where raw text comes from, as seqio data sources.

A corpus is a name, the feature its examples carry the text under, a factory for its
`seqio.DataSource` and a `prepare` step. `data/tasks.py` (the only caller of
`seqio.TaskRegistry.add`) rekeys `text_key` to "targets" and tokenizes. Every corpus offers
the splits "train" and "validation" (mapped onto whatever the TFDS dataset calls them).

Nothing here downloads: TFDS sources are lazy and read-only, and `prepare` either builds
the embedded corpus (no network needed) or checks that the TFDS data is already on disk,
failing in one line that says how to get it. TFDS data live under `TfdsConfig.data_dir`,
else $TFDS_DATA_DIR, else ~/tensorflow_datasets; everything is resolved when a source is
made, so gin bindings parsed after import apply.
"""
from __future__ import annotations

import dataclasses
import json
import random
from typing import Callable, Mapping, Optional

from etils import epath
import gin
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from objectax.data import pydocs
from objectax.data.registry import ConfigError, Registry

SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A named text source.

  Attributes:
    name: registry name, used in task and experiment names.
    description: one line for `--help`-style listings.
    text_key: the feature that holds the document text.
    make_source: builds the `seqio.DataSource` (splits "train" and "validation").
    prepare: makes the data available (builds the embedded corpus) or checks that it is,
      raising `ConfigError` in one line that says how to prepare it.
  """
  name: str
  description: str
  text_key: str
  make_source: Callable[[], seqio.DataSource]
  prepare: Callable[[], None]


# Bound in gin as TfdsConfig.data_dir; it lives with the embedded corpus, the lowest layer,
# so that the corpus, the vocabulary cached beside it and every TFDS source agree.
TfdsConfig = pydocs.TfdsConfig


def tfds_data_dir() -> str:
  """The TFDS data dir in effect now (gin binding, environment, TFDS default)."""
  return pydocs.resolve_data_dir()


# ----------------------------------------------------------------------------- TFDS

def _tfds_corpus(
    name: str, tfds_name: str, text_key: str, splits: Mapping[str, str], description: str
) -> Corpus:
  """A corpus read from prepared TFDS files (never downloaded here)."""

  def make_source() -> seqio.DataSource:
    # read_only: a missing dataset fails instead of starting a download.
    return seqio.TfdsDataSource(
        tfds_name=tfds_name, tfds_data_dir=tfds_data_dir(), splits=dict(splits),
        read_only=True)

  def prepare() -> None:
    data_dir = tfds_data_dir()
    builder = tfds.builder(tfds_name, data_dir=data_dir)  # from code: no I/O, no network
    if not (epath.Path(builder.data_path) / "dataset_info.json").exists():
      raise ConfigError(
          f"corpus {name!r} needs the TFDS dataset {tfds_name} prepared under {data_dir} "
          f"(not found at {builder.data_path}); prepare it where there is network with "
          f"`tfds build {tfds_name} --data_dir={data_dir}` and copy it here, or point "
          "TfdsConfig.data_dir / $TFDS_DATA_DIR at an existing copy")

  return Corpus(name, description, text_key, make_source, prepare)


def _make_pydocs_source() -> seqio.DataSource:
  return seqio.TfdsDataSource(
      tfds_name=pydocs.TFDS_NAME, tfds_data_dir=tfds_data_dir(),
      splits={s: s for s in SPLITS}, read_only=True)


def _prepare_pydocs() -> None:
  pydocs.ensure_built(tfds_data_dir())


# ---------------------------------------------------------------------------- local

@gin.configurable
@dataclasses.dataclass(frozen=True)
class LocalTextConfig:
  """Local (or gs://) text files.

  Attributes:
    train_glob: files of the train split. `.jsonl`: one JSON object per line, the text
      under `text_key`; any other file: one document per non-empty line.
    validation_glob: files of the validation split; "" holds out the documents whose
      sha1 mod 20 == 0 (about 5%) from `train_glob`, the rule the embedded corpus uses.
    text_key: the JSON key holding the text in `.jsonl` files.
  """
  train_glob: str = ""
  validation_glob: str = ""
  text_key: str = "text"


def _glob(binding: str, pattern: str) -> list[str]:
  if not pattern:
    raise ConfigError(
        f"corpus 'local' needs LocalTextConfig.{binding}, e.g. "
        f"--gin.LocalTextConfig.{binding}=\"'/data/*.txt'\"")
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise ConfigError(f"LocalTextConfig.{binding}={pattern!r} matches no files")
  return files


def _split_files(cfg: LocalTextConfig, split: str) -> tuple[list[str], Optional[bool]]:
  """The files of `split`, and which hash side to keep (None: keep every document)."""
  if split not in SPLITS:
    raise ConfigError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
  if cfg.validation_glob:
    binding = "train_glob" if split == "train" else "validation_glob"
    return _glob(binding, getattr(cfg, binding)), None
  return _glob("train_glob", cfg.train_glob), split == "validation"


def _check_jsonl(path: str, text_key: str) -> None:
  """Fails in one line when the first record of a .jsonl file lacks `text_key`."""
  with tf.io.gfile.GFile(path) as f:
    for line in f:
      if line.strip():
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise ConfigError(f"{path}: first line is not JSON ({e})") from None
        if not isinstance(record, dict) or text_key not in record:
          raise ConfigError(
              f"{path}: no key {text_key!r} in the first record; set LocalTextConfig.text_key")
        return


def _local_dataset(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
  """The documents of `split` as {"text": string}, read lazily with tf.data ops.

  Built from TextLineDataset rather than from_generator so that the iterator position
  can be checkpointed with the training state (a generator's cannot).
  """
  cfg = LocalTextConfig()  # read now, so gin bindings parsed after import apply
  files, keep_validation = _split_files(cfg, split)
  if shuffle_files:
    random.Random(seed).shuffle(files)
  text_key = cfg.text_key

  def parse(line: tf.Tensor, is_jsonl: tf.Tensor) -> tf.Tensor:
    def _py(line_t, is_jsonl_t):
      text = line_t.numpy().decode("utf-8")
      return json.loads(text)[text_key] if bool(is_jsonl_t.numpy()) else text
    return tf.ensure_shape(tf.py_function(_py, [line, is_jsonl], tf.string), [])

  def held_out(text: tf.Tensor) -> tf.Tensor:
    def _py(text_t):
      return pydocs.is_validation(text_t.numpy().decode("utf-8"))
    return tf.ensure_shape(tf.py_function(_py, [text], tf.bool), [])

  is_jsonl = [f.endswith(".jsonl") for f in files]
  ds = tf.data.Dataset.from_tensor_slices((files, is_jsonl))
  ds = ds.flat_map(
      lambda f, j: tf.data.TextLineDataset(f).map(lambda line: (line, j)))
  ds = ds.filter(lambda line, j: tf.strings.length(tf.strings.strip(line)) > 0)
  ds = ds.map(parse)
  if keep_validation is not None:
    ds = ds.filter(lambda text: tf.equal(held_out(text), keep_validation))
  ds = ds.map(lambda text: {"text": text})
  # The py_functions are pure (same line in, same text out), so the iterator may be
  # checkpointed without their "state"; the default policy would refuse to save it.
  options = tf.data.Options()
  options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
  return ds.with_options(options)


def _make_local_source() -> seqio.DataSource:
  return seqio.FunctionDataSource(dataset_fn=_local_dataset, splits=SPLITS)


def _prepare_local() -> None:
  cfg = LocalTextConfig()
  for split in SPLITS:
    files, _ = _split_files(cfg, split)
    for path in files:
      if path.endswith(".jsonl"):
        _check_jsonl(path, cfg.text_key)


# ------------------------------------------------------------------------- registry

CORPORA = Registry[Corpus]("corpus")
CORPORA.add("pydocs", Corpus(
    "pydocs",
    "Python's own documentation (pydoc topics + stdlib docstrings, ~2 MB); built offline",
    "text", _make_pydocs_source, _prepare_pydocs))
# c4/en 3.1.0 is the current version in TFDS 4.9.10 (also lists 2.2.0-2.3.1).
CORPORA.add("c4", _tfds_corpus(
    "c4", "c4/en:3.1.0", "text", {"train": "train", "validation": "validation"},
    "Colossal Clean Crawled Corpus, English (T5's pretraining data); TFDS c4/en:3.1.0"))
# Wikipedia has only a train split in TFDS: the first 1% of it is held out.
CORPORA.add("wikipedia", _tfds_corpus(
    "wikipedia", "wikipedia/20230601.en:1.0.0", "text",
    {"train": "train[1%:]", "validation": "train[:1%]"},
    "English Wikipedia, 2023-06-01 dump; TFDS wikipedia/20230601.en:1.0.0"))
CORPORA.add("lm1b", _tfds_corpus(
    "lm1b", "lm1b:1.1.0", "text", {"train": "train", "validation": "test"},
    "One Billion Word benchmark (shuffled sentences); TFDS lm1b:1.1.0"))
CORPORA.add("local", Corpus(
    "local", "local text files: LocalTextConfig.train_glob (.txt lines or .jsonl records)",
    "text", _make_local_source, _prepare_local))


def get_corpus(name: str) -> Corpus:
  """The corpus registered as `name`; a typo fails in one line listing the choices."""
  return CORPORA.get(name)
